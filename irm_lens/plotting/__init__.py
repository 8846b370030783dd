"""Plotly figures of irm_lens analyses: a tidy DataFrame in, a ``go.Figure`` out, no file I/O.

``recorded``: figures of recorded IRM outputs (heat maps, timing, sparsity, dominance).
``causal``: figures of the host-side analyses (ablation, propagation, logit and norm effects,
striation shares, residual magnitudes). Writing figures is ``irm_lens.export.save_figure``'s job.
"""

from irm_lens.plotting.causal import (
    ablation_figure,
    logit_effect_figure,
    massive_dims_figure,
    norm_effect_figure,
    propagation_figure,
    striation_figure,
)
from irm_lens.plotting.recorded import (
    CONSISTENCY_COLUMNS,
    DOMINANT_COLUMNS,
    HEATMAP_COLUMNS,
    LAYER_TOPK_COLUMNS,
    SPARSITY_COLUMNS,
    TOKEN_MAP_COLUMNS,
    TOPK_TIMING_COLUMNS,
    TableError,
    consistency_figure,
    dominant_indices_figure,
    heatmap_figure,
    heatmap_grid,
    layer_topk_figure,
    sparsity_figure,
    token_map_figure,
    topk_timing_figure,
)

__all__ = [
    "CONSISTENCY_COLUMNS",
    "DOMINANT_COLUMNS",
    "HEATMAP_COLUMNS",
    "LAYER_TOPK_COLUMNS",
    "SPARSITY_COLUMNS",
    "TOKEN_MAP_COLUMNS",
    "TOPK_TIMING_COLUMNS",
    "TableError",
    "ablation_figure",
    "consistency_figure",
    "dominant_indices_figure",
    "heatmap_figure",
    "heatmap_grid",
    "layer_topk_figure",
    "logit_effect_figure",
    "massive_dims_figure",
    "norm_effect_figure",
    "propagation_figure",
    "sparsity_figure",
    "striation_figure",
    "token_map_figure",
    "topk_timing_figure",
]
