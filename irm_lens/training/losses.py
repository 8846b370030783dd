"""Training losses: the correct next-token loss and the original code's."""

from __future__ import annotations

import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from irm_lens.data.batches import Batch
from irm_lens.training.config import LossKind, Objective


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


def _objective(kind: LossKind | Objective) -> Objective:
    return kind if isinstance(kind, Objective) else Objective(kind)


def _paper_targets(batch: Batch, o: Objective) -> Tensor | None:
    """Which of the paper loss's predictions count: None for all, else a ``[batch, pos]`` mask
    of those whose target is a real token."""
    return batch.attention_mask[:, o.offset :].bool() if o.padding == "masked" else None


def pads_to_max_len(kind: LossKind | Objective) -> bool:
    """Whether training rows are padded to ``max_len``: only where the padding counts (the
    original's EOS-padded 128-token rows). Masked padding adds no loss terms, and with causal
    attention and right padding the pad columns change no real position, so they are not built
    (the same loss at a fraction of the compute)."""
    o = _objective(kind)
    return o.kind == "paper" and o.padding == "counted"


def loss_terms(batch: Batch, kind: LossKind | Objective) -> int:
    """How many token predictions ``batch_loss`` averages over (the rows' answer tokens, or for
    the paper loss every position but the last ``offset``, padding targets left out when
    masked)."""
    o = _objective(kind)
    if o.kind == "paper":
        mask = _paper_targets(batch, o)
        if mask is not None:
            return int(mask.sum())
        rows, width = batch.tokens.shape
        return rows * max(width - o.offset, 0)
    return int(batch.answer_mask[:, 1:].sum())


def loss_sum(logits: Tensor, batch: Batch, kind: LossKind | Objective) -> Tensor:
    """The summed NLL of ``batch``'s predictions: a process holding some rows of a batch adds
    its sum and divides by the whole batch's ``loss_terms`` (distributed training)."""
    o = _objective(kind)
    if o.kind == "paper":
        pred, targets = logits[:, : -o.offset].float(), batch.tokens[:, o.offset :]
        mask = _paper_targets(batch, o)
        if mask is None:
            return F.cross_entropy(pred.flatten(0, 1), targets.flatten(), reduction="sum")
        if not mask.any():
            return logits.sum() * 0.0
        return F.cross_entropy(pred[mask], targets[mask], reduction="sum")
    mask = batch.answer_mask[:, 1:].bool()
    if not mask.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[:, :-1][mask].float(), batch.tokens[:, 1:][mask], reduction="sum")


def batch_loss(logits: Tensor, batch: Batch, kind: LossKind | Objective) -> Tensor:
    """The mean NLL over ``batch`` (bit-identical to ``loss_sum / loss_terms`` for the
    objectives as the original and the next-token runs use them)."""
    o = _objective(kind)
    if o == Objective("paper"):
        return paper_loss(logits, batch.tokens)
    if o.kind == "paper":
        return loss_sum(logits, batch, o) / max(loss_terms(batch, o), 1)
    return next_token_loss(logits, batch.tokens, batch.answer_mask)
