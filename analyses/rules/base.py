"""What every rule returns, and the run count every comparison needs."""

from __future__ import annotations

from dataclasses import dataclass

MIN_RUNS = 2
"""Aligned runs a comparison needs on each side."""


@dataclass(frozen=True)
class Verdict:
    """A rule's outcome: the verdict, why, and the effect sizes it was decided on."""

    verdict: str
    reason: str
    effects: dict[str, float]
