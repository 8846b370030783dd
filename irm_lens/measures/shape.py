"""Where an IRM's outputs concentrate: top index, dominance and striation in one record."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from irm_lens.measures.dominance import dominance_ratio
from irm_lens.measures.striation import striation


@dataclass(frozen=True)
class Shape:
    """Where one IRM's outputs concentrate: the top index, its dominance ratio (share of total
    |output| x d_model, 1 = uniform) with a bootstrap 95 % CI over rows, and the striation
    statistics of the mean |output| map (index and layer shares of variance, cross-layer
    correlation of the index profiles)."""

    top_index: int
    dominance: float
    dominance_low: float
    dominance_high: float
    index_share: float
    layer_share: float
    cross_layer_corr: float


def output_shape(outputs: Sequence[Tensor], layers: Sequence[int], *, seed: int = 0) -> Shape:
    """The ``Shape`` of an IRM's outputs, one ``[token, inject, d_model]`` tensor per row."""
    d = dominance_ratio(outputs, seed=seed)
    pooled = striation(_pool(outputs), layers, n_permutations=0)
    return Shape(
        d.top1,
        d.ratio,
        d.low,
        d.high,
        pooled["index_share"],
        pooled["layer_share"],
        pooled["cross_layer_corr"],
    )


def _pool(outputs: Sequence[Tensor]) -> Tensor:
    return torch.cat([o.float() for o in outputs], dim=0)
