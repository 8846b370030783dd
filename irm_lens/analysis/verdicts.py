"""The paper's claims as rules that can fail: each states an effect size against a control and
returns ``reproduced`` / ``partly reproduced`` / ``not reproduced``, or ``not tested`` when the
evidence cannot decide (too few aligned runs, or nothing for the claim to be about).

Every rule takes numbers measured on **aligned runs only** (``analysis.alignment``) and of one
loss kind; the report calls it once per kind. Thresholds are module constants, so a reader sees
them in one place and the tests build inputs on both sides of each.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from irm_lens.analysis.mechanism import MARGIN, MIN_RUNS, Verdict

REPRODUCED, PARTLY, NOT, NOT_TESTED = (
    "reproduced", "partly reproduced", "not reproduced", "not tested")  # fmt: skip
VERDICTS = (REPRODUCED, PARTLY, NOT, NOT_TESTED)

STRONG_SHARE = 0.5
"""Striation: the index share of variance (and the cross-layer correlation) of a map a reader
would call striped: most of its variance lies in whole columns."""
MIN_SHARE_EFFECT = 0.05
"""Striation: how far the index share must lie above the untrained IRM's (CI lower bound)."""
MIN_CORR_EFFECT = 0.1
"""Striation: how far the cross-layer correlation must lie above the untrained IRM's."""
DOMINANT = 10.0
"""Dominance: the top index's share of |output| x d_model (1 = uniform) that counts as dominant."""
OVERLAP_OVER_CHANCE = 5.0
"""Dominance: how many times the chance level the runs' top-k overlap must reach to be shared."""
MEDIATED = 0.5
"""LM head: the share of the IRM's NLL gain that must go through the final norm's scale."""
LEVER_PERCENTILE = 0.95
"""LM head: the dominant index's entropy lever must beat this share of all indices."""
EARLY = 0.8
"""Timing: the share of the top-k values before the midpoint that reads as "most ... early"."""
MIN_TIMING_EFFECT = 0.1
"""Timing: how far that share must lie above the untrained IRM's."""


