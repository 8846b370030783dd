"""Turning question/answer rows into padded token batches for training and evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor

from irm_lens.prompts import Encoded, PromptMode, encode


@dataclass(frozen=True)
class Batch:
    """A right-padded batch.

    Attributes:
        tokens: token ids, padded with the pad id (EOS, as in the original code).
        attention_mask: 1 for real tokens, 0 for padding.
        answer_mask: 1 where the token is part of the answer (its end token included).
    """

    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    answer_mask: Int[Tensor, "batch pos"]

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.tokens.to(device), self.attention_mask.to(device), self.answer_mask.to(device)
        )

    @property
    def n_real_tokens(self) -> int:
        return int(self.attention_mask.sum())


def pad_id(tokenizer: Any) -> int:
    """The id rows are padded with: the tokenizer's pad token, else EOS (as the original did)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pad)


def encode_rows(
    tokenizer: Any, rows: pd.DataFrame, mode: PromptMode, *, system: str | None = None
) -> list[Encoded]:
    """Encode each row's ``question`` and ``answer`` (see ``irm_lens.prompts.encode``)."""
    return [
        encode(tokenizer, q, a, mode=mode, system=system)
        for q, a in zip(rows["question"], rows["answer"], strict=True)
    ]


def collate(
    examples: Sequence[Encoded], pad_id: int, max_len: int, *, pad_to_max: bool = False
) -> Batch:
    """Truncate each example to ``max_len`` tokens and right-pad the batch with ``pad_id``.

    ``pad_to_max`` pads every row to ``max_len`` (the original code's fixed 128-token rows).
    """
    if not examples:
        raise ValueError("collate needs at least one example.")
    ids = [ex.ids[:max_len] for ex in examples]
    width = max_len if pad_to_max else max(len(x) for x in ids)
    tokens = torch.full((len(ids), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(ids), width), dtype=torch.long)
    answer = torch.zeros((len(ids), width), dtype=torch.long)
    for row, (ex, seq) in enumerate(zip(examples, ids, strict=True)):
        tokens[row, : len(seq)] = torch.tensor(seq)
        attention[row, : len(seq)] = 1
        answer[row, len(ex.prompt_ids) : len(seq)] = 1
    return Batch(tokens, attention, answer)


def left_pad(
    prompts: Sequence[Sequence[int]], pad_id: int
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Left-pad prompts for batched generation: ``(tokens, attention_mask)``, every row ending
    at the last column so that new tokens follow each prompt directly."""
    if not prompts:
        raise ValueError("left_pad needs at least one prompt.")
    width = max(len(p) for p in prompts)
    tokens = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(tokens)
    for row, ids in enumerate(prompts):
        tokens[row, width - len(ids) :] = torch.tensor(list(ids), dtype=torch.long)
        mask[row, width - len(ids) :] = 1
    return tokens, mask
