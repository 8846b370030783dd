"""The paper's claims as rules: inputs built on each side of every threshold reach every verdict,
"not tested" included."""

from __future__ import annotations

import numpy as np
import pytest

from irm_lens.analysis import verdicts as v

RUNS = 4


def test_median_ci_brackets_the_median():
    median, low, high = v.median_ci([1.0, 2.0, 3.0, 4.0, 10.0])
    assert median == 3.0 and low <= median <= high and high <= 10.0
    assert v.median_ci([2.5]) == (2.5, 2.5, 2.5)
    assert all(np.isnan(x) for x in v.median_ci([]))


@pytest.mark.parametrize(
    ("shares", "corrs", "expected"),
    [
        ([0.7, 0.8, 0.75, 0.72], [0.6, 0.7, 0.65, 0.6], v.REPRODUCED),
        ([0.15, 0.16, 0.14, 0.15], [0.12, 0.13, 0.12, 0.14], v.PARTLY),  # weak: above control
        ([0.036, 0.035, 0.034, 0.036], [0.0, 0.01, 0.0, 0.02], v.NOT),  # at the control
        ([0.7], [0.7], v.NOT_TESTED),  # one aligned run
    ],
)
def test_striation_rule(shares, corrs, expected):
    verdict = v.striation_rule(shares, corrs, control_share=0.034, control_corr=0.001)
    assert verdict.verdict == expected, verdict.reason
    if expected == v.PARTLY:
        assert verdict.reason.startswith("weak stripes")
    if expected != v.NOT_TESTED:
        assert verdict.effects["control_share"] == 0.034


def test_strong_share_without_correlation_is_only_weak():
    verdict = v.striation_rule([0.7] * RUNS, [0.2] * RUNS, control_share=0.03, control_corr=0.0)
    assert verdict.verdict == v.PARTLY


def test_chance_overlap_matches_simulation():
    rng = np.random.default_rng(0)
    draws = [rng.choice(40, 5, replace=False) for _ in range(4000)]
    sim = np.mean([len(set(a) & set(b)) / len(set(a) | set(b))
                   for a, b in zip(draws[::2], draws[1::2], strict=True)])  # fmt: skip
    assert v.chance_jaccard(5, 40) == pytest.approx(sim, rel=0.1)
    assert v.chance_jaccard(5, 5) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        ([[7, 1, 2, 3, 4], [7, 2, 1, 5, 6], [7, 9, 8, 1, 2]], v.REPRODUCED),
        ([[7, 1, 2, 3, 4], [1, 7, 2, 5, 6], [2, 7, 1, 3, 9]], v.PARTLY),  # shared, no one top
        ([[0, 1, 2, 3, 4], [10, 11, 12, 13, 14], [20, 21, 22, 23, 24]], v.NOT),
        ([[7, 1, 2, 3, 4]], v.NOT_TESTED),
    ],
)
def test_consistency_rule(sets, expected):
    verdict = v.consistency_rule(sets, d_model=576)
    assert verdict.verdict == expected, verdict.reason


@pytest.mark.parametrize(
    ("ratios", "expected"),
    [
        ([14.0, 15.0, 16.0, 13.0], v.REPRODUCED),
        ([2.2, 2.4, 2.3, 2.5], v.PARTLY),  # 1.6x the control: concentrated, not dominant
        ([1.9, 2.0, 2.1, 2.0], v.NOT),  # 1.4x the control
        ([30.0], v.NOT_TESTED),
    ],
)
def test_dominant_rule(ratios, expected):
    verdict = v.dominant_rule(ratios, control=1.43)
    assert verdict.verdict == expected, verdict.reason


def test_dominant_needs_its_ci_above_the_threshold():
    verdict = v.dominant_rule([3.0, 11.0, 12.0, 30.0], control=1.0)  # median 11.5, CI reaches 3
    assert verdict.verdict == v.PARTLY and verdict.effects["ratio_low"] < v.DOMINANT


