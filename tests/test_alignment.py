"""Specificity of an IRM to its emotion: every verdict reachable, the estimate exact."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from irm_lens.measures.alignment import (
    ALIGNED,
    MIN_SPECIFICITY,
    NOT_ALIGNED,
    NOT_TESTED,
    specificity,
    verdict_of,
)


def _table(drops: dict[str, float], n: int = 20, noise: float = 0.0, seed: int = 0):
    """Per-question NLLs: host 3 nats/token over 10 tokens; the IRM lowers each voice by its
    drop, plus per-question noise (relative)."""
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(n):
        for voice, drop in drops.items():
            host = 30.0
            irm = host * (1 - drop) * (1 + noise * rng.standard_normal())
            rows.append((q, voice, "host", host, 10))
            rows.append((q, voice, "host+irm", irm, 10))
    return pd.DataFrame(rows, columns=["question_id", "target", "condition", "nll_sum", "n_tokens"])


def test_estimate_is_own_drop_minus_mean_other_drop():
    result = specificity(_table({"anger": 0.4, "joy": 0.1, "sadness": 0.2}), "anger")
    assert result.own_drop == pytest.approx(0.4)
    assert result.other_drop == pytest.approx(0.15)
    assert result.specificity == pytest.approx(0.25)
    assert result.n_questions == 20 and result.verdict == ALIGNED


def test_aligned_when_the_ci_excludes_zero():
    result = specificity(_table({"anger": 0.4, "joy": 0.05, "neutral": 0.0}, noise=0.05), "anger")
    assert result.verdict == ALIGNED and 0 < result.low < result.specificity < result.high


def test_not_aligned_when_every_voice_drops_alike():
    result = specificity(_table({"anger": 0.2, "joy": 0.2, "neutral": 0.2}, noise=0.1), "anger")
    assert result.verdict == NOT_ALIGNED and result.low < 0 < result.high


def test_not_aligned_when_other_voices_gain_more():
    result = specificity(_table({"anger": 0.0, "joy": 0.3, "neutral": 0.3}, noise=0.02), "anger")
    assert result.verdict == NOT_ALIGNED and result.high < 0


def test_not_tested_with_too_few_questions_or_no_other_voice():
    few = specificity(_table({"anger": 0.4, "joy": 0.0}, n=3), "anger")
    assert few.verdict == NOT_TESTED and few.specificity == pytest.approx(0.4)
    alone = specificity(_table({"anger": 0.4}), "anger")
    assert alone.verdict == NOT_TESTED


def test_questions_missing_a_voice_are_left_out():
    table = _table({"anger": 0.4, "joy": 0.1})
    table = table[~((table["question_id"] == 0) & (table["target"] == "joy"))]
    assert specificity(table, "anger").n_questions == 19


def test_bad_tables_are_refused():
    with pytest.raises(ValueError, match="lacks columns"):
        specificity(pd.DataFrame({"question_id": [1]}), "anger")
    with pytest.raises(ValueError, match="no answers in the IRM's voice 'fear'"):
        specificity(_table({"anger": 0.1}), "fear")


def test_an_irm_that_breaks_the_host_is_not_aligned_even_if_specific():
    # every voice gets less likely, its own voice least: specific, but not a learned alignment
    result = specificity(_table({"anger": -0.5, "joy": -1.2, "neutral": -1.0}, noise=0.02), "anger")
    assert result.low > 0 and result.own_high < 0
    assert result.verdict == NOT_ALIGNED


def test_a_small_but_certain_preference_is_below_the_minimum_effect():
    # the untrained neutral IRM of the long tier: 0.7 % [0.2, 1.2] would exclude 0
    result = specificity(
        _table({"neutral": 0.007, "anger": 0.0, "joy": 0.0}, noise=0.001), "neutral"
    )
    assert 0 < result.low < MIN_SPECIFICITY and result.own_low > 0
    assert result.verdict == NOT_ALIGNED


def test_verdict_of_decides_from_the_two_lower_bounds():
    assert verdict_of(MIN_SPECIFICITY, 0.01) == ALIGNED
    assert verdict_of(MIN_SPECIFICITY - 1e-6, 0.01) == NOT_ALIGNED
    assert verdict_of(0.3, 0.0) == NOT_ALIGNED
    assert verdict_of(float("nan"), 0.1) == NOT_TESTED
