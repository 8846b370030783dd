"""Bootstrap 95 % CIs of a statistic over one sample, shared by the measures and the paper's rules.

Two flavours, kept apart because the numbers already published depend on which one a measure
uses: ``percentile_ci`` is scipy's percentile bootstrap of any statistic; ``resampled_median_ci``
draws the resamples itself and takes the 2.5th and 97.5th percentiles of their medians.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats


def percentile_ci(
    sample: np.ndarray, statistic: Callable[..., Any], *, seed: int = 0
) -> tuple[float, float, float]:
    """``statistic`` of the non-empty 1-D ``sample`` and its percentile bootstrap 95 % CI (scipy,
    2000 resamples drawn from ``seed``). A constant sample (one value, or all alike), which the
    bootstrap cannot resample, gets the statistic as both bounds."""
    value = float(statistic(sample))
    if sample.size == 1 or np.all(sample == sample[0]):
        return value, value, value
    ci = stats.bootstrap(
        (sample,),
        statistic,
        n_resamples=2000,
        method="percentile",
        random_state=np.random.default_rng(seed),
    ).confidence_interval
    return value, float(ci.low), float(ci.high)


def resampled_median_ci(
    values: Sequence[float], *, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Median of ``values`` with a bootstrap 95 % CI over them: the 2.5th and 97.5th percentiles
    of the medians of ``n_boot`` resamples drawn from ``seed``."""
    v = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    draws = np.median(v[rng.integers(0, len(v), (n_boot, len(v)))], axis=1)
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(np.median(v)), float(low), float(high)
