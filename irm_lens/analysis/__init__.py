"""Pure analyses of recorded IRM outputs: tensors in, long-format pandas DataFrames out.

Every function takes one recorded prompt as ``outputs: [token, inject, d_model]`` (prompt tokens
then generated tokens), with ``kinds`` (``"prompt"``/``"generated"`` per token) and/or ``layers``
(the host layer of each inject slot). Nothing here prints, plots or writes files.

    heatmap, token_map, token_mask        average and per-token heat maps (paper Fig. 2)
    topk_timing, layer_topk               where the largest outputs fall (paper Fig. 3)
    sparsity_by_layer                     fraction of near-zero outputs per layer
    striation                             index vs layer share of variance, permutation test
    dominant_indices, index_rank          residual indices ranked by mean |output|
    dominance_consistency                 the dominant index across runs, seeds and prompts
    residual_profile, massive_dims        the host's massive-activation dims (needs the host)
    norm_gains                            final/per-layer norm gains and unembedding norms
    causal.*                              propagation, logit effects (need the host)
    ablation.ablation_study               ablating one index; dose-response of the IRM scale
"""

from irm_lens.analysis.ablation import ablation_study
from irm_lens.analysis.causal import (
    direct_logit_effect,
    index_logit_attribution,
    irm_index_propagation,
    logit_attribution,
    norm_mediated_effect,
    propagation,
)
from irm_lens.analysis.dominance import dominance_consistency, dominant_indices, index_rank
from irm_lens.analysis.host_profile import host_profile, massive_dims, norm_gains, residual_profile
from irm_lens.analysis.maps import (
    PAPER_TOKEN_SET,
    TOKEN_SETS,
    Recorded,
    heatmap,
    token_map,
    token_mask,
)
from irm_lens.analysis.striation import striation
from irm_lens.analysis.timing import layer_topk, sparsity_by_layer, topk_timing

__all__ = [
    "PAPER_TOKEN_SET",
    "TOKEN_SETS",
    "Recorded",
    "ablation_study",
    "direct_logit_effect",
    "dominance_consistency",
    "dominant_indices",
    "heatmap",
    "host_profile",
    "index_logit_attribution",
    "index_rank",
    "irm_index_propagation",
    "layer_topk",
    "logit_attribution",
    "massive_dims",
    "norm_gains",
    "norm_mediated_effect",
    "propagation",
    "residual_profile",
    "sparsity_by_layer",
    "striation",
    "token_map",
    "token_mask",
    "topk_timing",
]
