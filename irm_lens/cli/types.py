"""Argument types for the command line: numbers at their edges are refused by argparse, which
names the option (``argument --top-k: must be at least 1, got 0``) and exits with code 2."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def seed(text: str) -> int:
    """A ``--seed``: a whole number from 0 to 2**32 - 1."""
    from irm_lens.training.modes import MAX_SEED

    value = at_least(0)(text)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SEED} (2**32 - 1), got {value}")
    return value


def at_least(low: int) -> Callable[[str], int]:
    """An ``int`` option that must be ``>= low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = f"int>={low}"
    return parse


def positive_float(text: str) -> float:
    """A finite ``float`` option that must be ``> 0``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def index_list(text: str) -> tuple[int, ...]:
    """Comma-separated residual indices (``270,507``), each ``>= 0``."""
    try:
        values = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated whole numbers (e.g. 270,507), got {text!r}"
        ) from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected indices >= 0, got {text!r}")
    return values


DEVICE_KINDS = ("cpu", "cuda", "mps", "xpu")


def device(text: str) -> str:
    """A ``--device`` torch can place a host on: ``cpu``, ``cuda``, ``cuda:1``, ``mps``, ...
    (``meta`` holds no weights, and a name torch does not know is refused before any work)."""
    kind, _, index = text.partition(":")
    if kind not in DEVICE_KINDS or (index and not index.isdigit()):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a device a host can run on; use one of {', '.join(DEVICE_KINDS)}"
            " (with :N for one of several GPUs), or leave it out"
        )
    return text
