"""Dominance ratios and the basis / optimizer verdicts on hand-built inputs."""

from __future__ import annotations

import pytest
import torch

from analyses.rules.mechanism import (
    BASIS_VERDICTS,
    MASKING_VERDICTS,
    NOT,
    NOT_TESTED,
    OPTIMIZER_VERDICTS,
    PARTLY,
    REPRODUCED,
    basis_verdict,
    early_layers_verdict,
    masking_verdict,
    optimizer_verdict,
    same_index_verdict,
)
from irm_lens.measures.dominance import dominance_ratio


def test_dominance_ratio_known_answers():
    uniform = [torch.ones(3, 2, 8), torch.ones(4, 2, 8)]
    flat = dominance_ratio(uniform)
    assert flat.ratio == pytest.approx(1.0) and flat.low == pytest.approx(1.0)
    spiked = [torch.zeros(3, 2, 8) for _ in range(4)]
    for out in spiked:
        out[..., 3] = -2.0  # the sign does not matter: |output|
    one = dominance_ratio(spiked)
    assert (one.top1, one.ratio) == (3, pytest.approx(8.0))
    half = [torch.ones(5, 1, 4)]
    half[0][..., 1] = 3.0  # share 3/6 of 4 indices: ratio 2
    assert dominance_ratio(half).ratio == pytest.approx(2.0)
    swap = torch.eye(8)[[1, 2, 3, 0, 4, 5, 6, 7]]  # row 3 is e_0: index 3 becomes index 0
    assert dominance_ratio(spiked, swap).top1 == 0


def test_dominance_ratio_ci_covers_the_estimate_and_needs_prompts():
    gen = torch.Generator().manual_seed(0)
    outs = [torch.rand(6, 2, 16, generator=gen) for _ in range(7)]
    for k, out in enumerate(outs):
        out[..., 5] += k  # prompts disagree: a real interval
    d = dominance_ratio(outs, n_boot=300)
    assert d.low <= d.ratio <= d.high and d.low < d.high
    with pytest.raises(ValueError, match="at least one prompt"):
        dominance_ratio([])


@pytest.mark.parametrize(
    ("own", "back", "expected"),
    [
        (1.0, 3.0, "host basis"),
        (3.0, 1.0, "IRM or optimizer"),
        (3.0, 3.0, "both"),
        (1.0, 1.0, "neither"),
    ],
)
def test_basis_verdicts(own, back, expected):
    v = basis_verdict([4.0, 5.0], [2.0], [own * 2, own * 2], [2.0], [back, back], [1.0])
    assert v.verdict == expected
    assert v.effects["original"] == pytest.approx(2.25)


def test_basis_rule_reads_the_symmetric_control():
    # the rotated host's IRMs concentrate 3x read in the original basis, but the original
    # host's IRMs concentrate 2.5x read in the rotated one: reading in a foreign basis does it
    foreign = basis_verdict(
        [4.0, 5.0], [2.0], [2.0, 2.0], [2.0], [3.0, 3.0], [1.0], [2.5, 2.5], [1.0]
    )
    assert foreign.verdict == "neither" and "symmetric control" in foreign.reason
    assert foreign.effects["foreign"] == pytest.approx(2.5)
    plain = basis_verdict(
        [4.0, 5.0], [2.0], [2.0, 2.0], [2.0], [3.0, 3.0], [1.0], [1.0, 1.0], [1.0]
    )
    assert plain.verdict == "host basis"


def test_basis_and_optimizer_rules_read_the_whole_null():
    # one untrained IRM at 2.0 makes the original host's runs (median 4.5) dominate 2.25x; a
    # null whose median is 3.5 puts them at 1.29x, under the margin: not tested
    spread = [1.0, 3.0, 3.5, 4.0, 4.5]
    one = basis_verdict([4.0, 5.0], [2.0], [6.0, 6.0], [2.0], [3.0, 3.0], [1.0])
    null = basis_verdict([4.0, 5.0], spread, [6.0, 6.0], [2.0], [3.0, 3.0], [1.0])
    assert one.verdict == "both" and null.verdict == "not tested"
    assert null.effects["original"] == pytest.approx(4.5 / 3.5)
    assert "original null n=5, ratio 1.00-4.50" in null.reason
    adam = optimizer_verdict([4.0, 4.0], spread, [3.0, 3.0], spread)
    assert adam.verdict == "not tested" and "nothing to explain" in adam.reason


