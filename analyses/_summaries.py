"""Typed summaries: what a result hands the report (and writes into its ``config.json``).

Each is a frozen dataclass; the analysis builds it, ``analyses._written.write_result`` stores it
as JSON, and the report reads it back with ``read_typed`` (a summary written by another version
fails clearly).
Verdict rules travel as ``rules.mechanism.Verdict`` (one) or ``Rules`` (one per loss kind);
per-run rows stay plain records (``by_run``: a table's rows, as ``data.csv`` holds them).
``index_profile``'s summary is keyed by the role of the index profiled, so it stays a mapping.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from analyses.rules.base import Verdict
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
    null_index_shares: list[float]
    null_layer_shares: list[float]
    null_cross_layer_corrs: list[float]
    signed_index_share_median: float
    signed_layer_share_median: float
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
    null_top1: list[int]
    null_ratios: list[float]
    null_gaps: list[float]
    ratio_by_run: dict[str, float]
    gap_by_run: dict[str, float]
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
    k_scaled: int
    aligned_runs: list[str]  # the next-token runs the medians are over (headline)
    scaled_by_run: dict[str, dict[str, float]]
    null_before_midpoint: list[float]
    null_before_midpoint_file_order: list[float]
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
    null_shares: list[float]
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


@dataclass(frozen=True)
class HostProfileSummary:
    d_model: int
    massive_dims: list[dict[str, Any]]  # the top 5 rows of the host's massive-dims table
    dominant_index: int
    dominant_is_massive: bool
    indices: dict[str, dict[str, float]]  # index -> final gain, its ranks, max |residual|
    median_final_gain: float
    smallest_gain_index: int


@dataclass(frozen=True)
class LogitAttributionSummary:
    dominant_index: int
    d_model: int
    entropy_shift_x8: dict[str, float]
    random_indices: list[int]
    random_entropy_shift_x8_median: float
    direct_effect_rank: dict[str, int]
    massive_index: int | None
    direct_max_abs_effect: dict[str, float]
    direct_top_promoted: dict[str, list[str]]
    share_of_predicted_logit_median: dict[str, float]
    centred_share_of_predicted_logit_median: dict[str, float]
    norm: dict[str, dict[str, float]]  # index -> entropy and final RMS at scales 0, 1, 8


@dataclass(frozen=True)
class AblationSummary:
    run: str
    emotion: str
    n_rows: int
    by_index: dict[str, dict[str, dict[str, float]]]  # index -> metric -> condition -> value
    own_top: dict[str, dict[str, Any]]  # run -> its top index, undone, controls
    own_top_undone_median: float
    own_controls_undone_median: float


@dataclass(frozen=True)
class EvaluationSummary:
    specificity: dict[str, dict[str, Any]]  # run -> ``Specificity.to_dict()``, own objective
    next_token: dict[str, dict[str, Any]]  # the same on the next-token target (host damage)
    # trained run -> the same on the questions its best-IRM selection did not read
    unselected: dict[str, dict[str, Any]]
    objective: dict[str, str]  # run -> the target its specificity is measured on
    aligned_runs: list[str]
    heldout_splits: list[str]
    by_run: dict[str, dict[str, Any]]  # run -> target emotion, NLL, NRC share, facts
    nll_drop_median: float
    runs_with_nll_drop: int
    n_trained: int
    eval_rows: int
    eval_tokens: int
    voice_accuracy: dict[str, dict[str, float]]  # "full" / "cut" -> ``voice.Accuracy`` fields


@dataclass(frozen=True)
class Fig4ComparisonSummary:
    runs: list[str]
    max_abs_mean_output: dict[str, float]
    trained_over_untrained: dict[str, float]


@dataclass(frozen=True)
class LensesSummary:
    dominant_index: int
    promoted_tokens: dict[str, list[str]]
    subspace_write_max_over_chance: dict[str, float]
    subspace_read_v_max_over_chance: dict[str, float]
    predicted_token: str
    top_value_units: list[str]
    top_direct_units: list[str]
    direct_top10_layers: list[int]
    top_value_neurons_weight_on_dominant: list[float]
    uniform_weight_share: float
    prompt: str
    axg_rank_of_top_value_neuron: int
    clamped_neuron: str
    clamp_prob_before: float
    clamp_prob_at_30: float
    clamp_top_token: str
    concept: dict[str, Any]  # the concept-neuron clamp check ("found" and, if so, its numbers)


@dataclass(frozen=True)
class RotationSummary:
    basis: Verdict  # where the dominant coordinate comes from (host basis vs IRM / optimizer)
    optimizer: Verdict  # does dominance need Adam (SGD control)
    margin: float
    min_runs: int
    sgd_lrs: list[float]
    sgd_lr_used: float
    rotation_seed: int
    aligned: dict[str, list[str]]  # setting -> its aligned runs
    by_run: list[dict[str, Any]]


@dataclass(frozen=True)
class MaskedSummary:
    verdict: Verdict  # are the dominant indices needed
    masked_top: list[int]
    masked_random: list[int]
    k: int
    margin: float
    min_loss: float
    substitutes: dict[str, dict[str, Any]]  # masked run -> its new top index and host facts
    by_run: list[dict[str, Any]]


@dataclass(frozen=True)
class MatrixSummary:
    same_index: Verdict
    early_layers: Verdict
    top1_aligned: dict[str, list[int]]  # layer set -> top index of each aligned run
    l1: dict[str, float]
    emotions: list[str]
    by_run: list[dict[str, Any]]


@dataclass(frozen=True)
class TrajectorySummary:
    runs: list[str]
    finished: bool
    schedule: list[int]
    budget_step: int | None
    budget_reason: str
    aligned_by_step: dict[str, int]  # step (as JSON keys it) -> aligned emotions there
    n_emotions: int
    seconds_per_step: dict[str, float]  # loss kind -> median training seconds per step
    seconds_by_run: dict[str, float]
    minutes_per_budget_step: float
    max_step_within_limit: int
    limit_min: float
    fixed_min: float
    # runs shown from an earlier invocation under another key (another schedule, say): their
    # rows stand until the tier runs again and redoes them
    earlier: list[str] = dataclasses.field(default_factory=list)


@dataclass(frozen=True)
class ExplainSummary:
    runs: list[str]  # the runs measured, in the tier's order
    finished: bool
    n_planned: int
    padding: Verdict  # does a shared top index appear only when padding counts?
    concentration: Rules  # padding counted / masked -> does dominance grow with training?
    cells: list[dict[str, Any]]  # per cell: aligned runs, modal top index, its share, shares
    null_ratio_median: float
    null_ratio_max: float
    null_gap_max: float
    null_tops: dict[str, int]  # untrained IRMs' top index -> how many of them
    seconds_by_run: dict[str, float]  # training seconds per step


@dataclass(frozen=True)
class LongerSummary:
    runs: list[str]  # the runs measured, in the result's order
    finished: bool
    n_planned: int
    concentration: Rules  # setting (and "all settings") -> does dominance grow with length?
    seeds: Verdict  # rules.explain.seed_rule: do two seeds' best IRMs share their top index?
    seconds_by_run: dict[str, float]  # training seconds per step


@dataclass(frozen=True)
class BaselinesSummary:
    specificity: Rules  # baseline -> rules.steering.vector_comparison against the IRM
    voice: Rules  # the same on the voice classifier's P(own voice)
    instructions: dict[str, str]  # emotion -> the prompting baseline's system instruction
    scales: list[float]  # the contrastive vector's scales tried on the validation questions
    contrast_rows: int  # training rows per voice the contrastive vector reads


@dataclass(frozen=True)
class SubspaceSummary:
    verdicts: Rules  # kind of pair -> rules.steering.subspace_rule against its control
    rank: int  # directions per output subspace
    chance: float  # two random subspaces' mean normalized projection kernel


@dataclass(frozen=True)
class WhySummary:
    verdicts: dict[str, str]  # candidate explanation -> its verdict ("not run" where not run)


@dataclass(frozen=True)
class SteeringSummary:
    verdict: Verdict  # rules.steering.steering_rule over the headline runs
    runs: list[str]  # the headline runs judged
    same_top: int  # of them, how many have the constant part's top index as their top index
    null_max: float  # the untrained IRMs' largest constant share
    vectors: Verdict  # rules.steering.vector_comparison: the exported vectors against the IRM
    bias: Verdict  # the same for a bias-only IRM trained like each run


@dataclass(frozen=True)
class PredictSummary:
    n_runs: int
    d_model: int
    rows_per_gradient: int
    fit_steps: int  # the bias-only fit's Adam steps
    validation: dict[str, dict[str, float]]  # score -> interventions.predict.Validation
    by_objective: dict[str, dict[str, dict[str, float]]]  # score -> objective -> the same
    verdicts: Rules  # score -> rules.explain.predictor_rule
    predicted: dict[str, int]  # "emotion / objective" -> the gradient's first index
    fitted: dict[str, int]  # "emotion / objective" -> the bias fit's largest index


def _field_value(kind: Any, raw: Any) -> Any:
    if kind is Verdict:
        return Verdict(**raw)
    if kind == Rules:
        return _rules(raw)
    return raw


def from_dict(cls: type[T], raw: dict[str, Any], source: str) -> T:
    """``cls`` from a summary dict; a dict missing a field (another version wrote it) fails
    with an error naming ``source`` and what to do."""
    kinds = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    optional = {
        f.name
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }
    missing = [n for n in names if n not in raw and n not in optional]
    if missing:
        raise IrmLensError(
            f"{source}: the summary lacks {missing} (written by another version of irm_lens). "
            "Run that result again: `python -m analyses --only <result>`."
        )
    return cls(**{n: _field_value(kinds[n], raw[n]) for n in names if n in raw})


def read_typed(out: Path, result: str, cls: type[T]) -> T | None:
    """The typed summary of ``result`` under ``out`` (None if that result was not run)."""
    path = out / result / "config.json"
    if not path.exists():
        return None
    return from_dict(cls, json.loads(path.read_text())["summary"], str(path))
