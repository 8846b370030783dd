"""Recording IRM outputs while the host answers prompts.

Prompts are answered in left-padded batches with the IRM attached (KV cache; greedy, or sampling
with a seed per batch); each row is then cut where an unbatched generation would have stopped (its
own length budget, its first end-of-sequence token), so greedy recordings do not depend on the
batching. Then block 0 alone is run over each prompt plus its answer: the IRM reads only layer 0's
residual, attention is causal and the IRM is position-wise, so this reproduces what the IRM wrote
step by step during generation (a test checks it against the KV-cache steps), including the last
generated token, which generation itself never feeds back, for about 1/n_layers of a forward.
With host hook points requested, a full forward per prompt captures them instead.

A recording directory holds ``outputs.safetensors`` (``p{i}.irm`` as ``[token, inject, d_model]``
and ``p{i}.hook.<name>`` as ``[token, ...]``), ``tokens.csv`` (one row per token: prompt index,
name, position, token id, token string, prompt/generated) and ``recording.json`` (layers,
settings, host, prompts). The original code wrote one CSV per token; see benchmarks/RESULTS.md.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pandas as pd
import torch
from jaxtyping import Float, Int
from safetensors.torch import load_file
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from irm_lens.canary import check_generation
from irm_lens.data.batches import left_pad, pad_id
from irm_lens.data.datasets import load_dataset
from irm_lens.errors import IrmLensError
from irm_lens.files import (
    atomic_dir,
    save_tensors_atomic,
    sha256_file,
    write_csv_atomic,
    write_text_atomic,
)
from irm_lens.host import check_context, host_name
from irm_lens.inject import attach
from irm_lens.irm import IRM
from irm_lens.prompts import PAPER_PROMPTS, PromptMode, encode
from irm_lens.rundir import RECORDING_INFO
from irm_lens.seeding import seeded

_FORMAT = "irm_lens.recording"


@dataclass(frozen=True)
class GenerationSettings:
    """How the host answers while being recorded.

    Args:
        greedy: greedy decoding (else sampling with ``temperature`` and ``top_k``).
        max_new_tokens: tokens to generate at most.
        max_length: if set, total length (prompt included) at most, as the original's 100.
        temperature, top_k: sampling settings.
        seed: sampling seed (the batch starting at prompt ``i`` uses ``seed + i``).
        batch_size: prompts answered at once. Greedy answers do not depend on it; sampled ones
            do (one random stream per batch), so ``batch_size=1`` gives each prompt its own seed.
    """

    greedy: bool = True
    max_new_tokens: int = 40
    max_length: int | None = None
    temperature: float = 1.0
    top_k: int | None = None
    seed: int = 0
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}.")

    def budget(self, n_prompt: int) -> int:
        """New tokens a prompt of ``n_prompt`` tokens may get (``max_length`` counts the prompt)."""
        if self.max_length is None:
            return self.max_new_tokens
        return max(0, min(self.max_new_tokens, self.max_length - n_prompt))


# The original's recording: HF defaults (T 1.0, top-k 50), 100 tokens including the prompt.
PAPER_SAMPLING = GenerationSettings(greedy=False, max_new_tokens=100, max_length=100, top_k=50)


@dataclass(frozen=True)
class RecordingSource:
    """Where a recording came from, as ``recording.json`` keeps it: the host, the IRM file and
    its SHA-256 (a recording of another IRM is refused against the run), the prompt format and
    the decoding settings."""

    host: str
    irm: str
    irm_sha256: str
    mode: str
    settings: dict[str, Any]

    @classmethod
    def of(
        cls, host: TransformerBridge, irm_path: Path, mode: str, settings: GenerationSettings
    ) -> RecordingSource:
        return cls(
            host_name(host),
            str(irm_path),
            sha256_file(irm_path),
            mode,
            dataclasses.asdict(settings),
        )

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Recording:
    """IRM outputs (and optional host activations) for one prompt and its answer."""

    name: str
    prompt: str
    layers: tuple[int, ...]
    token_ids: list[int]
    tokens: list[str]
    kinds: list[str]
    outputs: Float[Tensor, "token inject d_model"]
    hooks: dict[str, Tensor] = field(default_factory=dict)

    @property
    def n_prompt(self) -> int:
        return self.kinds.count("prompt")


def prompt_set(name: str, *, emotion: str = "anger", limit: int | None = None) -> list[str]:
    """A named prompt set: ``paper`` (the original's seven prompts) or ``heldout`` (test-split
    questions of the bundled datasets)."""
    if name == "paper":
        prompts = list(PAPER_PROMPTS)
    elif name == "heldout":
        prompts = load_dataset(emotion, split="test")["question"].tolist()
    else:
        raise ValueError(f"prompt set {name!r} is unknown; use 'paper' or 'heldout'.")
    return prompts if limit is None else prompts[:limit]


def stop_ids(host: TransformerBridge) -> list[int]:
    """Token ids that end an answer: the host config's ``eos_token_id``, else the tokenizer's."""
    eos = getattr(host.cfg, "eos_token_id", None)
    if eos is None:
        eos = host.tokenizer.eos_token_id
    if eos is None:
        return []
    return [int(eos)] if isinstance(eos, int) else [int(e) for e in eos]


def trim_answer(generated: Sequence[int], budget: int, stop: Sequence[int]) -> list[int]:
    """One batch row's new tokens as an unbatched generation returns them: at most ``budget``,
    ending with the first stop token when there is one (the rest is the batch's padding)."""
    kept = list(generated[:budget])
    for i, token in enumerate(kept):
        if token in stop:
            return kept[: i + 1]
    return kept


def _generate_batch(
    host: TransformerBridge, prompts: list[list[int]], settings: GenerationSettings, seed: int
) -> list[list[int]]:
    """Prompt plus answer token ids for each prompt, generated as one left-padded batch."""
    budgets = [settings.budget(len(p)) for p in prompts]
    if max(budgets) == 0:
        return [list(p) for p in prompts]
    tokens, mask = left_pad(prompts, pad_id(host.tokenizer))
    width = tokens.shape[1]
    stop = stop_ids(host)
    kwargs: dict[str, Any] = dict(
        max_new_tokens=max(budgets),
        do_sample=not settings.greedy,
        verbose=False,
        stop_at_eos=bool(stop),
        eos_token_id=stop or None,
    )
    if not settings.greedy:
        kwargs.update(temperature=settings.temperature, top_k=settings.top_k)
    device = host.W_E.device
    with seeded(None if settings.greedy else seed):
        out = host.generate(tokens.to(device), attention_mask=mask.to(device), **kwargs)
    new = cast(Tensor, out)[:, width:].tolist()
    return [
        list(p) + trim_answer(row, budget, stop)
        for p, row, budget in zip(prompts, new, budgets, strict=True)
    ]


def irm_outputs(
    host: TransformerBridge, irm: IRM, tokens: Int[Tensor, "1 pos"]
) -> Float[Tensor, "inject 1 pos d_model"]:
    """The IRM's output at every position of ``tokens``, from block 0 alone (see the module
    docstring for why this equals what it wrote during generation)."""
    with torch.no_grad(), attach(host, irm) as injection:
        host(tokens, stop_at_layer=1)
    assert injection.last is not None
    return injection.last.cpu()


def record(
    host: TransformerBridge,
    irm: IRM,
    prompts: Sequence[str],
    *,
    mode: PromptMode = "plain",
    settings: GenerationSettings = GenerationSettings(),
    hooks: Sequence[str] = (),
    names: Sequence[str] | None = None,
    progress: bool = True,
) -> list[Recording]:
    """Generate an answer to each prompt with ``irm`` attached and record the IRM's outputs.

    Args:
        host: the host bridge.
        irm: the IRM (checked against the host).
        prompts: user messages.
        mode: ``"plain"`` (BOS + prompt, as the original recorded) or ``"chat"``.
        settings: decoding settings (``PAPER_SAMPLING`` for the original's).
        hooks: host hook points to capture too (e.g. ``blocks.10.hook_resid_post``).
        names: a name per prompt (default ``p0``, ``p1``, ...).

    Returns:
        One ``Recording`` per prompt, ``outputs`` shaped ``[token, inject, d_model]`` on the CPU.
    """
    names = list(names) if names is not None else [f"p{i}" for i in range(len(prompts))]
    if len(names) != len(prompts):
        raise ValueError(f"names has {len(names)} entries for {len(prompts)} prompts.")
    empty = [i for i, p in enumerate(prompts) if not p.strip()]
    if empty:
        raise IrmLensError(f"prompts {empty} are empty; give every prompt some text.")
    unknown = [h for h in hooks if h not in host.hook_dict]
    if unknown:
        raise IrmLensError(f"Unknown hook points {unknown}; `irm-lens info` lists the host's.")
    check_generation(host)
    tok = host.tokenizer
    device = host.W_E.device
    encoded = [encode(tok, prompt, mode=mode).prompt_ids for prompt in prompts]
    for name, ids in zip(names, encoded, strict=True):
        check_context(host, len(ids), settings.budget(len(ids)), f"prompt {name!r}")
    size = settings.batch_size
    recordings = []
    with tqdm(total=len(prompts), disable=not progress, desc="record", unit="prompt") as bar:
        for first in range(0, len(prompts), size):
            with torch.no_grad(), attach(host, irm):
                answered = _generate_batch(
                    host, encoded[first : first + size], settings, settings.seed + first
                )
            for i, token_ids in enumerate(answered, start=first):
                full = torch.tensor([token_ids], device=device)
                captured: dict[str, Tensor] = {}
                if hooks:  # a full forward captures the hooks and every IRM output at once
                    with torch.no_grad(), attach(host, irm) as inj:
                        _, cache = host.run_with_cache(full, names_filter=list(hooks))
                    captured = {h: cache[h][0].float().cpu().contiguous() for h in hooks}
                    outputs = inj.last
                else:
                    outputs = irm_outputs(host, irm, full)
                assert outputs is not None  # the forwards above ran the IRM
                n_prompt = len(encoded[i])
                recordings.append(
                    Recording(
                        name=names[i],
                        prompt=prompts[i],
                        layers=irm.layers,
                        token_ids=token_ids,
                        tokens=[tok.decode([t]) for t in token_ids],
                        kinds=["prompt"] * n_prompt + ["generated"] * (len(token_ids) - n_prompt),
                        outputs=outputs[:, 0].transpose(0, 1).float().cpu().contiguous(),
                        hooks=captured,
                    )
                )
            bar.update(len(answered))
    return recordings


def save_recordings(
    recordings: Sequence[Recording],
    directory: str | Path,
    *,
    source: RecordingSource | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write recordings to ``directory`` (safetensors + tokens.csv + recording.json) as one unit.

    The three files are written into a temporary directory that then replaces ``directory``
    whole (``irm_lens.files.atomic_dir``): a reader never sees a new ``outputs.safetensors``
    beside an old ``tokens.csv``. ``recording.json`` keeps the SHA-256 and size of the other
    two, which ``load_recordings`` checks.
    """
    out = Path(directory)
    tensors: dict[str, Tensor] = {}
    for i, rec in enumerate(recordings):
        tensors[f"p{i}.irm"] = rec.outputs
        for hook, value in rec.hooks.items():
            tensors[f"p{i}.hook.{hook}"] = value
    columns: dict[str, list[Any]] = {
        k: [] for k in ("prompt_index", "name", "position", "token_id", "token", "kind")
    }
    for i, rec in enumerate(recordings):  # plain lists: a DataFrame per prompt costs more here
        n = len(rec.token_ids)
        columns["prompt_index"] += [i] * n
        columns["name"] += [rec.name] * n
        columns["position"] += list(range(n))
        columns["token_id"] += rec.token_ids
        columns["token"] += rec.tokens
        columns["kind"] += rec.kinds
    with atomic_dir(out, kind="recording") as tmp:
        save_tensors_atomic(tensors, tmp / "outputs.safetensors", {"format": _FORMAT})
        write_csv_atomic(tmp / "tokens.csv", pd.DataFrame(columns))
        info = {
            "format": _FORMAT,
            "layers": list(recordings[0].layers) if recordings else [],
            "prompts": [
                {"name": r.name, "prompt": r.prompt, "tokens": len(r.token_ids)} for r in recordings
            ],
            "files": {name: sha256_file(tmp / name) for name in _DATA_FILES},
            **(source.as_dict() if source else {}),
            **(meta or {}),
        }
        write_text_atomic(tmp / RECORDING_INFO, json.dumps(info, indent=2, default=str))
    return out


_DATA_FILES = ("outputs.safetensors", "tokens.csv")


def _damaged(path: Path, what: str) -> IrmLensError:
    return IrmLensError(
        f"{path}: {what}. The recording in {path.parent} is damaged; record it again "
        "(`irm-lens record RUN_DIR`, or delete the directory and rerun `make figures`)."
    )


def read_recording_info(directory: str | Path) -> dict[str, Any]:
    """A recording's ``recording.json`` (prompts, layers, provenance), checked for its keys."""
    path = Path(directory) / RECORDING_INFO
    try:
        info = json.loads(path.read_bytes().decode("utf-8"))
        if not isinstance(info, dict) or not {"prompts", "layers"} <= set(info):
            raise ValueError("no 'prompts' and 'layers'")
    except FileNotFoundError:
        raise IrmLensError(
            f"{path.parent}: not a recording directory (no recording.json)."
        ) from None
    except ValueError as exc:  # bad UTF-8 or JSON, or missing keys
        raise _damaged(path, f"not a recording description ({exc})") from None
    return info


def load_recordings(directory: str | Path) -> list[Recording]:
    """Read recordings written by ``save_recordings``, checking the files against each other.

    Raises:
        IrmLensError: a file is missing, unreadable, or does not match ``recording.json`` (its
            hash, or a prompt's token count); the message names the file.
    """
    src = Path(directory)
    missing = [f for f in (*_DATA_FILES, RECORDING_INFO) if not (src / f).exists()]
    if missing:
        raise IrmLensError(f"{src}: not a recording directory (missing {', '.join(missing)}).")
    info = read_recording_info(src)
    prompts, layers = info["prompts"], tuple(info["layers"])
    for name, digest in info.get("files", {}).items():  # recordings before v4 have no hashes
        if sha256_file(src / name) != digest:
            raise _damaged(src / name, "its SHA-256 differs from the one in recording.json")
    try:
        tensors = load_file(str(src / "outputs.safetensors"))
    except Exception as exc:  # safetensors raises several types for damaged files
        raise _damaged(src / "outputs.safetensors", f"cannot be read ({exc})") from None
    try:
        table = pd.read_csv(src / "tokens.csv", keep_default_na=False, dtype={"token": str})
        table["token_id"] = table["token_id"].astype(int)
    except (ValueError, KeyError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise _damaged(src / "tokens.csv", f"not a token table ({exc})") from None
    recordings = []
    for i, entry in enumerate(prompts):
        rows = table[table["prompt_index"] == i].sort_values("position")
        key = f"p{i}.irm"
        if key not in tensors:
            raise _damaged(src / "outputs.safetensors", f"has no outputs for prompt {i}")
        if len(rows) != tensors[key].shape[0] or len(rows) != entry.get("tokens", len(rows)):
            raise _damaged(
                src / "tokens.csv",
                f"prompt {i} has {len(rows)} token rows but {tensors[key].shape[0]} recorded "
                "outputs",
            )
        prefix = f"p{i}.hook."
        recordings.append(
            Recording(
                name=entry["name"],
                prompt=entry["prompt"],
                layers=layers,
                token_ids=rows["token_id"].tolist(),
                tokens=rows["token"].tolist(),
                kinds=rows["kind"].tolist(),
                outputs=tensors[key],
                hooks={k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)},
            )
        )
    return recordings