def test_basis_not_tested_without_runs_or_without_dominance():
    few = basis_verdict([4.0], [2.0], [4.0, 4.0], [1.0], [4.0, 4.0], [1.0])
    assert few.verdict == "not tested" and "aligned runs" in few.reason
    flat = basis_verdict([2.1, 2.2], [2.0], [4.0, 4.0], [1.0], [4.0, 4.0], [1.0])
    assert flat.verdict == "not tested" and "nothing to explain" in flat.reason
    assert "measured: on the rotated host" in flat.reason  # the effects are stated anyway
    reached = {
        basis_verdict([4.0, 5.0], [2.0], [own * 2] * 2, [2.0], [back] * 2, [1.0]).verdict
        for own, back in [(1.0, 3.0), (3.0, 1.0), (3.0, 3.0), (1.0, 1.0)]
    }
    assert reached | {few.verdict, flat.verdict} == set(BASIS_VERDICTS)


def test_optimizer_verdicts_all_reachable():
    without = optimizer_verdict([4.0, 4.0], [1.0], [3.0, 3.0], [1.0])
    assert without.verdict == "dominance without Adam"
    needed = optimizer_verdict([4.0, 4.0], [1.0], [1.2, 1.2], [1.0])
    assert needed.verdict == "Adam needed"
    unaligned = optimizer_verdict([4.0, 4.0], [1.0], [3.0], [1.0])
    assert unaligned.verdict == "not tested" and "1 SGD" in unaligned.reason
    flat = optimizer_verdict([1.1, 1.2], [1.0], [3.0, 3.0], [1.0])
    assert flat.verdict == "not tested" and "nothing to explain" in flat.reason
    reached = {v.verdict for v in (without, needed, unaligned, flat)}
    assert reached == set(OPTIMIZER_VERDICTS)


def test_masking_verdicts_all_reachable():
    base = [0.20, 0.25, 0.30, 0.15]
    needed = masking_verdict(
        base, [0.05, 0.1, 0.1, 0.05], [0.19, 0.24, 0.3, 0.15], dominance_effect=3.0, n_aligned=4
    )
    assert needed.verdict == "needed for alignment"
    assert needed.effects["loss_top"] == pytest.approx(0.15)
    kept = masking_verdict(
        base, [0.19, 0.24, 0.29, 0.14], [0.19, 0.24, 0.3, 0.15], dominance_effect=3.0, n_aligned=4
    )
    assert kept.verdict == "substituted"
    # a loss no bigger than twice the random mask's is not the dominant indices' doing
    both = masking_verdict(
        base, [0.1] * 4, [0.12, 0.17, 0.22, 0.07], dominance_effect=3.0, n_aligned=4
    )
    assert both.verdict == "substituted"
    # judged by its effect whether or not the masked indices dominate, which is stated
    flat = masking_verdict(base, base, base, dominance_effect=1.2, n_aligned=4)
    assert flat.verdict == "substituted" and "1.20x the untrained null's median" in flat.reason
    assert "0.0 points" in flat.reason
    few = masking_verdict(base, base, base, dominance_effect=3.0, n_aligned=1)
    assert few.verdict == "not tested"
    reached = {v.verdict for v in (needed, kept, both, flat, few)}
    assert reached == set(MASKING_VERDICTS)


def test_same_index_verdicts_all_reachable():
    sets = {"q1": [7, 7], "q2": [7, 7], "q3": [7, 9], "all": [7]}
    assert same_index_verdict(sets).verdict == REPRODUCED  # 6/7 runs, 4 sets
    half = {"q1": [7, 7], "q2": [7, 2], "q3": [3, 4]}
    partly = same_index_verdict(half)
    assert partly.verdict == PARTLY and partly.effects["modal_share"] == pytest.approx(3 / 6)
    spread = {"q1": [1, 2], "q2": [3, 4], "q3": [5, 6]}
    assert same_index_verdict(spread).verdict == NOT
    assert same_index_verdict({"q1": [1, 1], "q2": [1, 1]}).verdict == NOT_TESTED


def test_early_layers_verdicts_all_reachable():
    falling = {"q1": [4.0, 5.0], "q2": [3.0], "q3": [2.0], "q4": [1.0]}
    done = early_layers_verdict(falling)
    assert done.verdict == REPRODUCED and done.effects["q1_over_q4"] == pytest.approx(4.5)
    bumpy = {"q1": [4.0], "q2": [2.0], "q3": [3.0], "q4": [1.0]}
    assert early_layers_verdict(bumpy).verdict == PARTLY
    rising = {"q1": [1.0], "q2": [2.0], "q3": [3.0], "q4": [4.0]}
    assert early_layers_verdict(rising).verdict == NOT
    assert early_layers_verdict({**rising, "q3": []}).verdict == NOT_TESTED
