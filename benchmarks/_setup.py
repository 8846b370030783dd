"""Set-up the benchmarks share: their integer options, and a batch of random token ids."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def int_options(description: str | None, **defaults: int) -> argparse.Namespace:
    """The command line of a benchmark whose options are all whole numbers: ``--name N`` for
    each of ``defaults`` in order (``max_new_tokens=40``: ``--max-new-tokens``, default 40)."""
    parser = argparse.ArgumentParser(description=description)
    for name, default in defaults.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=default)
    return parser.parse_args()


def random_tokens(host: TransformerBridge, batch: int, pos: int) -> torch.Tensor:
    """``[batch, pos]`` token ids drawn uniformly from the host's vocabulary (seed 0)."""
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, host.cfg.d_vocab, (batch, pos), generator=gen)
