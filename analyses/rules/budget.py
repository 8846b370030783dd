"""The step budget of ``make figures``: the smallest snapshot step at which every emotion is
measurably aligned, among the steps that fit the time limit.

Pure functions over the trajectory table; ``analyses/trajectory.py`` trains the runs (saving the
IRM at a schedule of steps) and measures each snapshot (``irm_lens.measures.shape``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from irm_lens.measures.alignment import ALIGNED

COLUMNS = ("run", "emotion", "kind", "step", "verdict")


@dataclass(frozen=True)
class Budget:
    """The smallest snapshot step at which every emotion's IRM is aligned (specificity and
    own-voice drop CIs above 0), among the steps that fit the time limit; None when none does."""

    step: int | None
    reason: str
    aligned_by_step: dict[int, int]  # step -> how many of the emotions are aligned there
    n_emotions: int


def choose_budget(
    table: pd.DataFrame, emotions: Sequence[str], *, kind: str = "next-token", max_step: int
) -> Budget:
    """Pick the default budget from a trajectory ``table`` (one row per run and step with
    ``COLUMNS``): the smallest step > 0 at which the runs of every one of ``emotions`` (of
    ``kind``) are ``aligned``, considering only steps <= ``max_step`` (what fits the time limit)
    and only steps measured for every emotion."""
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"choose_budget: the trajectory table lacks columns {missing}.")
    if not emotions:
        raise ValueError("choose_budget: give at least one emotion.")
    rows = table[(table["kind"] == kind) & table["emotion"].isin(list(emotions))]
    rows = rows[rows["step"] > 0]
    counts: dict[int, int] = {}
    for step, group in rows.groupby("step"):
        if set(group["emotion"]) >= set(emotions):  # measured for every emotion
            every_run = group["verdict"].eq(ALIGNED).groupby(group["emotion"]).all()
            counts[int(step)] = int(every_run.sum())  # type: ignore[call-overload]
    n = len(set(emotions))
    if not counts:
        return Budget(None, f"no step is measured for all {n} emotions yet", counts, n)
    fits = sorted(s for s in counts if s <= max_step)
    good = [s for s in fits if counts[s] == n]
    if good:
        return Budget(
            good[0],
            f"the smallest step at which all {n} emotions are aligned, "
            f"within the time limit (steps <= {max_step})",
            counts,
            n,
        )
    later = [s for s in sorted(counts) if s > max_step and counts[s] == n]
    if later:
        why = (
            f"all {n} emotions align only from step {later[0]}, beyond the time limit "
            f"(steps <= {max_step})"
        )
    else:
        why = f"at no measured step are all {n} emotions aligned"
    return Budget(None, why, counts, n)


def minutes_at(step: int, *, fixed_min: float, per_step_min: float) -> float:
    """A cold ``make figures`` time at a budget of ``step`` steps per run: what does not depend
    on the budget plus ``per_step_min`` (every run's measured training minutes per step)."""
    return fixed_min + step * per_step_min


def largest_step_within(
    steps: Sequence[int], limit_min: float, *, fixed_min: float, per_step_min: float
) -> int:
    """The largest of ``steps`` whose ``minutes_at`` fits ``limit_min`` (0 when none does)."""
    fitting = [
        s
        for s in steps
        if minutes_at(s, fixed_min=fixed_min, per_step_min=per_step_min) <= limit_min
    ]
    return max(fitting, default=0)
