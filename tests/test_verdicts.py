"""The paper's claims as rules: inputs built on each side of every threshold reach every verdict,
"not tested" included."""

from __future__ import annotations

import numpy as np
import pytest

from analyses.rules import acting
from analyses.rules import paper as v

RUNS = 4


def test_median_ci_brackets_the_median():
    median, low, high = v.median_ci([1.0, 2.0, 3.0, 4.0, 10.0])
    assert median == 3.0 and low <= median <= high and high <= 10.0
    assert v.median_ci([2.5]) == (2.5, 2.5, 2.5)
    assert all(np.isnan(x) for x in v.median_ci([]))


NULL_SHARES = [0.030, 0.034, 0.036, 0.031, 0.033, 0.035, 0.032, 0.034, 0.030, 0.033]
NULL_CORRS = [0.0, 0.001, -0.002, 0.003, 0.0, 0.002, -0.001, 0.001, 0.0, 0.002]


def _stripes(shares, layers, corrs, **kwargs):
    return v.striation_rule(shares, layers, corrs, NULL_SHARES, NULL_CORRS, **kwargs)


@pytest.mark.parametrize(
    ("shares", "layers", "corrs", "expected"),
    [
        ([0.7, 0.8, 0.75, 0.72], [0.1] * RUNS, [0.6, 0.7, 0.65, 0.6], v.REPRODUCED),
        ([0.15, 0.16, 0.14, 0.15], [0.07] * RUNS, [0.12, 0.13, 0.12, 0.14], v.PARTLY),
        ([0.036, 0.035, 0.034, 0.036], [0.001] * RUNS, [0.0, 0.01, 0.0, 0.02], v.NOT),
        ([0.7], [0.1], [0.7], v.NOT_TESTED),  # one aligned run
    ],
)
def test_striation_rule(shares, layers, corrs, expected):
    verdict = _stripes(shares, layers, corrs)
    assert verdict.verdict == expected, verdict.reason
    if expected == v.PARTLY:
        assert verdict.reason.startswith("weak stripes")
    if expected != v.NOT_TESTED:
        assert verdict.effects["control_share"] == pytest.approx(np.median(NULL_SHARES))
        assert verdict.effects["n_null"] == len(NULL_SHARES)


def test_striation_refuses_partly_when_the_layer_share_exceeds_the_index_share():
    # the long tier's best IRMs: index shares near 0.1, layer shares near 0.2 (beyond the null)
    shares, layers = [0.099, 0.101, 0.101, 0.137], [0.254, 0.195, 0.220, 0.113]
    verdict = _stripes(shares, layers, [0.09, 0.1, 0.08, 0.12])
    assert verdict.verdict == v.NOT and "more by layer than by index" in verdict.reason
    assert verdict.effects["index_minus_layer"] < 0
    # a synthetic map with index share 0.09 and layer share 0.85: not "partly" either
    assert _stripes([0.09] * RUNS, [0.85] * RUNS, [0.2] * RUNS).verdict == v.NOT


def test_striation_reproduced_needs_the_signed_map_by_index_too():
    strong = ([0.7] * RUNS, [0.1] * RUNS, [0.7] * RUNS)
    assert _stripes(*strong, signed=([0.6] * RUNS, [0.2] * RUNS)).verdict == v.REPRODUCED
    by_layer = _stripes(*strong, signed=([0.1] * RUNS, [0.8] * RUNS))
    assert by_layer.verdict == v.PARTLY and by_layer.effects["signed_index_minus_layer"] < 0


def test_strong_share_without_correlation_is_only_weak():
    verdict = _stripes([0.7] * RUNS, [0.1] * RUNS, [0.2] * RUNS)
    assert verdict.verdict == v.PARTLY


def test_striation_reads_the_whole_null_not_one_control():
    # above the null's median by the effect, but one untrained IRM reaches as high: not beyond
    shares = [0.095, 0.096, 0.094, 0.095]
    wide_null = [*NULL_SHARES[:-1], 0.12]
    verdict = v.striation_rule(shares, [0.01] * RUNS, [0.0] * RUNS, wide_null, NULL_CORRS)
    assert verdict.verdict == v.NOT and verdict.effects["null_share_max"] == 0.12
    assert (
        v.striation_rule(shares, [0.01] * RUNS, [0.0] * RUNS, NULL_SHARES, NULL_CORRS).verdict
        == v.PARTLY
    )


def test_against_null_gives_percentile_and_z():
    null = v.against_null(2.0, [1.0, 1.2, 1.4, 1.6])
    assert null["percentile"] == 1.0 and null["null_max"] == 1.6 and null["z"] > 2
    assert np.isnan(v.against_null(2.0, [1.0])["z"])
    with pytest.raises(ValueError, match="at least one"):
        v.against_null(1.0, [])


def test_chance_overlap_matches_simulation():
    rng = np.random.default_rng(0)
    draws = [rng.choice(40, 5, replace=False) for _ in range(4000)]
    sim = np.mean(
        [
            len(set(a) & set(b)) / len(set(a) | set(b))
            for a, b in zip(draws[::2], draws[1::2], strict=True)
        ]
    )
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


NULL_RATIOS = [1.40, 1.43, 1.45, 1.41, 1.50, 1.38, 1.44, 1.47, 1.42, 1.46]


