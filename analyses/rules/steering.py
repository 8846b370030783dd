"""Is an IRM a fixed steering vector? ``steering_rule`` compares the trained IRMs'
``irm_lens.measures.steering.constant_share`` with the untrained IRMs'."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from analyses.rules.base import MIN_RUNS, NOT_TESTED, Verdict
from irm_lens.measures.bootstrap import resampled_median_ci

STEERING = 0.8  # a steering vector: the constant explains at least this share
MOSTLY = 0.5
STEERING_VERDICTS = (
    "steering vector",
    "mostly constant",
    "as constant as untrained",
    "input-dependent",
    NOT_TESTED,
)


def steering_rule(trained: Sequence[float], null: Sequence[float]) -> Verdict:
    """Is the trained IRMs' output a fixed steering vector? ``trained``: each aligned IRM's
    ``constant_share``; ``null``: the untrained IRMs' (an untrained MLP's biases give it a
    constant part too). With the median's 95 % CI above the null's largest share: *steering
    vector* when the CI is at least ``STEERING``, *mostly constant* when the median is at least
    ``MOSTLY``. *as constant as untrained* when the median is at least ``MOSTLY`` but the CI
    reaches the null (the constancy is the architecture's, not training's); *input-dependent*
    when the median is below ``MOSTLY``; *not tested* with fewer than ``MIN_RUNS`` runs."""
    values = [v for v in trained if np.isfinite(v)]
    null_max = max((v for v in null if np.isfinite(v)), default=float("nan"))
    if len(values) < MIN_RUNS:
        return Verdict(NOT_TESTED, f"needs {MIN_RUNS} aligned IRMs; got {len(values)}", {})
    median, low, high = resampled_median_ci(values)
    effects = {"median": median, "low": low, "high": high, "null max": null_max}
    text = (
        f"The constant part explains {median:.2f} [{low:.2f}, {high:.2f}] of the outputs' sum "
        f"of squares over {len(values)} aligned IRMs (untrained IRMs: at most {null_max:.2f})"
    )
    if median < MOSTLY:
        return Verdict("input-dependent", text, effects)
    if np.isfinite(null_max) and low <= null_max:
        return Verdict("as constant as untrained", text, effects)
    return Verdict("steering vector" if low >= STEERING else "mostly constant", text, effects)


EQUIVALENT = 0.02
"""Specificity points (a fraction) within which a steering vector and its IRM count as alike."""
VECTOR_VERDICTS = (
    "vector more specific",
    "as specific",
    "IRM more specific",
    "undecided",
    NOT_TESTED,
)


def vector_comparison(
    irm: Sequence[float],
    vectors: Sequence[float],
    what: str = "the vectors",
    *,
    measure: str = "specificity",
    unit: str = "run",
) -> Verdict:
    """Do steering vectors (``what``: an IRM's constant part exported, or a bias-only IRM
    trained alike) steer as specifically as the IRM? ``irm``/``vectors``: each run's (or other
    ``unit``'s) ``measure`` of the IRM and of the vectors, measured alike (the control is the
    IRM itself; the verdicts name specificity, the same thresholds serve any share).
    On the paired differences (vectors minus IRM), the median with a bootstrap 95 % CI over
    runs: *vector more specific* when the CI lies above ``EQUIVALENT``, *IRM more specific*
    (what the IRM adds beyond a constant matters) when it lies below ``-EQUIVALENT``, *as
    specific* when it lies within +-``EQUIVALENT``, *undecided* otherwise; *not tested* with
    fewer than ``MIN_RUNS`` runs."""
    pairs = [(a, b) for a, b in zip(irm, vectors, strict=True) if np.isfinite(a) and np.isfinite(b)]
    if len(pairs) < MIN_RUNS:
        return Verdict(
            NOT_TESTED, f"needs {MIN_RUNS} {unit}s measured both ways; got {len(pairs)}", {}
        )
    diffs = [b - a for a, b in pairs]
    median, low, high = resampled_median_ci(diffs)
    better = sum(d > 0 for d in diffs)
    effects = {"median": median, "low": low, "high": high, "vector_better": float(better)}
    text = (
        f"{measure} of {what} minus the IRM's, per {unit}: median {100 * median:+.1f} points "
        f"[95 % CI {100 * low:+.1f}, {100 * high:+.1f}] over {len(pairs)} {unit}s ({what} "
        f"higher in {better}; alike within +-{100 * EQUIVALENT:.0f} points)"
    )
    if low > EQUIVALENT:
        return Verdict("vector more specific", text, effects)
    if high < -EQUIVALENT:
        return Verdict("IRM more specific", text, effects)
    if low >= -EQUIVALENT and high <= EQUIVALENT:
        return Verdict("as specific", text, effects)
    return Verdict("undecided", text, effects)


SUBSPACE_VERDICTS = ("shared beyond the null", "as the null", "undecided", NOT_TESTED)


def subspace_rule(trained: Sequence[float], null: Sequence[float], chance: float) -> Verdict:
    """Do the pairs of one kind share their top output subspaces beyond what untrained IRMs in
    the same place share? ``trained``: the pairs' normalized projection kernels; ``null``: the
    same with an untrained IRM in the trained one's place (the control); ``chance``: two random
    subspaces' mean (shown, not the bar: untrained MLPs are not random subspaces). *shared
    beyond the null* when the median's 95 % CI lies above the null's largest value, *as the
    null* when the CI reaches down to the null's median, *undecided* otherwise; *not tested*
    with fewer than ``MIN_RUNS`` pairs or no control."""
    values = [v for v in trained if np.isfinite(v)]
    control = [v for v in null if np.isfinite(v)]
    if len(values) < MIN_RUNS or not control:
        return Verdict(NOT_TESTED, f"needs {MIN_RUNS} pairs and a control; got {len(values)}", {})
    median, low, high = resampled_median_ci(values)
    null_max, null_median = max(control), float(np.median(control))
    effects = {
        "median": median,
        "low": low,
        "high": high,
        "null max": null_max,
        "null median": null_median,
        "chance": chance,
    }
    text = (
        f"normalized projection kernel median {median:.3f} [{low:.3f}, {high:.3f}] over "
        f"{len(values)} pairs; untrained in their place: median {null_median:.3f}, max "
        f"{null_max:.3f} (n={len(control)}); two random subspaces: {chance:.3f}"
    )
    if low > null_max:
        return Verdict("shared beyond the null", text, effects)
    if low <= null_median:
        return Verdict("as the null", text, effects)
    return Verdict("undecided", text, effects)
