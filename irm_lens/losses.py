"""Training losses: the correct next-token loss and the original code's."""

from __future__ import annotations

import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from irm_lens.batches import Batch
from irm_lens.config import LossKind


def next_token_loss(
    logits: Float[Tensor, "batch pos d_vocab"],
    tokens: Int[Tensor, "batch pos"],
    answer_mask: Int[Tensor, "batch pos"],
) -> Float[Tensor, ""]:
    """Mean NLL of the answer tokens, each predicted from the position before it."""
    mask = answer_mask[:, 1:].bool()
    if not mask.any():
        return logits.sum() * 0.0
    # Only the answer positions go through the softmax: a fraction of the vocab-wide memory.
    return F.cross_entropy(logits[:, :-1][mask].float(), tokens[:, 1:][mask])


def paper_loss(
    logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"]
) -> Float[Tensor, ""]:
    """The original code's loss: every position (padding included) predicts the token 2 ahead.

    Its dataset shifted the labels once and the model shifted them again.
    """
    return F.cross_entropy(logits[:, :-2].float().flatten(0, 1), tokens[:, 2:].flatten())


def batch_loss(logits: Tensor, batch: Batch, kind: LossKind) -> Tensor:
    if kind == "paper":
        return paper_loss(logits, batch.tokens)
    return next_token_loss(logits, batch.tokens, batch.answer_mask)
