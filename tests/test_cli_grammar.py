"""One grammar over every verb of ``irm-lens`` (``irm_lens/cli/grammar.py``): the host is
``--host``, ``--out`` is optional and says its default, prompts come from a set or a file, top-k
is ``--top`` and a row cap ``--max-rows``, every default is in the help, and every verb ends by
printing the next command. Parser-level: no host is loaded."""

from __future__ import annotations

import argparse
import inspect

import pytest

from irm_lens.cli import grammar
from irm_lens.cli.main import build_parser
from irm_lens.errors import IrmLensError

PARSER = build_parser()
VERBS = dict(grammar.verbs(PARSER))
EXPECTED = {
    "info", "generate", "train", "evaluate", "sweep", "record", "analyze", "atlas", "ablate",
    "export",
    "data import", "data synth", "lens decode", "lens attribute", "lens channels", "plan",
    "profile", "predict",
}  # fmt: skip
# Spellings of a concept that has another flag: top-k is --top, a row cap --max-rows.
RETIRED = {"--k", "--limit", "--rows", "--n", "--num", "--count", "--topk", "--top-n"}


def _options(sub: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in sub._actions for s in a.option_strings}


def _positionals(sub: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in sub._actions
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
    ]


def test_the_grammar_sees_every_verb() -> None:
    assert set(VERBS) == EXPECTED


ON_A_RUN = {"evaluate", "record", "analyze", "atlas", "ablate", "export"}  # the run's own host
NO_HOST = {"data import"}  # converts files


@pytest.mark.parametrize("verb", sorted(EXPECTED))
def test_the_host_is_always_host(verb: str) -> None:
    sub = VERBS[verb]
    assert ("--host" in _options(sub)) == (verb not in ON_A_RUN | NO_HOST), verb
    shown = [a.dest for a in _positionals(sub) if a.help != argparse.SUPPRESS]
    assert "host" not in shown and "host_arg" not in shown, verb


@pytest.mark.parametrize("verb", sorted(EXPECTED))
def test_one_spelling_per_concept(verb: str) -> None:
    options = _options(VERBS[verb])
    assert not RETIRED & set(options), verb
    if "--out" in options:
        out = options["--out"]
        assert not out.required and out.help.startswith("where to write (default: "), verb
    if "--prompts" in options:
        assert "a set (paper, heldout) or a text file" in options["--prompts"].help, verb


@pytest.mark.parametrize("verb", sorted(EXPECTED))
def test_every_help_shows_its_defaults(verb: str) -> None:
    sub = VERBS[verb]
    formatter = sub.formatter_class(prog=f"irm-lens {verb}")
    for action in sub._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        if isinstance(action, argparse._HelpAction | argparse._StoreTrueAction):
            continue
        if action.default in (None, []) and verb != "train":
            continue  # no default: the option is off unless given
        text = formatter._get_help_string(action) or ""
        assert "default" in text, f"{verb} {action.option_strings[0]}: {text!r}"
        said = text.replace("(default: %(default)s)", "").strip()
        assert said and not said.startswith("(default"), f"{action.option_strings[0]} says nothing"


@pytest.mark.parametrize("verb", sorted(EXPECTED))
def test_every_verb_prints_the_next_command(verb: str) -> None:
    func = VERBS[verb].get_default("func")
    module_of = inspect.getmodule(func)
    source = inspect.getsource(func)
    for name, helper in inspect.getmembers(module_of, inspect.isfunction):  # what it hands on to
        if f"{name}(" in source and helper.__module__ == func.__module__:
            source += inspect.getsource(helper)
    module = inspect.getsource(module_of)
    writes = "_write(" in source and 'print("next:' in module  # the lens verbs' shared writer
    assert "next:" in source or writes, verb


@pytest.mark.parametrize("verb", sorted(EXPECTED))
def test_every_help_answers(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        PARSER.parse_args([*verb.split(), "--help"])
    assert stop.value.code == 0
    assert f"usage: irm-lens {verb}" in capsys.readouterr().out


def test_the_host_as_first_argument_is_folded_into_host() -> None:
    args = PARSER.parse_args(["info", "tiny-random-llama"])
    grammar.resolve_host(PARSER, args)
    assert args.host == "tiny-random-llama"
    args = PARSER.parse_args(["plan", "--host", "tiny-random-llama"])
    grammar.resolve_host(PARSER, args)
    assert args.host == "tiny-random-llama"
    with pytest.raises(SystemExit):
        twice = PARSER.parse_args(["profile", "a", "--host", "b"])
        grammar.resolve_host(PARSER, twice)


def test_prompts_come_from_a_set_or_a_file(tmp_path) -> None:
    file = tmp_path / "mine.txt"
    file.write_text("What is rain?\n\n  Why do cats purr?  \n", encoding="utf-8")
    assert grammar.read_prompt_file(file) == ["What is rain?", "Why do cats purr?"]
    assert grammar.prompts_name(str(file)) == "mine" and grammar.prompts_name("paper") == "paper"
    with pytest.raises(IrmLensError, match="neither a prompt set"):
        grammar.read_prompt_file(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n \n", encoding="utf-8")
    with pytest.raises(IrmLensError, match="holds no prompt"):
        grammar.read_prompt_file(tmp_path / "empty.txt")
    (tmp_path / "latin.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(IrmLensError, match="not UTF-8"):
        grammar.read_prompt_file(tmp_path / "latin.txt")


def test_train_help_names_the_presets_values() -> None:
    text = " ".join(VERBS["train"].format_help().split())
    assert "learning rate (default: quick preset 0.001; paper preset 0.0001" in text
    assert "(default: 42)" in text  # --seed: the same in every preset
