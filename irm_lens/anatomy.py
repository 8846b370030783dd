"""A host's anatomy read from its weights: the final norm's gain, the unembedding and the
direct logit effect of a residual index through both. The one place these are looked up, so
every caller gets the same checks (a host without a separate final norm is refused by name) and
the same dtype (float32, detached, on the host's device: ``.cpu()`` where needed).

What needs a forward pass (massive activations, super weights) is in
``irm_lens.interventions.host_profile``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jaxtyping import Float
from torch import Tensor

from irm_lens.errors import IrmLensError

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


class AnatomyError(IrmLensError, ValueError):
    """The host lacks a part the caller reads (a final norm with a gain)."""


def final_gain(host: TransformerBridge) -> Float[Tensor, " d_model"]:
    """The final norm's gain ``g`` per residual index (``ln_final.weight``)."""
    gain = getattr(getattr(host, "ln_final", None), "weight", None)
    if gain is None:
        raise AnatomyError(
            f"Host {getattr(host.cfg, 'model_name', '?')!r} has no separate final norm with a "
            "gain (ln_final.weight), so what a residual index does to the logits through it is "
            "undefined. Read the unembedding alone (irm_lens.anatomy.unembedding)."
        )
    return gain.detach().float()


def unembedding(host: TransformerBridge) -> Float[Tensor, "d_model d_vocab"]:
    """The unembedding ``W_U``."""
    return host.W_U.detach().float()


def decoding_matrix(host: TransformerBridge) -> Float[Tensor, "d_model d_vocab"]:
    """``diag(g) @ W_U``: row ``i`` is how much a unit push at residual index ``i`` moves each
    token's logit, before the final norm's 1/rms (which scales every logit alike)."""
    return final_gain(host)[:, None] * unembedding(host)


def direct_effect(host: TransformerBridge, index: int) -> Float[Tensor, " d_vocab"]:
    """Row ``index`` of ``decoding_matrix``: ``g[index] * W_U[index]``."""
    if not 0 <= index < host.cfg.d_model:
        raise AnatomyError(f"index {index} is out of range 0..{host.cfg.d_model - 1}.")
    return final_gain(host)[index] * unembedding(host)[index]
