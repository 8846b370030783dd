"""The predictor of the index an IRM pushes on: a planted cheap lever is ranked first."""

from __future__ import annotations

import json
import math

import pandas as pd
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
    answer_ids = sorted(
        {t for ex in encode_rows(host.tokenizer, rows, "plain") for t in ex.answer_ids}
    )
    with torch.no_grad():
        gain = host.ln_final.weight
        gain[PLANTED] = 10 * gain.abs().max()
        host.W_U[PLANTED] = 0.0
        host.W_U[PLANTED, answer_ids] = 5 * host.W_U.abs().max()
    return host, rows


def test_a_planted_cheap_lever_is_predicted_first(planted_host, tiny_host):
    host, rows = planted_host
    grads = bias_gradients(host, rows, mode="plain", max_len=48)
    assert grads.shape == (16, host.cfg.n_layers, host.cfg.d_model) and torch.isfinite(grads).all()
    # one backward pass per batch gives each row its own gradient: the same as row by row
    alone = bias_gradients(host, rows.iloc[[3]], mode="plain", max_len=48)
    total = _terms(host, rows)  # the loss terms of all 16 rows
    own = _terms(host, rows.iloc[[3]])
    assert torch.allclose(grads[3], alone[0] * own / total, rtol=1e-3, atol=1e-7)
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
    expected = grads[:, [0, 2], PLANTED].sum(0).abs().sum().item()
    assert sub.loc[sub["index"] == PLANTED, "score"].iloc[0] == pytest.approx(expected, rel=1e-6)


def _terms(host, rows) -> int:
    from irm_lens.data.batches import collate, encode_rows, pad_id
    from irm_lens.training.losses import loss_terms

    examples = encode_rows(host.tokenizer, rows, "plain")
    return loss_terms(collate(examples, pad_id(host.tokenizer), 48), "next-token")


def test_consistency_ranks_agreeing_rows_over_large_noisy_ones():
    grads = torch.zeros(4, 2, 5)
    grads[:, :, 1] = torch.tensor([5.0, -5.0, 5.0, -4.0])[:, None]  # large, rows disagree
    grads[:, :, 3] = 0.1  # small, every row agrees
    table = predict_index(grads).set_index("index")
    assert table.loc[1, "rank"] == 1 and table.loc[3, "rank"] == 2  # the summed gradient
    assert table.loc[3, "consistency_rank"] == 1  # all rows agree: 1 per layer
    assert table.loc[3, "consistency"] == pytest.approx(2.0)
    assert table.loc[1, "consistency"] == pytest.approx(2 * 0.25 / math.sqrt(22.75), rel=1e-6)


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
    from analyses.rules.explain import PREDICTOR_VERDICTS, predictor_rule

    names = predictor_rule(validate_prediction([1, 2, 1, 4, 9, 30], d_model=576))
    better = predictor_rule(validate_prediction([1, 2, 40, 200, 90, 300, 150, 75], d_model=576))
    # three runs hit (p ~ 6e-4) while the rest rank near the bottom: the median is not better
    hits_only = [1, 2, 3, 500, 550, 400, 450, 520, 480, 300]
    partly = predictor_rule(validate_prediction(hits_only, d_model=576))
    chance = predictor_rule(validate_prediction([300, 12, 500, 250, 90, 410], d_model=576))
    few = predictor_rule(validate_prediction([1, 1], d_model=576))
    verdicts = [v.verdict for v in (names, better, partly, chance, few)]
    assert verdicts == list(PREDICTOR_VERDICTS)
    assert "5 of 6 trained top indices in the predicted top 10" in names.reason
    assert "median rank is no better than random" in partly.reason
    # the other half of "partly": every run in the top fifth, none in the top 10
    leaning = predictor_rule(validate_prediction([20, 30, 25, 40, 35, 50, 60], d_model=576))
    assert leaning.verdict == "partly better than chance" and "no more top hits" in leaning.reason


def test_predict_command_writes_the_ranking_and_names_the_index(tmp_path, capsys):
    from irm_lens.cli.main import main

    out = tmp_path / "pred"
    args = "predict tiny-random-llama --emotion joy --max-rows 4 --max-len 32 --prompt-mode plain "
    args += "--layers 0-1 --fit-steps 2 --lens-texts 2 --no-progress --device cpu"
    code = main([*args.split(), "--out", str(out)])
    assert code == 0
    table = pd.read_csv(out / "prediction.csv")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["layers"] == [0, 1] and summary["rows"] == 4
    assert summary["predicted_index"] == int(table.iloc[0]["index"])
    ranks = {"consistency_rank", "fit_rank", "lever_rank", "transport_rank", "stop_rank"}
    assert ranks | {"massive"} <= set(table)
    assert summary["fitted_index"] == int(table.loc[table["fit_rank"] == 1, "index"].iloc[0])
    printed = capsys.readouterr().out
    assert f"bias gradient is largest at index {summary['predicted_index']}" in printed
    assert f"a bias-only fit pushes most on {summary['fitted_index']}" in printed
    assert main(["predict", "tiny-random-llama", "--emotion", "fear", "--out", str(out)]) == 2
    assert "fear" in capsys.readouterr().err


