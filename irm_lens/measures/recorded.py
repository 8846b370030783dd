"""Every statistic of one run's recorded prompts, in one call: the analysis behind both
``irm-lens analyze`` and ``make figures`` (``analyses/``), so the two cannot drift apart.

A run's recording is a sequence of prompts, each with ``outputs: [token, inject, d_model]``,
``kinds`` (``"prompt"``/``"generated"`` per token), ``layers`` and ``name``
(``irm_lens.record.Recording`` has them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import pandas as pd
import torch
from torch import Tensor

from irm_lens.measures.dominance import dominant_indices
from irm_lens.measures.maps import heatmap, token_mask
from irm_lens.measures.striation import striation
from irm_lens.measures.timing import layer_topk, sparsity_by_layer, topk_timing


@runtime_checkable
class RecordedPrompt(Protocol):
    @property
    def outputs(self) -> Tensor: ...
    @property
    def kinds(self) -> Sequence[str]: ...
    @property
    def layers(self) -> Sequence[int]: ...
    @property
    def name(self) -> str: ...


TABLES = ("heatmap", "topk_timing", "dominant_indices", "striation", "sparsity", "layer_topk")
"""What ``analyze_recordings`` returns, in this order."""


def _check(recordings: Sequence[RecordedPrompt]) -> None:
    if not recordings:
        raise ValueError("recordings is empty: record at least one prompt.")


def pooled(recordings: Sequence[RecordedPrompt]) -> Tensor:
    """Every recorded token of every prompt: ``[token, inject, d_model]``."""
    _check(recordings)
    return torch.cat([r.outputs for r in recordings])


def paper_heatmap(recordings: Sequence[RecordedPrompt]) -> pd.DataFrame:
    """The signed mean output per (layer, index) over the paper's token set of every prompt
    (its prompt tokens and first 10 generated ones: paper Fig. 2)."""
    _check(recordings)
    selected = torch.cat([r.outputs[token_mask(r.kinds)] for r in recordings])
    return heatmap(selected, ["prompt"] * len(selected), recordings[0].layers, token_set="all")


def analyze_recordings(
    recordings: Sequence[RecordedPrompt],
    *,
    tables: Sequence[str] = TABLES,
    k: int = 1000,
    n_permutations: int = 200,
    baseline: Tensor | None = None,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """The per-run ``tables`` (default: all of ``TABLES``): the Fig. 2 heat map, the top-``k``
    timing of each prompt, residual indices ranked by mean |output|, the striation statistics
    over every token (one row; ``baseline``: the untrained IRM's pooled outputs, the control;
    ``seed``: its permutations), the sparsity and the top-100 share of each layer."""
    unknown = [t for t in tables if t not in TABLES]
    if unknown:
        raise ValueError(f"tables {unknown} unknown; choose from {list(TABLES)}.")
    every = pooled(recordings)
    layers = recordings[0].layers
    make = {
        "heatmap": lambda: paper_heatmap(recordings),
        "topk_timing": lambda: pd.concat(
            [topk_timing(r.outputs, r.kinds, k=k).assign(prompt=r.name) for r in recordings],
            ignore_index=True,
        ),
        "dominant_indices": lambda: dominant_indices(every),
        "striation": lambda: pd.DataFrame(
            [striation(every, layers, n_permutations=n_permutations, baseline=baseline, seed=seed)]
        ),
        "sparsity": lambda: sparsity_by_layer(every, layers),
        "layer_topk": lambda: layer_topk(every, layers),
    }
    return {name: make[name]() for name in TABLES if name in tables}
