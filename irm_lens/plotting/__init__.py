"""Plotly figures of irm_lens analyses: a tidy DataFrame in, a ``go.Figure`` out, no file I/O.

``heatmaps``: heat maps of recorded IRM outputs (Fig. 2). ``recorded``: the other figures of
recorded outputs (timing, sparsity, dominance).
``runset``: figures comparing the runs of ``make figures``.
``atlas``: the interactive per-run atlas.
``causal``: figures of the host-side analyses (ablation, propagation, logit and norm effects,
striation shares, residual magnitudes). Writing figures is ``irm_lens.export.save_figure``'s job.
"""

from irm_lens.plotting._common import TableError
from irm_lens.plotting.atlas import atlas_figure
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
from irm_lens.plotting.runset import (
    dominance_matrix_figure,
    evaluation_figure,
    logit_attribution_figure,
    timing_grid,
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
    "dominance_matrix_figure",
    "dominant_indices_figure",
    "evaluation_figure",
    "heatmap_figure",
    "heatmap_grid",
    "layer_topk_figure",
    "logit_attribution_figure",
    "logit_effect_figure",
    "massive_dims_figure",
    "norm_effect_figure",
    "propagation_figure",
    "sparsity_figure",
    "striation_figure",
    "timing_grid",
    "token_map_figure",
    "topk_timing_figure",
]
