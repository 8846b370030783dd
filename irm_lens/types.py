"""The one vocabulary of tensor shapes in irm_lens (jaxtyping aliases).

Dimension names follow TransformerLens (batch, pos, d_model, d_vocab, n_layers) plus ``inject``:
the axis of injected layers, ordered as ``IRM.layers``.
"""

from __future__ import annotations

from jaxtyping import Float, Int
from torch import Tensor

Residual = Float[Tensor, "batch pos d_model"]
IRMOutput = Float[Tensor, "inject batch pos d_model"]
IRMFlat = Float[Tensor, "batch pos d_model_x_inject"]
Tokens = Int[Tensor, "batch pos"]
Logits = Float[Tensor, "batch pos d_vocab"]

__all__ = ["IRMFlat", "IRMOutput", "Logits", "Residual", "Tokens"]
