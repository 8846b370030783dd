"""Training losses: the correct next-token loss and the original code's."""

from __future__ import annotations

import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from irm_lens.data.batches import Batch
from irm_lens.training.config import LossKind


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


def loss_terms(batch: Batch, kind: LossKind) -> int:
    """How many token predictions ``batch_loss`` averages over (the rows' answer tokens, or every
    position but the last two for the paper loss)."""
    if kind == "paper":
        rows, width = batch.tokens.shape
        return rows * max(width - 2, 0)
    return int(batch.answer_mask[:, 1:].sum())


def loss_sum(logits: Tensor, batch: Batch, kind: LossKind) -> Tensor:
    """The summed NLL of ``batch``'s predictions: a process holding some rows of a batch adds
    its sum and divides by the whole batch's ``loss_terms`` (distributed training)."""
    if kind == "paper":
        return F.cross_entropy(
            logits[:, :-2].float().flatten(0, 1), batch.tokens[:, 2:].flatten(), reduction="sum"
        )
    mask = batch.answer_mask[:, 1:].bool()
    if not mask.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[:, :-1][mask].float(), batch.tokens[:, 1:][mask], reduction="sum")


def batch_loss(logits: Tensor, batch: Batch, kind: LossKind) -> Tensor:
    """The mean NLL over ``batch`` (bit-identical to ``loss_sum / loss_terms``)."""
    if kind == "paper":
        return paper_loss(logits, batch.tokens)
    return next_token_loss(logits, batch.tokens, batch.answer_mask)
