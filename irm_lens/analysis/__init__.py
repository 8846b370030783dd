"""Pure analyses of recorded IRM outputs: tensors in, long-format pandas DataFrames out.

Every function takes one recorded prompt as ``outputs: [token, inject, d_model]`` (prompt tokens
then generated tokens), with ``kinds`` (``"prompt"``/``"generated"`` per token) and/or ``layers``
(the host layer of each inject slot). Nothing here runs the host, prints, plots or writes files
(what runs the host is in ``irm_lens.interventions``).

    heatmap, token_map, token_mask        average and per-token heat maps (paper Fig. 2)
    topk_timing, layer_topk               where the largest outputs fall (paper Fig. 3)
    sparsity_by_layer                     fraction of near-zero outputs per layer
    striation                             index vs layer share of variance, permutation test
    dominant_indices, index_rank          residual indices ranked by mean |output|
    dominance_consistency                 the dominant index across runs, seeds and prompts
    analyze_recordings                    all of the above for one run's recorded prompts
    alignment, mechanism, verdicts        specificity, output shapes, the claims' rules
    trajectory                            the output shape per snapshot and the budget rule
"""

from irm_lens.analysis.dominance import dominance_consistency, dominant_indices, index_rank
from irm_lens.analysis.maps import (
    PAPER_TOKEN_SET,
    TOKEN_SETS,
    Recorded,
    heatmap,
    token_map,
    token_mask,
)
from irm_lens.analysis.recorded import analyze_recordings
from irm_lens.analysis.striation import striation
from irm_lens.analysis.timing import layer_topk, sparsity_by_layer, topk_timing

__all__ = [
    "PAPER_TOKEN_SET",
    "TOKEN_SETS",
    "Recorded",
    "analyze_recordings",
    "dominance_consistency",
    "dominant_indices",
    "heatmap",
    "index_rank",
    "layer_topk",
    "sparsity_by_layer",
    "striation",
    "token_map",
    "token_mask",
    "topk_timing",
]
