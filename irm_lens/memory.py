"""Keeping CPU training within memory: stop glibc from hoarding freed tensor memory.

glibc raises its mmap threshold after large frees, after which big tensors come from the heap,
and freed activations stay resident between steps. Fixing the threshold returns them to the OS
at once. Measured on the embedded host (batch 8 x 128, benchmarks/RESULTS.md): peak RSS 3.9-4.0
GiB without it, 3.8 GiB with the default 4 MiB threshold at the same speed, 3.2-3.3 GiB with
1 MiB but about 12 % slower steps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

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
