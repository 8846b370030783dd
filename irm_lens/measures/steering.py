"""Is an IRM a fixed steering vector? Its outputs split into a constant part plus the rest.

An IRM reads the residual stream and writes one vector per injected layer at every token. If
what it writes barely depends on what it reads, a per-layer constant (a steering vector) does
the same job. ``constant_part`` is the mean output per layer over every token of every prompt;
``constant_share`` the fraction of the outputs' sum of squares it explains (the pipeline's
``analyses/rules/steering.py`` compares that share of trained and untrained IRMs). Outputs come
as one ``[token, inject, d_model]`` tensor per prompt (prompts differ in length).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor


def _pooled(outputs: Sequence[Tensor]) -> Tensor:
    if not outputs:
        raise ValueError("needs the outputs of at least one prompt.")
    return torch.cat([o.double() for o in outputs], dim=0)


def constant_part(
    outputs: Sequence[Tensor],
) -> Float[Tensor, "inject d_model"]:
    """The mean output per injected layer over every token of every prompt."""
    return _pooled(outputs).mean(dim=0)


def constant_share(outputs: Sequence[Tensor]) -> float:
    """The fraction of the outputs' sum of squares the constant part explains: 1 when the IRM
    writes the same vectors at every token, 0 when its mean is zero."""
    pooled = _pooled(outputs)
    total = float(pooled.pow(2).sum())
    if total == 0:
        return float("nan")
    rest = float((pooled - pooled.mean(dim=0)).pow(2).sum())
    return 1.0 - rest / total


def constant_top(outputs: Sequence[Tensor]) -> int:
    """The residual index where the constant part is largest (|vector| summed over layers)."""
    return int(constant_part(outputs).abs().sum(dim=0).argmax())
