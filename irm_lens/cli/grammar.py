"""The command line's one grammar: each concept has one flag, spelled once here, and every help
shows its default. ``tests/test_cli_grammar.py`` holds every verb to it.

- the host: ``--host`` (a verb that works on a run takes the run's host); ``info``, ``plan``,
  ``profile`` and ``predict`` also accept it as their first argument, undocumented, as before;
- where results go: ``--out DIR``, always optional, its default in the help;
- prompts: ``--prompts`` takes a set name (``paper``, ``heldout``) or a text file, one prompt per
  line;
- how many to show or keep: ``--top N``; how many data rows to use: ``--max-rows N``;
- figures as HTML alone (no browser needed): ``--no-png``.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from irm_lens.cli.types import at_least
from irm_lens.errors import IrmLensError

HOST_HELP = (
    "host model: omit for the embedded SmolLM2-135M-Instruct, 'tiny-random-llama', a Hugging "
    "Face id (e.g. meta-llama/Llama-2-7b-chat-hf) or a local model directory"
)
PROMPT_SETS = ("paper", "heldout")
"""Named prompt sets: the original's seven prompts; the emotion's held-out test questions."""
MAX_PROMPT_FILE = 1 << 20  # bytes: a prompt file is a short list of lines


def add_host(parser: argparse.ArgumentParser, *, first_argument: bool = False) -> None:
    """``--host`` (and, for verbs that took it so before, the host as first argument)."""
    parser.add_argument("--host", default=None, help=HOST_HELP)
    if first_argument:
        parser.add_argument("host_arg", nargs="?", default=None, help=argparse.SUPPRESS)


def resolve_host(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fold a host given as first argument into ``args.host`` (refusing two different ones)."""
    given = getattr(args, "host_arg", None)
    if given is None:
        return
    if args.host is not None and args.host != given:
        parser.error(f"two hosts given: {given!r} and --host {args.host!r}; give one, as --host.")
    args.host = given


def add_out(parser: argparse.ArgumentParser, default: str) -> None:
    """``--out DIR``: where this command writes; ``default`` says where it writes without it."""
    parser.add_argument("--out", default=None, help=f"where to write (default: {default})")


def add_top(parser: argparse.ArgumentParser, default: int, what: str) -> None:
    parser.add_argument("--top", type=at_least(1), default=default, help=what)


def holding_out(
    out_of: Callable[[argparse.Namespace], Path | None], verb: str
) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Run a command holding the writer lock of its ``--out`` (``out_of(args)``; None: none to
    hold) from its first check to its last write, so a second writer of the same ``--out`` is
    refused at once instead of racing it."""

    def wrap(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(command)
        def run(args: argparse.Namespace) -> int:
            from irm_lens.training.runlock import out_lock

            out = out_of(args)
            if out is None:
                return command(args)
            with out_lock(out, verb):
                return command(args)

        return run

    return wrap


def add_max_rows(parser: argparse.ArgumentParser, what: str, default: int | None = None) -> None:
    parser.add_argument("--max-rows", type=at_least(1), default=default, help=what)


def add_no_png(parser: argparse.ArgumentParser, what: str) -> None:
    """``--no-png``: write figures as HTML only; ``what`` is its help."""
    parser.add_argument("--no-png", action="store_true", help=what)


def add_prompts(parser: argparse.ArgumentParser, default: str | None, what: str) -> None:
    parser.add_argument(
        "--prompts",
        default=default,
        help=f"{what}: a set ({', '.join(PROMPT_SETS)}) or a text file, one prompt per line",
    )


def read_prompt_file(path: str | Path) -> list[str]:
    """The non-empty lines of a prompt file; errors name the file and what to do."""
    file = Path(path)
    if not file.is_file():
        raise IrmLensError(
            f"--prompts {path}: neither a prompt set ({', '.join(PROMPT_SETS)}) nor a file. "
            "Give a set name, or a text file with one prompt per line."
        )
    if file.stat().st_size > MAX_PROMPT_FILE:
        raise IrmLensError(
            f"--prompts {path} is {file.stat().st_size} bytes; a prompt file is at most "
            f"{MAX_PROMPT_FILE} bytes (one prompt per line)."
        )
    try:
        lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as exc:
        raise IrmLensError(f"--prompts {path}: not UTF-8 text ({exc.reason}).") from exc
    prompts = [line for line in lines if line]
    if not prompts:
        raise IrmLensError(f"--prompts {path} holds no prompt; write one per line.")
    return prompts


def prompts_name(source: str) -> str:
    """The folder name of a prompt source: the set's name, or the file's stem."""
    return source if source in PROMPT_SETS else Path(source).stem


def verbs(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every leaf command of ``parser`` as ``(name, subparser)``, e.g. ``lens decode``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = list(verbs(sub, f"{prefix}{name} "))
                yield from nested or [(f"{prefix}{name}", sub)]


def _shows_default(action: argparse.Action) -> bool:
    help_text = action.help or ""
    return (
        help_text == argparse.SUPPRESS
        or not action.option_strings
        or "default" in help_text
        or action.default is None
        or action.default is False  # a flag (0 is a default to show)
        or action.default in (argparse.SUPPRESS, [])
        or isinstance(action, argparse._HelpAction | argparse._VersionAction)
    )


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Append ``(default: X)`` to every option's help that has a default and does not say it."""
    for _, sub in [("", parser), *verbs(parser)]:
        for action in sub._actions:
            if not _shows_default(action):
                text = (action.help or "").rstrip()
                action.help = f"{text} (default: %(default)s)".lstrip()


def _preset_default(field: str) -> str | None:
    """What a train option defaults to: the presets' values where they set it, else the
    configuration's own default (imported only when a help is printed)."""
    import dataclasses

    from irm_lens.training.config import PRESETS, TrainConfig

    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    if field not in fields:
        return None
    own = fields[field].default
    values = {name: values.get(field, own) for name, values in PRESETS.items()}
    if len(set(map(repr, values.values()))) == 1:
        return repr(own) if isinstance(own, str) else str(own)
    return "; ".join(f"{name} preset {value}" for name, value in values.items())


class PresetDefaults(argparse.HelpFormatter):
    """``train``'s help: an option left unset takes the preset's value; the help says which."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.option_strings and action.default is None and "default" not in text:
            default = _preset_default(action.dest)
            if default is not None:
                return f"{text} (default: {default})"
        return text
