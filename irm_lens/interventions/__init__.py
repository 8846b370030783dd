"""Interventions on the host: these run the host model, where ``irm_lens.measures`` only computes
on recorded outputs.

    residual_profile, massive_dims, norm_gains, host_profile   where an index sits in the host
    propagation, irm_index_propagation                          a push at an index, layer by layer
    direct_logit_effect, index_logit_attribution, logit_attribution, norm_mediated_effect
                                                                its effect on the logits
    index_in_host                                               all of these for one index
    ablation_study                                              ablating one index
    index_profile                                               an index's profile and norm lever
"""

from irm_lens.interventions.ablation import ablation_study
from irm_lens.interventions.causal import (
    direct_logit_effect,
    index_in_host,
    index_logit_attribution,
    irm_index_propagation,
    logit_attribution,
    norm_mediated_effect,
    propagation,
)
from irm_lens.interventions.host_profile import (
    host_profile,
    massive_dims,
    norm_gains,
    residual_profile,
)

__all__ = [
    "ablation_study",
    "direct_logit_effect",
    "host_profile",
    "index_in_host",
    "index_logit_attribution",
    "irm_index_propagation",
    "logit_attribution",
    "massive_dims",
    "norm_gains",
    "norm_mediated_effect",
    "propagation",
    "residual_profile",
]
