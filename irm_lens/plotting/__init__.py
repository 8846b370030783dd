"""Plotly figures of irm_lens measures: a tidy DataFrame in, a ``go.Figure`` out, no file I/O.

``heatmaps``: heat maps of recorded IRM outputs (Fig. 2). ``recorded``: the other figures of
recorded outputs (timing, sparsity, dominance).
``atlas``: the interactive per-run atlas. ``profile``: a host's per-index profile.
``causal``: figures of the host-side analyses (ablation, propagation, logit and norm effects,
striation shares, residual magnitudes). ``lenses``: decoded and attributed units. ``base``:
shared checks and style. The run-set figures of ``make figures`` are in ``analyses/plots``.
Writing figures is ``irm_lens.export.save_figure``'s job.
"""

from irm_lens.plotting.atlas import atlas_figure
from irm_lens.plotting.base import TableError
from irm_lens.plotting.causal import (
    ablation_figure,
    logit_effect_figure,
    massive_dims_figure,
    norm_effect_figure,
    propagation_figure,
    striation_figure,
)
from irm_lens.plotting.heatmaps import (
    HEATMAP_COLUMNS,
    TOKEN_MAP_COLUMNS,
    heatmap_figure,
    heatmap_grid,
    token_map_figure,
)
from irm_lens.plotting.recorded import (
    CONSISTENCY_COLUMNS,
    DOMINANT_COLUMNS,
    LAYER_TOPK_COLUMNS,
    SPARSITY_COLUMNS,
    TOPK_TIMING_COLUMNS,
    consistency_figure,
    dominant_indices_figure,
    layer_topk_figure,
    sparsity_figure,
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
    "atlas_figure",
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
