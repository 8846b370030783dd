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
    irm: Sequence[float], vectors: Sequence[float], what: str = "the vectors"
) -> Verdict:
    """Do steering vectors (``what``: an IRM's constant part exported, or a bias-only IRM
    trained alike) steer as specifically as the IRM? ``irm``/``vectors``: each run's
    specificity of the IRM and of the vectors, measured alike (the control is the IRM itself).
    On the paired differences (vectors minus IRM), the median with a bootstrap 95 % CI over
    runs: *vector more specific* when the CI lies above ``EQUIVALENT``, *IRM more specific*
    (what the IRM adds beyond a constant matters) when it lies below ``-EQUIVALENT``, *as
    specific* when it lies within +-``EQUIVALENT``, *undecided* otherwise; *not tested* with
    fewer than ``MIN_RUNS`` runs."""
    pairs = [(a, b) for a, b in zip(irm, vectors, strict=True) if np.isfinite(a) and np.isfinite(b)]
    if len(pairs) < MIN_RUNS:
        return Verdict(
            NOT_TESTED, f"needs {MIN_RUNS} runs measured both ways; got {len(pairs)}", {}
        )
    diffs = [b - a for a, b in pairs]
    median, low, high = resampled_median_ci(diffs)
    better = sum(d > 0 for d in diffs)
    effects = {"median": median, "low": low, "high": high, "vector_better": float(better)}
    text = (
        f"specificity of {what} minus the IRM's, per run: median {100 * median:+.1f} points "
        f"[95 % CI {100 * low:+.1f}, {100 * high:+.1f}] over {len(pairs)} runs ({what} more "
        f"specific in {better}; alike within +-{100 * EQUIVALENT:.0f} points)"
    )
    if low > EQUIVALENT:
        return Verdict("vector more specific", text, effects)
    if high < -EQUIVALENT:
        return Verdict("IRM more specific", text, effects)
    if low >= -EQUIVALENT and high <= EQUIVALENT:
        return Verdict("as specific", text, effects)
    return Verdict("undecided", text, effects)
