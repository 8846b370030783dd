"""An IRM's constant part as steering vectors: one vector per injected layer, saved in a
safetensors file keyed by the TransformerLens hook point it is added at, and added back with
ordinary hooks (no IRM, no irm_lens needed to read the file).

    vectors = SteeringVectors.from_recordings(load_recordings("runs/anger/recordings/paper"))
    vectors.save("anger.steering.safetensors")
    logits = host.run_with_hooks(tokens, fwd_hooks=SteeringVectors.load(path).hooks())

The vector of layer ``l`` is the IRM's mean output at ``l`` over every recorded token
(``irm_lens.measures.steering.constant_part``); it is added at ``blocks.l.hook_attn_out``, where
the IRM adds its own output (``irm_lens.inject.write_hook``), at every position.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from einops import einsum
from safetensors import SafetensorError, safe_open
from torch import Tensor

from irm_lens.errors import IrmLensError
from irm_lens.files import save_tensors_atomic
from irm_lens.inject import layer_of, resid_mid_hook, write_hook
from irm_lens.measures.steering import constant_part
from irm_lens.prompts import PromptMode

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from irm_lens.record import Recording

FORMAT = "irm_lens.steering_vectors"


@dataclass(frozen=True)
class SteeringVectors:
    """Vectors by hook point (``blocks.L.hook_attn_out`` -> ``[d_model]``) and where they came
    from (``meta``: text, kept in the file's header)."""

    vectors: dict[str, Tensor]
    meta: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_recordings(
        cls, recordings: Sequence[Recording], *, source: str = ""
    ) -> SteeringVectors:
        """The mean IRM output per injected layer over every token of ``recordings``."""
        if not recordings:
            raise IrmLensError("no recordings: record the IRM on some prompts first.")
        mean = constant_part([r.outputs for r in recordings])  # [inject, d_model]
        layers = list(recordings[0].layers)
        vectors = {write_hook(layer): mean[i].float() for i, layer in enumerate(layers)}
        tokens = sum(len(r.token_ids) for r in recordings)
        meta = {"layers": json.dumps(layers), "tokens": str(tokens), "source": source}
        return cls(vectors, meta)

    @classmethod
    def contrastive(
        cls,
        host: TransformerBridge,
        target: pd.DataFrame,
        base: pd.DataFrame,
        layers: Sequence[int],
        *,
        mode: PromptMode = "chat",
        max_len: int = 128,
        batch_size: int = 8,
        source: str = "",
    ) -> SteeringVectors:
        """A contrastive steering vector per layer, from data rather than an IRM: the mean
        residual stream at ``blocks.L.hook_resid_mid`` (where a write at ``hook_attn_out``
        lands) over the answer tokens of ``target``'s question/answer rows, minus the same
        over ``base``'s (each row's mean over its answer tokens, then the mean over rows).
        Unscaled: the residual difference at layer L already carries what earlier layers
        wrote, so added at many layers it compounds; choose a ``scale`` for ``applied``."""
        if target.empty or base.empty:
            raise IrmLensError("contrastive vectors need rows of both voices (target and base).")
        names = [resid_mid_hook(layer) for layer in layers]
        difference = _answer_means(host, target, names, mode, max_len, batch_size)
        difference -= _answer_means(host, base, names, mode, max_len, batch_size)
        vectors = {write_hook(layer): difference[i] for i, layer in enumerate(layers)}
        meta = {
            "layers": json.dumps(list(layers)),
            "rows": f"{len(target)} target, {len(base)} base",
            "source": source,
            "kind": "contrastive (unscaled)",
        }
        return cls(vectors, meta)

    def save(self, path: str | os.PathLike[str]) -> Path:
        save_tensors_atomic(
            {k: v.contiguous() for k, v in self.vectors.items()},
            path,
            {"format": FORMAT, **self.meta},
        )
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SteeringVectors:
        """Read a file ``save`` wrote; errors name the file and what it holds instead."""
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                vectors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open API)
        except (OSError, SafetensorError) as exc:
            raise IrmLensError(f"{path}: not a readable safetensors file ({exc}).") from exc
        if meta.get("format") != FORMAT:
            raise IrmLensError(
                f"{path}: not irm_lens steering vectors (format {meta.get('format')!r}); write "
                "one with irm-lens export RUN_DIR."
            )
        bad = [k for k, v in vectors.items() if layer_of(k) < 0 or v.dim() != 1]
        if bad:
            raise IrmLensError(f"{path}: entries {bad} are not one vector per block hook.")
        meta.pop("format")
        return cls(vectors, meta)

    def hooks(self, scale: float = 1.0) -> list[tuple[str, Callable[..., Tensor]]]:
        """``(hook name, fn)`` pairs for ``host.hooks``/``run_with_hooks``: each adds
        ``scale`` x its vector at every position."""

        def adder(vector: Tensor) -> Callable[..., Tensor]:
            def add(x: Tensor, hook: Any) -> Tensor:  # noqa: ARG001 (TL passes hook=)
                return x + scale * vector.to(x.device, x.dtype)

            return add

        return [(name, adder(vector)) for name, vector in self.vectors.items()]

    @contextmanager
    def applied(self, host: TransformerBridge, scale: float = 1.0) -> Iterator[None]:
        """Within the block, ``host`` runs with the vectors added (its hooks removed after)."""
        if host.cfg.d_model != len(next(iter(self.vectors.values()))):
            raise IrmLensError(
                f"these vectors have {len(next(iter(self.vectors.values())))} dimensions; the "
                f"host's residual stream has {host.cfg.d_model}."
            )
        unknown = [name for name in self.vectors if name not in host.hook_dict]
        if unknown:
            raise IrmLensError(f"the host has no hook points {unknown}: vectors of another host?")
        with host.hooks(fwd_hooks=self.hooks(scale)):
            yield


def steering_norms(vectors: SteeringVectors) -> dict[str, float]:
    """Each vector's L2 norm by hook point (what a table of the file shows)."""
    return {name: float(torch.linalg.vector_norm(v)) for name, v in vectors.vectors.items()}


def _answer_means(
    host: TransformerBridge,
    rows: pd.DataFrame,
    names: Sequence[str],
    mode: PromptMode,
    max_len: int,
    batch_size: int,
) -> Tensor:
    """``[len(names), d_model]``: the activation at each hook point averaged over each row's
    answer tokens, then over rows (TransformerLens ``run_with_cache``, only ``names`` kept)."""
    from irm_lens.data.batches import collate, encode_rows, pad_id

    examples = encode_rows(host.tokenizer, rows, mode)
    total, n_rows = torch.zeros(len(names), host.cfg.d_model), 0
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            batch = collate(examples[i : i + batch_size], pad_id(host.tokenizer), max_len)
            batch = batch.to(host.W_E.device)
            _, cache = host.run_with_cache(
                batch.tokens,
                attention_mask=batch.attention_mask,
                names_filter=lambda name: name in names,
            )
            mask = batch.answer_mask.float()  # [batch, pos]
            counts = mask.sum(1)
            seen = counts > 0  # a row cut before its answer says nothing of its voice
            n_rows += int(seen.sum())
            for j, name in enumerate(names):
                sums = einsum(cache[name].float(), mask, "b p d, b p -> b d")
                total[j] += (sums[seen] / counts[seen, None]).sum(0).cpu()
    if n_rows == 0:
        raise IrmLensError(f"no answer token within max_len {max_len} in any of these rows.")
    return total / n_rows
