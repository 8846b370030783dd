"""Keeping training within memory: glibc's allocator on CPU, activation checkpointing.

glibc raises its mmap threshold after large frees, after which big tensors come from the heap,
and freed activations stay resident between steps. Fixing the threshold returns them to the OS
at once. Measured on the embedded host (batch 8 x 128, benchmarks/RESULTS.md): peak RSS 3.9-4.0
GiB without it, 3.8 GiB with the default 4 MiB threshold at the same speed, 3.2-3.3 GiB with
1 MiB but about 12 % slower steps.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
from collections.abc import Iterable, Iterator
from typing import Any

from torch.utils.checkpoint import checkpoint

_M_MMAP_THRESHOLD = -3
DEFAULT_THRESHOLD = 4 << 20


def cap_allocator_cache(threshold: int | None = None) -> bool:
    """Fix glibc's mmap threshold (``$IRM_LENS_MMAP_THRESHOLD`` bytes; 0 disables).

    Process-wide and harmless elsewhere: returns False (doing nothing) off glibc.
    """
    if threshold is None:
        threshold = int(os.environ.get("IRM_LENS_MMAP_THRESHOLD", DEFAULT_THRESHOLD))
    if threshold <= 0:
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False


_CACHE_KWARGS = ("past_key_values", "past_key_value", "cache", "layer_past")


def _recomputed(forward: Any, *args: Any, **kwargs: Any) -> Any:
    # A KV cache would be appended to twice (forward and recomputation): training forwards
    # start from an empty cache, so leaving it out changes nothing but that.
    for key in _CACHE_KWARGS:
        if kwargs.get(key) is not None:
            kwargs[key] = None
    if "use_cache" in kwargs:
        kwargs["use_cache"] = False
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


@contextlib.contextmanager
def checkpoint_blocks(host: Any, skip: Iterable[int] = (0,)) -> Iterator[None]:
    """Recompute the host's blocks in the backward pass instead of keeping their activations.

    Each block's ``forward`` is wrapped in non-reentrant ``torch.utils.checkpoint`` for the
    block: the hooks inside a block (the IRM's injection) run again on recomputation with the
    same inputs, so gradients are unchanged. Block 0 is skipped by default: the IRM itself runs
    inside its hooks and is not recomputed. The blocks are restored on exit.
    """
    skipped = set(skip)
    patched = []
    try:
        for index, block in enumerate(host.blocks):
            if index in skipped:
                continue
            wrapped = functools.partial(_recomputed, block.forward)
            # object's setattr: the bridge's own would hand the attribute to the HF layer inside
            object.__setattr__(block, "forward", wrapped)
            patched.append(block)
        yield
    finally:
        for block in patched:
            object.__delattr__(block, "forward")  # the class's forward shows again
