"""The paper's claims as rules that can fail: each states an effect size against a control and
returns ``reproduced`` / ``partly reproduced`` / ``not reproduced``, or ``not tested`` when the
evidence cannot decide (too few aligned runs, or nothing for the claim to be about).

Every rule takes numbers measured on **aligned runs only** (``measures.alignment``) and of one
loss kind; the report calls it once per kind. Thresholds are module constants, so a reader sees
them in one place and the tests build inputs on both sides of each.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from analyses.rules.base import (
    CLAIM_VERDICTS,
    MIN_RUNS,
    NOT,
    NOT_TESTED,
    PARTLY,
    REPRODUCED,
    Verdict,
)
from irm_lens.measures.bootstrap import percentile_ci

VERDICTS = CLAIM_VERDICTS

STRONG_SHARE = 0.5
"""Striation: the index share of variance (and the cross-layer correlation) of a map a reader
would call striped: most of its variance lies in whole columns."""
MIN_SHARE_EFFECT = 0.05
"""Striation: how far the index share must lie above the untrained IRM's (CI lower bound)."""
MIN_CORR_EFFECT = 0.1
"""Striation: how far the cross-layer correlation must lie above the untrained IRM's."""
DOMINANT_GAP = 2.0
"""Dominance: how many times the runner-up index's share of |output| the top index must carry to
dominate. A ratio of two shares means the same at any d_model (576 here, 4096 on Llama-2-7B)."""
OVERLAP_OVER_CHANCE = 5.0
"""Dominance: how many times the chance level the runs' top-k overlap must reach to be shared."""


