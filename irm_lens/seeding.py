"""One way to seed: ``with seeded(seed):`` runs a block on a fork of torch's random streams."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run the block with torch's CPU and CUDA generators seeded with ``seed``, then restore the
    streams as they were, so code around it draws what it would have drawn without the block.
    ``None`` leaves the generators alone."""
    if seed is None:
        yield
        return
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)  # every CUDA device too
        yield
