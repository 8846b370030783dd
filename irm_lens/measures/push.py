"""What an IRM's push at one residual index does: its signed size, and its direct effect on
one token's logit through the final norm and the unembedding."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor


def signed_push(outputs: Sequence[Tensor], index: int) -> float:
    """The IRM's mean signed output at ``index`` per token, summed over the injected layers:
    what it adds to the residual stream's ``index`` by the last layer."""
    pooled = torch.cat([o.double() for o in outputs], dim=0)
    return float(pooled[:, :, index].sum(dim=1).mean())


def direct_token_z(
    gain: Float[Tensor, " d_model"],
    w_u: Float[Tensor, "d_model d_vocab"],
    index: int,
    token: int,
    sign: float = 1.0,
) -> float:
    """How much a push of sign ``sign`` at residual ``index`` raises ``token``'s logit over the
    vocabulary's, through the final norm's gain and the unembedding (a z-score over the
    vocabulary; > 0: the push favours ``token``). The norm's 1/rms scales every logit alike."""
    effect = gain[index].double() * w_u[index].double() * (1.0 if sign >= 0 else -1.0)
    return float((effect[token] - effect.mean()) / effect.std())
