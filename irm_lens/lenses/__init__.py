"""Neuron-level lenses from the related work: what a residual direction or neuron does.

``decode``: LM-head decoding (project a direction, residual index or MLP neuron's output weights
through the final norm's gain and the unembedding), and clamping a neuron to validate it.
"""

from irm_lens.lenses.decode import (
    LensError,
    clamp_neuron,
    decode_directions,
    decode_index,
    decode_neurons,
    decoding_matrix,
    top_tokens_all,
)

__all__ = [
    "LensError",
    "clamp_neuron",
    "decode_directions",
    "decode_index",
    "decode_neurons",
    "decoding_matrix",
    "top_tokens_all",
]