def test_a_bias_fit_learns_and_the_stop_lever_is_read(planted_host):
    from irm_lens.data.batches import pad_id
    from irm_lens.interventions.predict import fit_bias

    host, rows = planted_host
    fit = fit_bias(host, rows, mode="plain", max_len=48, steps=12, lr=1e-2, batch_size=16)
    fitted = fit.vectors
    assert fitted.shape == (host.cfg.n_layers, host.cfg.d_model) and fitted.abs().sum() > 0
    assert len(fit.losses) == 12 and max(fit.losses[-3:]) < fit.losses[0]  # it learns
    again = fit_bias(host, rows, mode="plain", max_len=48, steps=12, lr=1e-2, batch_size=16)
    assert torch.equal(fitted, again.vectors)  # seeded: the same rows in the same order
    table = predict_index(torch.zeros(1, *fitted.shape), levers=host_levers(host), fitted=fitted)
    table = table.set_index("index")
    expected = fitted[:, PLANTED].abs().sum().item()
    assert table.loc[PLANTED, "fit"] == pytest.approx(expected, rel=1e-6)
    assert sorted(table["fit_rank"]) == list(range(1, host.cfg.d_model + 1))
    stop = pad_id(host.tokenizer)
    gain, w_u = host.ln_final.weight.detach(), host.W_U.detach()
    expected = (gain[5] * (w_u[5, stop] - w_u[5].mean())).abs().item()
    assert table.loc[5, "stop_lever"] == pytest.approx(expected, rel=1e-5)


def test_a_bias_fit_trains_only_the_given_layers_with_accumulated_batches(planted_host):
    from irm_lens.interventions.predict import fit_bias

    host, rows = planted_host
    common = dict(mode="plain", max_len=48, steps=3, lr=1e-2, batch_size=4)
    fit = fit_bias(host, rows, layers=[1], grad_accum=2, **common)
    assert fit.vectors[1].abs().sum() > 0
    others = [layer for layer in range(host.cfg.n_layers) if layer != 1]
    assert fit.vectors[others].abs().sum() == 0
    assert len(fit.losses) == 3
    steps, forwards = [], []
    real_step = torch.optim.Adam.step

    def counted_step(self, *args, **kwargs):
        steps.append(1)
        return real_step(self, *args, **kwargs)

    real_forward = host.forward

    def counted_forward(*args, **kwargs):
        forwards.append(1)
        return real_forward(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.Adam, "step", counted_step)
        mp.setattr(host, "forward", counted_forward)
        fit_bias(host, rows, layers=[1], grad_accum=2, **common)
    assert (len(steps), len(forwards)) == (3, 6)  # one optimizer step per grad_accum batches
    with pytest.raises(ValueError, match="grad_accum=0"):
        fit_bias(host, rows, grad_accum=0, **common)


def test_the_jacobian_lens_lever_ranks_the_planted_index_first(planted_host, tiny_host):
    from irm_lens.anatomy import final_gain, unembedding
    from irm_lens.interventions.predict import transport_levers

    host, rows = planted_host
    texts = (rows["question"] + " " + rows["answer"]).tolist()[:4]
    levers = transport_levers(host, texts, max_seq_len=48, skip_first_positions=2)
    assert levers.shape == (host.cfg.n_layers, host.cfg.d_model) and torch.isfinite(levers).all()
    # the final block's transport is the identity: gain x centred unembedding row norm
    gain, w_u = final_gain(host).double(), unembedding(host).double()
    by_hand = gain.abs() * (w_u - w_u.mean(dim=1, keepdim=True)).norm(dim=1)
    torch.testing.assert_close(levers[-1].double(), by_hand, rtol=1e-4, atol=1e-6)
    table = predict_index(torch.zeros(1, *levers.shape), transport=levers)
    assert int(table.loc[table["index"] == PLANTED, "transport_rank"].iloc[0]) == 1
    assert int(levers[0].argmax()) == PLANTED  # carried from the first block to the logits
    # the control: the unplanted host does not single it out
    plain = transport_levers(tiny_host, texts, max_seq_len=48, skip_first_positions=2)
    assert int(plain.sum(0).argmax()) != PLANTED


def test_a_committed_result_is_reused_only_under_the_settings_it_was_computed_with(tmp_path):
    from analyses.predict import KEY, RANKS, committed_ranks

    folder = tmp_path / "predict"
    folder.mkdir()
    row = dict(zip(KEY, ["r", "matrix", "joy", "next-token", "12", 7], strict=True))
    pd.DataFrame([{**row, **dict.fromkeys(RANKS, 3)}]).to_csv(folder / "data.csv", index=False)
    pd.DataFrame([{"index": 7, "emotion": "joy", "objective": "next-token"}]).to_csv(
        folder / "predictions.csv", index=False
    )
    legacy = {  # written before the result recorded its settings: version 1
        "settings": {},
        "summary": {"rows_per_gradient": 64, "fit_steps": 60},
        "figures_config": {"host": None, "dtype": "float32", "fast": False},
    }
    (folder / "config.json").write_text(json.dumps(legacy))
    v1 = {
        "version": 1,
        "host": None,
        "dtype": "float32",
        "fast": False,
        "rows_per_gradient": 64,
        "fit_steps": 60,
        "max_len": 128,
        "lens_texts": 32,
    }
    data, predictions, summary = committed_ranks(tmp_path, v1)
    assert data.to_dict("records") == [{**row, **dict.fromkeys(RANKS, 3)}]  # layers stay text
    assert list(predictions["emotion"]) == ["joy"] and summary["fit_steps"] == 60
    assert committed_ranks(tmp_path, {**v1, "version": 2})[0].empty
    assert committed_ranks(tmp_path, {**v1, "lens_texts": 8})[0].empty
    (folder / "config.json").write_text(json.dumps({**legacy, "settings": {**v1, "version": 2}}))
    assert (
        committed_ranks(tmp_path, v1)[0].empty
        and len(committed_ranks(tmp_path, {**v1, "version": 2})[0]) == 1
    )
    pd.DataFrame([row]).to_csv(folder / "data.csv", index=False)  # written before a score existed
    assert committed_ranks(tmp_path, {**v1, "version": 2})[0].empty
