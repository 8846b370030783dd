"""What every rule returns, and the run count every comparison needs."""

from __future__ import annotations

from dataclasses import dataclass

MIN_RUNS = 2
"""Aligned runs a comparison needs on each side."""

NOT_TESTED = "not tested"
"""Every rule's verdict when the evidence cannot decide."""
REPRODUCED, PARTLY, NOT = "reproduced", "partly reproduced", "not reproduced"
CLAIM_VERDICTS = (REPRODUCED, PARTLY, NOT, NOT_TESTED)
"""The verdicts of a claim of the paper."""


@dataclass(frozen=True)
class Verdict:
    """A rule's outcome: the verdict, why, and the effect sizes it was decided on."""

    verdict: str
    reason: str
    effects: dict[str, float]