def median_ci(values: Sequence[float], *, seed: int = 0) -> tuple[float, float, float]:
    """Median of ``values`` and a percentile bootstrap 95 % CI over them (NaNs for none; the
    median as both bounds for one value)."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return math.nan, math.nan, math.nan
    median = float(np.median(data))
    if data.size == 1 or np.all(data == data[0]):
        return median, median, median
    result = stats.bootstrap((data,), np.median, n_resamples=2000, method="percentile",
                             random_state=np.random.default_rng(seed))  # fmt: skip
    low, high = result.confidence_interval
    return median, float(low), float(high)


def _too_few(n: int, min_runs: int, what: str = "aligned runs") -> Verdict | None:
    if n < min_runs:
        return Verdict(NOT_TESTED, f"needs {min_runs} {what}; got {n}", {"n_runs": float(n)})
    return None


def striation_rule(
    index_shares: Sequence[float],
    corrs: Sequence[float],
    control_share: float,
    control_corr: float,
    *,
    min_runs: int = MIN_RUNS,
) -> Verdict:
    """Vertical striations: the index share of variance of each run's mean |output| map and the
    cross-layer correlation of its index profiles, against the untrained IRM's.

    Reproduced: median index share and correlation both >= ``STRONG_SHARE`` and the share's CI
    above the control by ``MIN_SHARE_EFFECT``. Partly (weak stripes): the share's CI above the
    control by ``MIN_SHARE_EFFECT``, or the median correlation above it by ``MIN_CORR_EFFECT``.
    """
    if (few := _too_few(len(index_shares), min_runs)) is not None:
        return few
    share, low, high = median_ci(index_shares)
    corr = float(np.median(corrs))
    effects = {"index_share": share, "index_share_low": low, "index_share_high": high,
               "control_share": control_share, "share_effect_low": low - control_share,
               "cross_layer_corr": corr, "control_corr": control_corr,
               "corr_effect": corr - control_corr, "n_runs": float(len(index_shares))}  # fmt: skip
    above = low - control_share >= MIN_SHARE_EFFECT
    measures = (
        f"median index share {share:.3f} [95 % CI {low:.3f}, {high:.3f}] vs untrained "
        f"{control_share:.3f}; cross-layer correlation {corr:.3f} vs {control_corr:.3f}"
    )
    if above and share >= STRONG_SHARE and corr >= STRONG_SHARE:
        return Verdict(REPRODUCED, f"strong stripes: {measures}", effects)
    if above or corr - control_corr >= MIN_CORR_EFFECT:
        return Verdict(PARTLY, f"weak stripes (above the untrained IRM, below {STRONG_SHARE} "
                       f"of the variance): {measures}", effects)  # fmt: skip
    return Verdict(NOT, f"no stripes beyond the untrained IRM's: {measures}", effects)


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
    if (few := _too_few(len(top_sets), min_runs)) is not None:
        return few
    k = len(top_sets[0])
    firsts = [s[0] for s in top_sets]
    common = max(set(firsts), key=firsts.count)
    pairs = [len(set(a) & set(b)) / len(set(a) | set(b))
             for a, b in itertools.combinations(top_sets, 2)]  # fmt: skip
    overlap, chance = float(np.mean(pairs)), chance_jaccard(k, d_model)
    effects = {"top1_index": float(common), "top1_runs": float(firsts.count(common)),
               "n_runs": float(len(top_sets)), "overlap": overlap, "chance": chance,
               "overlap_over_chance": overlap / chance}  # fmt: skip
    measures = (f"index {common} is top 1 in {firsts.count(common)}/{len(top_sets)} runs; mean "
                f"top-{k} overlap {overlap:.3f} vs chance {chance:.4f} "
                f"({overlap / chance:.0f}x)")  # fmt: skip
    if firsts.count(common) == len(top_sets):
        return Verdict(REPRODUCED, f"the same top index in every run: {measures}", effects)
    if overlap >= OVERLAP_OVER_CHANCE * chance:
        return Verdict(PARTLY, f"shared top indices, not one: {measures}", effects)
    return Verdict(NOT, f"no more shared than chance allows: {measures}", effects)


def dominant_rule(ratios: Sequence[float], control: float, *, min_runs: int = MIN_RUNS) -> Verdict:
    """Does one index dominate? ``ratios``: each aligned run's dominance ratio (top index share
    of |output| x d_model); ``control``: the untrained IRM's. Reproduced: median and CI lower
    bound >= ``DOMINANT``. Partly: median at least ``MARGIN`` x the control (concentrated beyond
    a random MLP, not dominant)."""
    if (few := _too_few(len(ratios), min_runs)) is not None:
        return few
    median, low, high = median_ci(ratios)
    effects = {"ratio": median, "ratio_low": low, "ratio_high": high, "control": control,
               "over_control": median / control, "n_runs": float(len(ratios))}  # fmt: skip
    measures = (f"median dominance ratio {median:.2f} [95 % CI {low:.2f}, {high:.2f}] (1 = "
                f"uniform, dominant >= {DOMINANT:g}); untrained IRM {control:.2f}")  # fmt: skip
    if median >= DOMINANT and low >= DOMINANT:
        return Verdict(REPRODUCED, f"one index dominates: {measures}", effects)
    if median >= MARGIN * control:
        return Verdict(PARTLY, f"concentrated beyond the untrained IRM ({median / control:.2f}x"
                       f" >= {MARGIN}x), not dominant: {measures}", effects)  # fmt: skip
    return Verdict(NOT, f"no index stands out beyond the untrained IRM ({median / control:.2f}x "
                   f"< {MARGIN}x): {measures}", effects)  # fmt: skip


def residual_rule(
    delta_shares: Sequence[float],
    output_shares: Sequence[float],
    control_share: float,
    *,
    striated: bool,
    min_runs: int = MIN_RUNS,
) -> Verdict:
    """The skip-path explanation, tested with a control that can fail: IRMs whose outputs
    ``v_l`` are injected as ``R_l v_l`` (a fixed random orthogonal ``R_l`` per layer).

    ``delta_shares``: index share of the injected deltas ``R_l v_l`` in the residual basis, per
    aligned run; ``output_shares``: of the same IRMs' own outputs ``v_l``; ``control_share``:
    the untrained IRM's; ``striated``: whether the plain IRMs' stripes were reproduced at all.
    Reproduced: the deltas are striated (median above the control by ``MIN_SHARE_EFFECT``) and
    the raw outputs are not. Partly: both are. Not: the deltas are not striated.
    """
    if not striated:
        return Verdict(NOT_TESTED, "no stripes to explain", {"n_runs": float(len(delta_shares))})
    if (few := _too_few(len(delta_shares), min_runs, "aligned rotated-injection runs")) is not None:
        return few
    delta, output = float(np.median(delta_shares)), float(np.median(output_shares))
    effects = {"delta_share": delta, "output_share": output, "control_share": control_share,
               "n_runs": float(len(delta_shares))}  # fmt: skip
    measures = (f"index share of the injected deltas {delta:.3f}, of the IRM's own outputs "
                f"{output:.3f}, untrained {control_share:.3f}")  # fmt: skip
    deltas_striped = delta - control_share >= MIN_SHARE_EFFECT
    outputs_striped = output - control_share >= MIN_SHARE_EFFECT
    if deltas_striped and not outputs_striped:
        return Verdict(REPRODUCED, f"stripes form in the residual basis whatever basis the IRM "
                       f"writes in: {measures}", effects)  # fmt: skip
    if deltas_striped:
        return Verdict(PARTLY, f"stripes in the residual basis and in the IRM's own: {measures}",
                       effects)  # fmt: skip
    return Verdict(NOT, f"rotated injection leaves no stripes in the residual basis: {measures}",
                   effects)  # fmt: skip


def lm_head_rule(
    gains: Sequence[float],
    frozen_gains: Sequence[float],
    lever_percentile: float,
    *,
    dominated: bool,
    min_runs: int = MIN_RUNS,
) -> Verdict:
    """The dominant index acts through the final norm and LM head: mediation.

    ``gains``: each aligned run's relative NLL drop of its own-voice answers; ``frozen_gains``:
    the same with the final norm's scale held at its no-IRM value; ``lever_percentile``: the
    share of all ``d_model`` indices whose scaling moves next-token entropy less than the
    dominant index's does. Not tested without a dominant index. Reproduced: at least
    ``MEDIATED`` of the gain goes through the scale and the lever beats ``LEVER_PERCENTILE`` of
    the indices; partly: one of the two.
    """
    if gains:
        gain, frozen = float(np.median(gains)), float(np.median(frozen_gains))
        mediated = 1.0 - frozen / gain if gain > 0 else math.nan
        effects = {"gain": gain, "frozen_gain": frozen, "mediated": mediated,
                   "lever_percentile": lever_percentile, "n_runs": float(len(gains))}  # fmt: skip
        measures = (f"{mediated:.0%} of the NLL gain goes through the final norm's scale "
                    f"(gain {gain:.3f}, scale frozen {frozen:.3f}); the index's entropy lever "
                    f"beats {lever_percentile:.0%} of all indices")  # fmt: skip
    else:
        effects = {"n_runs": 0.0, "lever_percentile": lever_percentile}
        measures = ""
    if not dominated:  # the measures are still stated: what the test would have read
        anyway = f" (measured anyway: {measures})" if measures else ""
        return Verdict(
            NOT_TESTED, f"no index dominates the alignments: the claim has no subject{anyway}",
            effects,
        )  # fmt: skip
    if (few := _too_few(len(gains), min_runs)) is not None:
        return few
    through, lever = mediated >= MEDIATED, lever_percentile >= LEVER_PERCENTILE
    if through and lever:
        return Verdict(REPRODUCED, measures, effects)
    if through or lever:
        return Verdict(PARTLY, measures, effects)
    return Verdict(NOT, measures, effects)


def timing_rule(
    true_order: Sequence[float],
    true_control: float,
    file_order: Sequence[float],
    file_control: float,
    *,
    min_runs: int = MIN_RUNS,
) -> Verdict:
    """ "Most of the 1000 largest values occur towards the beginning of inference": the share of
    each aligned run's top-k values before the midpoint, in true sequence order and in the
    original figure's order (its token files sorted by name: generated tokens first, prompt
    last), each against the untrained IRM. The claim holds in an order when the median share is
    >= ``EARLY`` and above the control by ``MIN_TIMING_EFFECT``. Reproduced: in both orders;
    partly: in one (the reason says which)."""
    if (few := _too_few(len(true_order), min_runs)) is not None:
        return few
    true, file = float(np.median(true_order)), float(np.median(file_order))
    effects = {"true_order": true, "true_control": true_control, "file_order": file,
               "file_control": file_control, "n_runs": float(len(true_order))}  # fmt: skip
    holds = {"true sequence order": true >= EARLY and true - true_control >= MIN_TIMING_EFFECT,
             "the original's file order": file >= EARLY
             and file - file_control >= MIN_TIMING_EFFECT}  # fmt: skip
    measures = (
        f"before the midpoint: {true:.0%} in true order (untrained {true_control:.0%}),"
        f" {file:.0%} in the original's file order (untrained {file_control:.0%})"
    )
    where = [order for order, ok in holds.items() if ok]
    if len(where) == 2:
        return Verdict(REPRODUCED, f"holds in both orders: {measures}", effects)
    if where:
        return Verdict(PARTLY, f"holds only in {where[0]}: {measures}", effects)
    return Verdict(NOT, f"holds in neither order: {measures}", effects)
