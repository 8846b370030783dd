"""Measures of recorded IRM outputs: tensors in, numbers or long-format pandas DataFrames out.

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
    dominance_ratio, top_two              the top index's share of |output| and its lead
    shape.output_shape                    top index, dominance and striation in one record
    push                                  the top index's signed push and direct logit effect
    steering                              the constant (steering-vector) part of the outputs
    alignment, voice                      specificity with CIs; the behavioural voice classifier
    bootstrap                             the bootstrap 95 % CIs measures and rules share

The rules that judge these numbers against the paper's claims belong to the paper's pipeline
(``analyses/rules``), not here.
"""

from irm_lens.measures.dominance import dominance_consistency, dominant_indices, index_rank
from irm_lens.measures.maps import (
    PAPER_TOKEN_SET,
    TOKEN_SETS,
    Recorded,
    heatmap,
    token_map,
    token_mask,
)
from irm_lens.measures.recorded import analyze_recordings
from irm_lens.measures.striation import striation
from irm_lens.measures.timing import layer_topk, sparsity_by_layer, topk_timing

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