@pytest.mark.parametrize(
    ("ratios", "gaps", "expected"),
    [
        ([14.0, 15.0, 16.0, 13.0], [3.0, 2.8, 3.5, 2.6], v.REPRODUCED),
        ([2.2, 2.4, 2.3, 2.5], [1.1, 1.2, 1.1, 1.3], v.PARTLY),  # beyond the null, no one on top
        ([1.44, 1.46, 1.45, 1.43], [1.05, 1.1, 1.02, 1.08], v.NOT),  # within the null
        ([30.0], [5.0], v.NOT_TESTED),
    ],
)
def test_dominant_rule(ratios, gaps, expected):
    verdict = v.dominant_rule(ratios, gaps, NULL_RATIOS)
    assert verdict.verdict == expected, verdict.reason
    if expected != v.NOT_TESTED:
        assert verdict.effects["null_max"] == 1.5 and "z" in verdict.effects


def test_dominant_needs_the_gap_ci_above_the_threshold():
    verdict = v.dominant_rule([12.0] * RUNS, [1.2, 2.5, 2.6, 3.0], NULL_RATIOS)
    assert verdict.verdict == v.PARTLY and verdict.effects["gap_low"] < v.DOMINANT_GAP


def test_dominance_means_the_same_at_any_d_model():
    # one index at 3x the rest, which are flat: the same gap at d 576 and 4096, another ratio
    import torch

    from irm_lens.measures.dominance import dominance_ratio, top_two

    def measured(d_model):
        outputs = torch.ones(2, 3, d_model, dtype=torch.float64)  # [token, layer, d_model]
        outputs[..., 7] = -3.0  # |output| counts, not its sign
        return dominance_ratio([outputs], n_boot=10).ratio, top_two([outputs]).gap

    (r_small, g_small), (r_large, g_large) = measured(576), measured(4096)
    assert g_small == pytest.approx(g_large) == pytest.approx(3.0)
    assert r_small == pytest.approx(3 * 576 / 578) and r_large == pytest.approx(3 * 4096 / 4098)
    assert v.top_gap_bound(r_small, 576) == pytest.approx(g_small)  # flat rest: the bound holds


def test_dominance_from_bounds_says_at_most_and_never_reproduces():
    low = v.dominant_rule([1.98] * RUNS, [1.98] * RUNS, NULL_RATIOS, gaps_are_bounds=True)
    assert low.verdict == v.PARTLY and "at most 1.98x" in low.reason
    high = v.dominant_rule([20.0] * RUNS, [19.0] * RUNS, NULL_RATIOS, gaps_are_bounds=True)
    assert high.verdict == v.NOT_TESTED and "was not kept" in high.reason


def test_top_gap_bound_caps_what_a_ratio_allows():
    assert v.top_gap_bound(1.0, 576) == pytest.approx(1.0)
    assert v.top_gap_bound(1.98, 576) < v.DOMINANT_GAP  # the long tier's median
    assert v.top_gap_bound(576.0, 576) == np.inf


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
    verdict = acting.residual_rule(deltas, outputs, NULL_SHARES, striated=striated)
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
    verdict = acting.lm_head_rule([0.3, 0.3, 0.3], frozen, percentile, dominated=dominated)
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
    verdict = acting.timing_rule(true, [0.45, 0.49, 0.52], file, [0.5, 0.47, 0.55])
    assert verdict.verdict == expected and where in verdict.reason, verdict.reason


def test_timing_needs_an_effect_over_the_untrained_irm():
    # 85 % early, but the untrained IRM is as early: no effect of training
    verdict = acting.timing_rule([0.85] * RUNS, [0.8, 0.78], [0.85] * RUNS, [0.8, 0.81])
    assert verdict.verdict == v.NOT


def test_every_rule_reaches_every_verdict():
    reached = {
        "striation": {
            _stripes(s, layer, c).verdict
            for s, layer, c in [
                ([0.7] * RUNS, [0.1] * RUNS, [0.7] * RUNS),
                ([0.15] * RUNS, [0.1] * RUNS, [0.1] * RUNS),
                ([0.15] * RUNS, [0.3] * RUNS, [0.1] * RUNS),
                ([0.5], [0.1], [0.5]),
            ]
        },
        "consistency": {
            v.consistency_rule(s, 576).verdict
            for s in [[[1, 2], [1, 3]], [[1, 2], [2, 1]], [[1, 2], [3, 4]], [[1, 2]]]
        },
        "dominant": {
            v.dominant_rule(r, g, NULL_RATIOS).verdict
            for r, g in [
                ([20.0] * RUNS, [3.0] * RUNS),
                ([2.0] * RUNS, [1.1] * RUNS),
                ([1.4] * RUNS, [1.0] * RUNS),
                ([20.0], [3.0]),
            ]
        },
        "timing": {
            acting.timing_rule(t, [0.5, 0.5], f, [0.5, 0.5]).verdict
            for t, f in [
                ([0.9] * RUNS, [0.9] * RUNS),
                ([0.9] * RUNS, [0.5] * RUNS),
                ([0.5] * RUNS, [0.5] * RUNS),
                ([0.9], [0.9]),
            ]
        },
    }
    for rule, seen in reached.items():
        assert seen == set(v.VERDICTS), rule


def test_lm_head_rule_states_its_measures_when_the_claim_has_no_subject():
    verdict = acting.lm_head_rule([0.3, 0.3, 0.3], [0.29, 0.28, 0.3], 0.5, dominated=False)
    assert verdict.verdict == v.NOT_TESTED
    assert "3% of the NLL gain goes through the final norm's scale" in verdict.reason
    assert verdict.effects["mediated"] == pytest.approx(1 - 0.29 / 0.3)
    empty = acting.lm_head_rule([], [], 0.5, dominated=False)
    assert empty.verdict == v.NOT_TESTED and "measured anyway" not in empty.reason
    worse = acting.lm_head_rule([-0.1, -0.1], [-0.08, -0.08], 0.99, dominated=True)
    assert "no NLL gain to mediate" in worse.reason and "nan" not in worse.reason
    assert worse.verdict == v.PARTLY  # the lever alone
