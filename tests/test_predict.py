"""The predictor of the index an IRM pushes on: a planted cheap lever is ranked first."""

from __future__ import annotations

import math

import pytest
import torch

from irm_lens.data.datasets import load_dataset
from irm_lens.interventions.predict import (
    bias_gradients,
    host_levers,
    predict_index,
    validate_prediction,
)

PLANTED = 17


@pytest.fixture(scope="module")
def planted_host(_cache_dir):
    """A fresh tiny host (the session's stays untouched) with one cheap lever: a large final-norm
    gain at ``PLANTED`` and an unembedding row there that points at the anger answers' tokens."""
    from irm_lens import load_host
    from irm_lens.data.batches import encode_rows

    host = load_host("tiny-random-llama", device="cpu")
    rows = load_dataset("anger", split="train").head(16)
    answer_ids = sorted({t for ex in encode_rows(host.tokenizer, rows, "plain")
                         for t in ex.answer_ids})  # fmt: skip
    with torch.no_grad():
        gain = host.ln_final.weight
        gain[PLANTED] = 10 * gain.abs().max()
        host.W_U[PLANTED] = 0.0
        host.W_U[PLANTED, answer_ids] = 5 * host.W_U.abs().max()
    return host, rows


def test_a_planted_cheap_lever_is_predicted_first(planted_host, tiny_host):
    host, rows = planted_host
    grads = bias_gradients(host, rows, mode="plain", max_len=48)
    assert grads.shape == (host.cfg.n_layers, host.cfg.d_model) and torch.isfinite(grads).all()
    table = predict_index(grads, levers=host_levers(host, massive=[3]))
    assert int(table.iloc[0]["index"]) == PLANTED and int(table.iloc[0]["rank"]) == 1
    assert int(table.loc[table["index"] == PLANTED, "lever_rank"].iloc[0]) == 1
    assert table["share"].sum() == pytest.approx(1.0)
    assert bool(table.loc[table["index"] == 3, "massive"].iloc[0])
    # the control: the same rows on the unplanted host do not single that index out
    plain = predict_index(bias_gradients(tiny_host, rows, mode="plain", max_len=48))
    assert int(plain.loc[plain["index"] == PLANTED, "rank"].iloc[0]) > 1
    # a layer subset sums only those layers' gradients
    sub = predict_index(grads, layers=[0, 2])
    expected = grads[[0, 2], PLANTED].abs().sum().item()
    assert sub.loc[sub["index"] == PLANTED, "score"].iloc[0] == pytest.approx(expected, rel=1e-6)


def test_the_original_objective_and_bad_rows(tiny_host):
    from irm_lens.training.config import Objective

    rows = load_dataset("sadness", split="train").head(4)
    t2 = bias_gradients(tiny_host, rows, objective=Objective("paper"), mode="plain", max_len=32)
    t1 = bias_gradients(tiny_host, rows, mode="plain", max_len=32)
    assert torch.isfinite(t2).all() and not torch.allclose(t1, t2)
    with pytest.raises(ValueError, match="at least one"):
        bias_gradients(tiny_host, rows.head(0))


def test_validation_against_chance():
    good = validate_prediction([1, 1, 3, 2, 1, 5], d_model=576)
    assert good.in_top_k == 6 and good.p_value < 1e-6 and good.high < 0.05
    random = validate_prediction([300, 12, 500, 250, 90, 410, 33, 160], d_model=576)
    assert random.in_top_k == 0 and random.p_value == pytest.approx(1.0)
    assert random.low < 0.5 < random.high  # a random ranking's median percentile is 0.5
    none = validate_prediction([], d_model=576)
    assert none.n_runs == 0 and math.isnan(none.p_value)


def test_predictor_rule_reaches_every_verdict():
    from irm_lens.analysis.explain import PREDICTOR_VERDICTS, predictor_rule

    names = predictor_rule(validate_prediction([1, 2, 1, 4, 9, 30], d_model=576))
    better = predictor_rule(validate_prediction([1, 2, 40, 200, 90, 300, 150, 75], d_model=576))
    chance = predictor_rule(validate_prediction([300, 12, 500, 250, 90, 410], d_model=576))
    few = predictor_rule(validate_prediction([1, 1], d_model=576))
    verdicts = [v.verdict for v in (names, better, chance, few)]
    assert verdicts == list(PREDICTOR_VERDICTS)
    assert "5 of 6 trained top indices in the predicted top 10" in names.reason
