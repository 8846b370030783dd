"""Typed summaries: what a result hands the report (and writes into its ``config.json``).

Each is a frozen dataclass; the analysis builds it, ``Context.write`` stores it as JSON, and the
report reads it back with ``read_typed`` (a summary written by another version fails clearly).
Verdict rules travel as ``analysis.mechanism.Verdict`` per loss kind.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from irm_lens.analysis.mechanism import Verdict
from irm_lens.errors import IrmLensError

Rules = dict[str, Verdict]
"""A claim's verdict per loss kind (``next-token``, ``paper loss``)."""

T = TypeVar("T")


def _rules(raw: dict[str, Any]) -> Rules:
    return {kind: Verdict(**v) for kind, v in raw.items()}


@dataclass(frozen=True)
class StriationSummary:
    n_trained: int
    n_headline: int
    headline_aligned: bool
    index_share_median: float
    layer_share_median: float
    index_over_layer_runs: int
    significant_runs: int
    cross_layer_corr_median: float
    untrained_index_share: float
    untrained_cross_layer_corr: float
    above_untrained_runs: int
    p_min_possible: float
    rules: Rules


@dataclass(frozen=True)
class DominanceSummary:
    top1_by_run: dict[str, int]
    dominant_index: int
    dominant_top1_runs: int
    n_trained: int
    n_headline: int
    headline_aligned: bool
    dominant_share_median: float
    dominant_rank_by_run: dict[str, int]
    top1_share_median: float
    uniform_share: float
    untrained_top1: int
    host_massive_dims: list[int]
    massive_rank_by_run: dict[str, dict[str, int]]
    top1_heldout_by_run: dict[str, int]
    mean_top5_jaccard: float
    top1_frequencies: list[dict[str, Any]]
    aligned_runs: dict[str, list[str]]
    consistency_rules: Rules
    dominance_rules: Rules


@dataclass(frozen=True)
class TimingSummary:
    k: int
    by_run: dict[str, dict[str, float]]
    n_headline: int
    headline_aligned: bool
    trained_before_midpoint_min: float
    trained_before_midpoint_median: float
    trained_before_midpoint_file_order_median: float
    untrained_before_midpoint: float
    untrained_before_midpoint_file_order: float
    generated_tokens_median: float
    generated_tokens_min: int
    shown_prompt: str
    heldout_before_midpoint: float
    heldout_on_prompt: float
    trained_on_prompt_median: float
    trained_on_first_token_median: float
    rules: Rules


@dataclass(frozen=True)
class PropagationSummary:
    dominant_index: int
    positions: str
    linearity_median: float
    persistence_median: dict[str, float]
    random_persistence_median: float
    final_layer_persistence: dict[str, float]
    irm_run: str
    irm_carried_median: float
    irm_leak_median: float


@dataclass(frozen=True)
class ResidualControlSummary:
    control_share: float
    shares: dict[str, dict[str, list[float]]]  # kind -> {"delta": [...], "output": [...]}
    by_run: list[dict[str, Any]]


@dataclass(frozen=True)
class MediationSummary:
    dominant_index: int
    lever_percentile: float
    lever_dominant: float
    lever_median: float
    lever_top_indices: list[int]
    massive_index: int | None
    lever_massive_percentile: float | None
    by_kind: dict[str, dict[str, list[Any]]]  # kind -> runs, gains, frozen_gains
    n_positions: int


_RULE_FIELDS = ("rules", "consistency_rules", "dominance_rules")


def from_dict(cls: type[T], raw: dict[str, Any], source: str) -> T:
    """``cls`` from a summary dict; a dict missing a field (another version wrote it) fails
    with an error naming ``source`` and what to do."""
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    missing = [n for n in names if n not in raw]
    if missing:
        raise IrmLensError(
            f"{source}: the summary lacks {missing} (written by another version of irm_lens). "
            "Run that result again: `python -m analyses --only <result>`."
        )
    values = {n: _rules(raw[n]) if n in _RULE_FIELDS else raw[n] for n in names}
    return cls(**values)


def read_typed(out: Path, result: str, cls: type[T]) -> T | None:
    """The typed summary of ``result`` under ``out`` (None if that result was not run)."""
    path = out / result / "config.json"
    if not path.exists():
        return None
    return from_dict(cls, json.loads(path.read_text())["summary"], str(path))
