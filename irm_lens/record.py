"""Recording IRM outputs while the host answers prompts.

For each prompt the host generates with the IRM attached (KV cache; greedy, or sampling with a
seed). Then block 0 alone is run over the prompt plus the generated tokens: the IRM reads only
layer 0's residual, attention is causal and the IRM is position-wise, so this reproduces what
the IRM wrote step by step during generation (a test checks it against the KV-cache steps),
including the last generated token, which generation itself never feeds back, for about 1/n_layers
of a forward. With host hook points requested, a full forward captures them instead.

A recording directory holds ``outputs.safetensors`` (``p{i}.irm`` as ``[token, inject, d_model]``
and ``p{i}.hook.<name>`` as ``[token, ...]``), ``tokens.csv`` (one row per token: prompt index,
name, position, token id, token string, prompt/generated) and ``recording.json`` (layers,
settings, host, prompts). The original code wrote one CSV per token; see benchmarks/RESULTS.md.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pandas as pd
import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from irm_lens.datasets import load_dataset
from irm_lens.errors import IrmLensError
from irm_lens.files import atomic_path, write_csv_atomic, write_text_atomic
from irm_lens.inject import Injection, attach, resid_pre_hook, write_hook
from irm_lens.irm import IRM
from irm_lens.prompts import PAPER_PROMPTS, PromptMode, encode

_FORMAT = "irm_lens.recording"


@dataclass(frozen=True)
class GenerationSettings:
    """How the host answers while being recorded.

    Args:
        greedy: greedy decoding (else sampling with ``temperature`` and ``top_k``).
        max_new_tokens: tokens to generate at most.
        max_length: if set, total length (prompt included) at most, as the original's 100.
        temperature, top_k: sampling settings.
        seed: sampling seed (prompt ``i`` uses ``seed + i``).
    """

    greedy: bool = True
    max_new_tokens: int = 40
    max_length: int | None = None
    temperature: float = 1.0
    top_k: int | None = None
    seed: int = 0


# The original's recording: HF defaults (T 1.0, top-k 50), 100 tokens including the prompt.
PAPER_SAMPLING = GenerationSettings(greedy=False, max_new_tokens=100, max_length=100, top_k=50)


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


def _generate(
    host: TransformerBridge, ids: Tensor, settings: GenerationSettings, seed: int
) -> Tensor:
    budget = settings.max_new_tokens
    if settings.max_length is not None:
        budget = min(budget, settings.max_length - ids.shape[1])
    if budget <= 0:
        return ids
    kwargs: dict[str, Any] = dict(
        max_new_tokens=budget, do_sample=not settings.greedy, verbose=False
    )
    if not settings.greedy:
        kwargs.update(temperature=settings.temperature, top_k=settings.top_k)
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
    try:
        out = host.generate(ids, **kwargs)
    finally:
        if not settings.greedy:
            torch.random.set_rng_state(state)
    return cast(Tensor, out)


def _complete(host: TransformerBridge, irm: IRM, tokens: Tensor, history: list[Tensor]) -> Tensor:
    """IRM outputs for every position of ``tokens``: the generation's own steps, plus the tail
    generation never fed back (its last token), from block 0 alone over the sequence."""
    done = torch.cat(history, dim=2) if history else None
    covered = 0 if done is None else done.shape[2]
    if covered == tokens.shape[1]:
        assert done is not None
        return done
    missing = tokens.shape[1] - covered
    injection = Injection(irm=irm)
    stash: dict[str, Tensor] = {}

    def keep_pre(x: Tensor, hook: Any) -> None:
        stash["pre"] = x

    def run_irm(x: Tensor, hook: Any) -> None:
        stash["out"] = injection.irm_output((stash["pre"] + x)[:, -missing:]).cpu()

    with (
        torch.no_grad(),
        host.hooks(fwd_hooks=[(resid_pre_hook(0), keep_pre), (write_hook(0), run_irm)]),
    ):
        host(tokens, stop_at_layer=1)
    tail = stash["out"]
    return tail if done is None else torch.cat([done, tail], dim=2)


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
    tok = host.tokenizer
    device = host.W_E.device
    recordings = []
    for i, (name, prompt) in enumerate(tqdm(list(zip(names, prompts, strict=True)),
                                            disable=not progress, desc="record")):  # fmt: skip
        prompt_ids = encode(tok, prompt, mode=mode).prompt_ids
        ids = torch.tensor([prompt_ids], device=device)
        captured: dict[str, Tensor] = {}
        with torch.no_grad(), attach(host, irm, keep_history=not hooks) as inj:
            full = _generate(host, ids, settings, settings.seed + i)
            if hooks:  # a full forward captures the hooks and every IRM output at once
                _, cache = host.run_with_cache(full, names_filter=list(hooks))
                captured = {h: cache[h][0].float().cpu().contiguous() for h in hooks}
                outputs = inj.last
        if not hooks:
            outputs = _complete(host, irm, full, inj.history)
        assert outputs is not None  # the forwards above ran the IRM
        token_ids = full[0].tolist()
        recordings.append(
            Recording(
                name=name,
                prompt=prompt,
                layers=irm.layers,
                token_ids=token_ids,
                tokens=[tok.decode([t]) for t in token_ids],
                kinds=["prompt"] * len(prompt_ids)
                + ["generated"] * (len(token_ids) - len(prompt_ids)),
                outputs=outputs[:, 0].transpose(0, 1).float().cpu().contiguous(),
                hooks=captured,
            )
        )
    return recordings


def save_recordings(
    recordings: Sequence[Recording], directory: str | Path, *, meta: dict[str, Any] | None = None
) -> Path:
    """Write recordings to ``directory`` (safetensors + tokens.csv + recording.json), atomically."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, Tensor] = {}
    for i, rec in enumerate(recordings):
        tensors[f"p{i}.irm"] = rec.outputs
        for hook, value in rec.hooks.items():
            tensors[f"p{i}.hook.{hook}"] = value
    info = {
        "format": _FORMAT,
        "layers": list(recordings[0].layers) if recordings else [],
        "prompts": [{"name": r.name, "prompt": r.prompt} for r in recordings],
        **(meta or {}),
    }
    with atomic_path(out / "outputs.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": _FORMAT})
    columns: dict[str, list[Any]] = {k: [] for k in ("prompt_index", "name", "position",
                                                     "token_id", "token", "kind")}  # fmt: skip
    for i, rec in enumerate(recordings):  # plain lists: a DataFrame per prompt costs more here
        n = len(rec.token_ids)
        columns["prompt_index"] += [i] * n
        columns["name"] += [rec.name] * n
        columns["position"] += list(range(n))
        columns["token_id"] += rec.token_ids
        columns["token"] += rec.tokens
        columns["kind"] += rec.kinds
    write_csv_atomic(out / "tokens.csv", pd.DataFrame(columns))
    write_text_atomic(out / "recording.json", json.dumps(info, indent=2, default=str))
    return out


def load_recordings(directory: str | Path) -> list[Recording]:
    """Read recordings written by ``save_recordings``."""
    src = Path(directory)
    missing = [
        f for f in ("outputs.safetensors", "tokens.csv", "recording.json") if not (src / f).exists()
    ]
    if missing:
        raise IrmLensError(f"{src}: not a recording directory (missing {', '.join(missing)}).")
    info = json.loads((src / "recording.json").read_text())
    tensors = load_file(str(src / "outputs.safetensors"))
    table = pd.read_csv(src / "tokens.csv", keep_default_na=False, dtype={"token": str})
    recordings = []
    for i, entry in enumerate(info["prompts"]):
        rows = table[table["prompt_index"] == i].sort_values("position")
        prefix = f"p{i}.hook."
        recordings.append(
            Recording(
                name=entry["name"],
                prompt=entry["prompt"],
                layers=tuple(info["layers"]),
                token_ids=rows["token_id"].astype(int).tolist(),
                tokens=rows["token"].tolist(),
                kinds=rows["kind"].tolist(),
                outputs=tensors[f"p{i}.irm"],
                hooks={k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)},
            )
        )
    return recordings