@pytest.mark.parametrize(
    ("deltas", "outputs", "striated", "expected"),
    [
        ([0.2, 0.25, 0.3], [0.04, 0.03, 0.05], True, v.REPRODUCED),
        ([0.2, 0.25, 0.3], [0.2, 0.2, 0.2], True, v.PARTLY),
        ([0.04, 0.03, 0.05], [0.2, 0.2, 0.2], True, v.NOT),
        ([0.2, 0.25, 0.3], [0.04, 0.03, 0.05], False, v.NOT_TESTED),  # nothing to explain
        ([0.3], [0.03], True, v.NOT_TESTED),
    ],
)
def test_residual_rule(deltas, outputs, striated, expected):
    verdict = v.residual_rule(deltas, outputs, control_share=0.034, striated=striated)
    assert verdict.verdict == expected, verdict.reason


@pytest.mark.parametrize(
    ("frozen", "percentile", "dominated", "expected"),
    [
        ([0.1, 0.1, 0.1], 0.99, True, v.REPRODUCED),  # 67 % mediated, a top-1 % lever
        ([0.1, 0.1, 0.1], 0.5, True, v.PARTLY),
        ([0.29, 0.28, 0.3], 0.99, True, v.PARTLY),
        ([0.29, 0.28, 0.3], 0.5, True, v.NOT),
        ([0.1, 0.1, 0.1], 0.99, False, v.NOT_TESTED),
    ],
)
def test_lm_head_rule(frozen, percentile, dominated, expected):
    verdict = v.lm_head_rule([0.3, 0.3, 0.3], frozen, percentile, dominated=dominated)
    assert verdict.verdict == expected, verdict.reason


@pytest.mark.parametrize(
    ("true", "file", "expected", "where"),
    [
        ([0.9, 0.85, 0.95], [0.9, 0.88, 0.92], v.REPRODUCED, "both"),
        ([0.5, 0.55, 0.6], [0.9, 0.88, 0.92], v.PARTLY, "the original's file order"),
        ([0.9, 0.85, 0.95], [0.5, 0.4, 0.6], v.PARTLY, "true sequence order"),
        ([0.5, 0.55, 0.6], [0.5, 0.4, 0.6], v.NOT, "neither"),
        ([0.9], [0.9], v.NOT_TESTED, "needs"),
    ],
)
def test_timing_rule(true, file, expected, where):
    verdict = v.timing_rule(true, 0.49, file, 0.5)
    assert verdict.verdict == expected and where in verdict.reason, verdict.reason


def test_timing_needs_an_effect_over_the_untrained_irm():
    # 85 % early, but the untrained IRM is as early: no effect of training
    verdict = v.timing_rule([0.85] * RUNS, 0.8, [0.85] * RUNS, 0.8)
    assert verdict.verdict == v.NOT


def test_every_rule_reaches_every_verdict():
    reached = {
        "striation": {v.striation_rule(s, c, 0.034, 0.001).verdict for s, c in [
            ([0.7] * RUNS, [0.7] * RUNS), ([0.15] * RUNS, [0.1] * RUNS),
            ([0.034] * RUNS, [0.0] * RUNS), ([0.5], [0.5])]},
        "consistency": {v.consistency_rule(s, 576).verdict for s in [
            [[1, 2], [1, 3]], [[1, 2], [2, 1]], [[1, 2], [3, 4]], [[1, 2]]]},
        "dominant": {v.dominant_rule(r, 1.0).verdict for r in [
            [20.0] * RUNS, [2.0] * RUNS, [1.0] * RUNS, [20.0]]},
    }  # fmt: skip
    for rule, seen in reached.items():
        assert seen == set(v.VERDICTS), rule


def test_lm_head_rule_states_its_measures_when_the_claim_has_no_subject():
    verdict = v.lm_head_rule([0.3, 0.3, 0.3], [0.29, 0.28, 0.3], 0.5, dominated=False)
    assert verdict.verdict == v.NOT_TESTED
    assert "3% of the NLL gain goes through the final norm's scale" in verdict.reason
    assert verdict.effects["mediated"] == pytest.approx(1 - 0.29 / 0.3)
    empty = v.lm_head_rule([], [], 0.5, dominated=False)
    assert empty.verdict == v.NOT_TESTED and "measured anyway" not in empty.reason
