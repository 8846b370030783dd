"""Neuron-level lenses from the related work: what a residual direction or neuron does.

``decode``: LM-head decoding (project a direction, residual index or MLP neuron's output weights
through the final norm's gain and the unembedding), and clamping a neuron to validate it.
``attribute``: log-probability attribution of a prediction to neurons and heads ("value" and
"query" neurons), with activation x gradient as the baseline.
``channels``: SVD of heads' OV/QK circuits, composition scores, and residual indices in heads'
read/write subspaces.
"""

from irm_lens.lenses.attribute import activation_x_gradient, log_prob_attribution, query_neurons
from irm_lens.lenses.channels import composition_scores, head_svd, index_in_head_subspaces
from irm_lens.lenses.decode import (
    LensError,
    WholeModelDecoding,
    clamp_effect,
    clamp_neuron,
    concept_neurons,
    decode_directions,
    decode_index,
    decode_neurons,
    decoding_matrix,
    top_tokens_all,
    whole_model_table,
)

__all__ = [
    "LensError",
    "WholeModelDecoding",
    "activation_x_gradient",
    "clamp_effect",
    "clamp_neuron",
    "composition_scores",
    "concept_neurons",
    "decode_directions",
    "decode_index",
    "decode_neurons",
    "decoding_matrix",
    "head_svd",
    "index_in_head_subspaces",
    "log_prob_attribution",
    "query_neurons",
    "top_tokens_all",
    "whole_model_table",
]