def median_ci(values: Sequence[float], *, seed: int = 0) -> tuple[float, float, float]:
    """Median of ``values`` and a percentile bootstrap 95 % CI over them (NaNs for none; the
    median as both bounds for one value)."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return math.nan, math.nan, math.nan
    return percentile_ci(data, np.median, seed=seed)


def too_few(n: int, min_runs: int, what: str = "aligned runs") -> Verdict | None:
    if n < min_runs:
        return Verdict(NOT_TESTED, f"needs {min_runs} {what}; got {n}", {"n_runs": float(n)})
    return None


def against_null(value: float, null: Sequence[float]) -> dict[str, float]:
    """Where ``value`` stands among the untrained IRMs' values ``null``: their median and
    maximum, the share of them below ``value`` (its percentile) and its z-score (NaN with fewer
    than two null values or none apart)."""
    data = np.asarray(null, dtype=float)
    if data.size == 0:
        raise ValueError("against_null needs at least one untrained IRM's value.")
    spread = float(np.std(data, ddof=1)) if data.size > 1 else 0.0
    z = (value - float(np.mean(data))) / spread if spread > 0 else math.nan
    return {
        "null_median": float(np.median(data)),
        "null_max": float(np.max(data)),
        "percentile": float(np.mean(data < value)),
        "z": z,
        "n_null": float(data.size),
    }


def null_text(null: dict[str, float], fmt: str = ".3f") -> str:
    z = "" if math.isnan(null["z"]) else f", z {null['z']:.1f}"
    return (
        f"untrained null (n={null['n_null']:.0f}) median {null['null_median']:{fmt}}, "
        f"max {null['null_max']:{fmt}}{z}"
    )


def striation_rule(
    index_shares: Sequence[float],
    layer_shares: Sequence[float],
    corrs: Sequence[float],
    null_shares: Sequence[float],
    null_corrs: Sequence[float],
    *,
    signed: tuple[Sequence[float], Sequence[float]] | None = None,
    min_runs: int = MIN_RUNS,
) -> Verdict:
    """Vertical striations as the paper states them: large outputs associated with a residual
    index "rather than with the layers themselves".

    Per aligned run, the index share and the layer share of the variance of its mean |output|
    map and the cross-layer correlation of its index profiles; ``null_*``: the same of the
    untrained IRMs (the null); ``signed``: the index and layer shares of the signed mean map
    (the paper's Fig. 2), per run, where measured.

    *Beyond the null*: the median index share's CI lies above every untrained IRM's share and
    ``MIN_SHARE_EFFECT`` above the null's median, or the median correlation lies above every
    untrained IRM's and ``MIN_CORR_EFFECT`` above the null's median. *By index*: the median of
    each run's index share minus its layer share is above 0 (its CI above 0 for reproduced).
    Reproduced: the index share beyond the null (its CI test; the correlation alone is not
    enough), by index (on the signed map too, where given), median index share and correlation
    >= ``STRONG_SHARE``. Partly (weak stripes): beyond the null and by
    index. Not reproduced otherwise, also when the structure beyond the null is organised by
    layer more than by index.
    """
    if (few := too_few(len(index_shares), min_runs)) is not None:
        return few
    share, low, high = median_ci(index_shares)
    gap, gap_low, gap_high = median_ci(np.subtract(index_shares, layer_shares).tolist())
    corr = float(np.median(corrs))
    share_null, corr_null = against_null(low, null_shares), against_null(corr, null_corrs)
    share_beyond = low > share_null["null_max"] and (
        low - share_null["null_median"] >= MIN_SHARE_EFFECT
    )
    corr_beyond = corr > corr_null["null_max"] and (
        corr - corr_null["null_median"] >= MIN_CORR_EFFECT
    )
    effects = {
        "index_share": share,
        "index_share_low": low,
        "index_share_high": high,
        "layer_share": float(np.median(layer_shares)),
        "index_minus_layer": gap,
        "index_minus_layer_low": gap_low,
        "index_minus_layer_high": gap_high,
        "control_share": share_null["null_median"],
        "null_share_max": share_null["null_max"],
        "share_effect_low": low - share_null["null_median"],
        "cross_layer_corr": corr,
        "control_corr": corr_null["null_median"],
        "null_corr_max": corr_null["null_max"],
        "corr_effect": corr - corr_null["null_median"],
        "n_null": share_null["n_null"],
        "n_runs": float(len(index_shares)),
    }
    measures = (
        f"median index share {share:.3f} [95 % CI {low:.3f}, {high:.3f}] vs layer share "
        f"{effects['layer_share']:.3f} (index minus layer, per run: median {gap:+.3f} [95 % CI "
        f"{gap_low:+.3f}, {gap_high:+.3f}]); {null_text(share_null)}; cross-layer correlation "
        f"{corr:.3f} vs the null's median {corr_null['null_median']:.3f}, max "
        f"{corr_null['null_max']:.3f}"
    )
    signed_ok = True
    if signed is not None and len(signed[0]):
        signed_gap = float(np.median(np.subtract(signed[0], signed[1])))
        effects["signed_index_share"] = float(np.median(signed[0]))
        effects["signed_layer_share"] = float(np.median(signed[1]))
        effects["signed_index_minus_layer"] = signed_gap
        signed_ok = signed_gap > 0
        measures += (
            f"; signed mean map (Fig. 2): index share {effects['signed_index_share']:.3f}"
            f" vs layer share {effects['signed_layer_share']:.3f}"
        )
    beyond, by_index = share_beyond or corr_beyond, gap > 0
    if (
        share_beyond
        and by_index
        and gap_low > 0
        and signed_ok
        and share >= STRONG_SHARE
        and corr >= STRONG_SHARE
    ):
        return Verdict(REPRODUCED, f"strong stripes by index: {measures}", effects)
    if beyond and by_index:
        return Verdict(
            PARTLY,
            f"weak stripes (beyond the untrained null and by index more than "
            f"by layer, below {STRONG_SHARE} of the variance): {measures}",
            effects,
        )
    if beyond:
        return Verdict(
            NOT,
            f"structure beyond the untrained null, but the map varies more by "
            f"layer than by index: {measures}",
            effects,
        )
    return Verdict(NOT, f"no stripes beyond the untrained null: {measures}", effects)


def chance_jaccard(k: int, d_model: int) -> float:
    """Expected Jaccard overlap of two independent uniformly random ``k``-sets of ``d_model``."""
    overlap = stats.hypergeom(d_model, k, k)
    return float(sum(overlap.pmf(i) * i / (2 * k - i) for i in range(k + 1)))


def consistency_rule(
    top_sets: Sequence[Sequence[int]], d_model: int, *, min_runs: int = MIN_RUNS
) -> Verdict:
    """Is it the same index across runs? ``top_sets``: each aligned run's top-k indices, most
    important first. Reproduced: one index is every run's top 1. Partly: the runs' top-k sets
    overlap (mean pairwise Jaccard) at least ``OVERLAP_OVER_CHANCE`` times chance."""
    if (few := too_few(len(top_sets), min_runs)) is not None:
        return few
    k = len(top_sets[0])
    firsts = [s[0] for s in top_sets]
    common = max(set(firsts), key=firsts.count)
    pairs = [
        len(set(a) & set(b)) / len(set(a) | set(b)) for a, b in itertools.combinations(top_sets, 2)
    ]
    overlap, chance = float(np.mean(pairs)), chance_jaccard(k, d_model)
    effects = {
        "top1_index": float(common),
        "top1_runs": float(firsts.count(common)),
        "n_runs": float(len(top_sets)),
        "overlap": overlap,
        "chance": chance,
        "overlap_over_chance": overlap / chance,
    }
    measures = (
        f"index {common} is top 1 in {firsts.count(common)}/{len(top_sets)} runs; mean "
        f"top-{k} overlap {overlap:.3f} vs chance {chance:.4f} "
        f"({overlap / chance:.0f}x)"
    )
    if firsts.count(common) == len(top_sets):
        return Verdict(REPRODUCED, f"the same top index in every run: {measures}", effects)
    if overlap >= OVERLAP_OVER_CHANCE * chance:
        return Verdict(PARTLY, f"shared top indices, not one: {measures}", effects)
    return Verdict(NOT, f"no more shared than chance allows: {measures}", effects)


def top_gap_bound(ratio: float, d_model: int) -> float:
    """The largest top-to-runner-up share ratio a map with dominance ratio ``ratio`` (top share
    x ``d_model``) can have: the rest of the total spread evenly over the other indices."""
    top = ratio / d_model
    return top * (d_model - 1) / (1 - top) if top < 1 else math.inf


def dominant_rule(
    ratios: Sequence[float],
    gaps: Sequence[float],
    null_ratios: Sequence[float],
    *,
    gaps_are_bounds: bool = False,
    min_runs: int = MIN_RUNS,
) -> Verdict:
    """Does one index dominate? ``ratios``: each aligned run's dominance ratio (top index's share
    of |output| x d_model; 1 = uniform); ``gaps``: its top index's share over the runner-up's
    (a measure that means the same at any d_model), or with ``gaps_are_bounds`` upper bounds of
    it (``top_gap_bound``, where the runner-up's share was not kept); ``null_ratios``: the
    untrained IRMs' ratios.

    Reproduced: the median gap and its CI lower bound reach ``DOMINANT_GAP`` (the top index
    carries at least that many times the next one's |output|) and the ratios stand beyond the
    null (not tested when only bounds reach it). Partly: the median ratio's CI lies above every
    untrained IRM's ratio (concentrated beyond a random MLP, no single index on top). Not
    reproduced otherwise."""
    if (few := too_few(len(ratios), min_runs)) is not None:
        return few
    median, low, high = median_ci(ratios)
    gap, gap_low, gap_high = median_ci(gaps)
    null = against_null(median, null_ratios)
    beyond = low > null["null_max"]
    effects = {
        "ratio": median,
        "ratio_low": low,
        "ratio_high": high,
        "gap": gap,
        "gap_low": gap_low,
        "gap_high": gap_high,
        "control": null["null_median"],
        "null_max": null["null_max"],
        "z": null["z"],
        "over_control": median / null["null_median"],
        "n_null": null["n_null"],
        "n_runs": float(len(ratios)),
    }
    at_most = "at most " if gaps_are_bounds else ""
    measures = (
        f"top index over the runner-up: median {at_most}{gap:.2f}x [95 % CI {gap_low:.2f},"
        f" {gap_high:.2f}] (dominant >= {DOMINANT_GAP:g}x, at any d_model); dominance "
        f"ratio median {median:.2f} [{low:.2f}, {high:.2f}] (1 = uniform), "
        f"{null_text(null, '.2f')}"
    )
    if beyond and gap >= DOMINANT_GAP and gap_low >= DOMINANT_GAP:
        if gaps_are_bounds:
            return Verdict(
                NOT_TESTED,
                f"the runner-up's share was not kept and its bound allows "
                f"a dominant index: {measures}",
                effects,
            )
        return Verdict(REPRODUCED, f"one index dominates: {measures}", effects)
    if beyond:
        return Verdict(
            PARTLY,
            f"concentrated beyond every untrained IRM "
            f"({median / null['null_median']:.2f}x the null's median), no index "
            f"dominant: {measures}",
            effects,
        )
    return Verdict(NOT, f"no index stands out beyond the untrained null: {measures}", effects)
