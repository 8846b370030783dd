"""The ablation study of one residual index, on the tiny host."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from irm_lens import IRM, encode, load_dataset
from irm_lens.evaluate import answer_nll_table, mean_nll
from irm_lens.inject import (
    add_at,
    keep_index,
    resid_mid_hook,
    resid_pre_hook,
    set_at,
    write_hook,
    zero_index,
)
from irm_lens.interventions.ablation import _resid_set, ablation_study, conditions, set_index


@pytest.fixture(scope="module")
def steer(tiny_host):
    return IRM.for_host(tiny_host, seed=1, init="torch")


def test_edits_and_patches_are_named_for_the_tables_that_record_them():
    assert str(zero_index(270)) == "zero index 270" and zero_index(270).index == 270
    assert str(keep_index(5)) == "keep only index 5"
    assert str(set_index(7, torch.zeros(2), label="its mean")) == "set index 7 to its mean"
    assert (
        str(set_at(507, 0.0)) == "set channel 507 to 0"
        and str(add_at(3, 2.5)) == "add 2.5 to channel 3"
    )
    assert zero_index(4) == zero_index(4) != zero_index(5)  # compared by what they do, by name


def test_set_index_edit_per_layer_slot():
    out = torch.ones(2, 1, 3, 4)
    edited = set_index(2, torch.tensor([5.0, -1.0]))(out)
    assert torch.all(edited[0, ..., 2] == 5.0) and torch.all(edited[1, ..., 2] == -1.0)
    assert torch.all(edited[..., [0, 1, 3]] == 1.0) and torch.all(out == 1.0)


def test_residual_ablation_reaches_the_stream(tiny_host):
    tokens = torch.tensor([encode(tiny_host.tokenizer, "What is the capital of France?").ids])
    values = torch.zeros(tiny_host.cfg.n_layers)
    with torch.no_grad(), _resid_set(tiny_host, 6, values, "0"):
        _, cache = tiny_host.run_with_cache(tokens, names_filter=[resid_mid_hook(2), write_hook(2)])
    # x_6 entered block 2 as 0, so after attention it holds only attention's contribution
    torch.testing.assert_close(cache[resid_mid_hook(2)][..., 6], cache[write_hook(2)][..., 6])


def test_residual_conditions_feed_the_irm_the_ablated_stream(tiny_host, steer):
    tokens = torch.tensor([encode(tiny_host.tokenizer, "What is the capital of France?").ids])
    n = tiny_host.cfg.n_layers
    with torch.no_grad(), _resid_set(tiny_host, 6, torch.zeros(n)):
        _, cache = tiny_host.run_with_cache(tokens, names_filter=[resid_pre_hook(0), write_hook(0)])
    expected = cache[resid_pre_hook(0)] + cache[write_hook(0)]  # the IRM's input, ablated
    assert torch.all(expected[..., 6] == cache[write_hook(0)][..., 6])
    found = conditions(tiny_host, steer, 6, irm_means=torch.zeros(n), resid_means=torch.zeros(n))
    seen = []
    handle = steer.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        with torch.no_grad(), found["resid_zero"]():
            tiny_host(tokens)
    finally:
        handle.remove()
    torch.testing.assert_close(seen[0], expected)


def test_ablation_study_conditions(tiny_host, steer):
    rows = load_dataset("anger", split="test").iloc[:3]
    table = ablation_study(tiny_host, steer, rows, 5, emotion="anger", max_new_tokens=3)
    table = table.set_index("condition")
    assert {
        "host",
        "irm",
        "irm_zero",
        "irm_mean",
        "resid_zero",
        "resid_mean",
        "scale_0",
        "scale_0.5",
        "scale_1.5",
        "scale_2",
    } == set(table.index)
    assert table.loc["irm", "kl_to_irm"] == pytest.approx(0.0, abs=1e-12)
    assert (table["kl_to_irm"].dropna() >= 0).all()
    assert table.loc["irm_zero", "kl_to_irm"] > 0 and table.loc["resid_zero", "kl_to_irm"] > 0
    with_irm = mean_nll(answer_nll_table(tiny_host, rows, irm=steer))
    alone = mean_nll(answer_nll_table(tiny_host, rows))
    assert table.loc["irm", "nll"] == pytest.approx(with_irm, rel=1e-5)
    assert table.loc["host", "nll"] == pytest.approx(alone, rel=1e-5)
    assert table.loc["scale_0", "nll"] == pytest.approx(alone, rel=1e-5)  # alpha 0 = IRM off
    assert table.loc["scale_2", "alpha"] == 2.0 and math.isnan(table.loc["host", "alpha"])
    assert table["nrc_share"].between(0, 1).all() and table["fact_retention"].between(0, 1).all()


def test_bad_index(tiny_host, steer):
    rows = load_dataset("anger", split="test").iloc[:1]
    with pytest.raises(ValueError, match=r"0\.\.63"):
        ablation_study(tiny_host, steer, rows, 64, emotion="anger")
    with pytest.raises(ValueError, match="at least one row"):
        ablation_study(tiny_host, steer, rows.iloc[:0], 3, emotion="anger")


def test_ablate_from_the_command_line(run_dir, tmp_path, capsys):
    from irm_lens.cli import main

    code = main(
        [
            "ablate",
            str(tmp_path / "run"),
            "--index",
            "3",
            "--max-rows",
            "2",
            "--max-new-tokens",
            "2",
            "--no-png",
        ]
    )
    assert code == 0
    out = tmp_path / "run" / "ablation_index3"
    kept = {p.name for p in out.iterdir()}
    assert kept == {"ablation.csv", "answers.csv", "ablation.html", ".irm_lens.json"}
    said = capsys.readouterr().out
    assert "resid_zero" in said and "IRM with output index 3 set to 0" in said
    answers = pd.read_csv(out / "answers.csv", keep_default_na=False)
    table = pd.read_csv(out / "ablation.csv")
    assert len(answers) == 2 * len(table)  # every condition's answer to both questions
    assert set(answers["intervention"]) == set(table["intervention"])
    assert main(["ablate", str(tmp_path / "run"), "--index", "64"]) == 2
    assert "0..63" in capsys.readouterr().err
    assert main(["ablate", str(tmp_path / "missing"), "--index", "1"]) == 2


def test_ablation_figure():
    import pandas as pd

    from irm_lens.plotting import TableError, ablation_figure

    table = pd.DataFrame(
        {
            "condition": ["host", "irm", "irm_zero", "scale_0", "scale_2"],
            "alpha": [float("nan"), 1.0, 1.0, 0.0, 2.0],
            "nll": [4.0, 2.0, 2.1, 4.0, 3.0],
            "kl_to_irm": [1.5, 0.0, 0.1, 1.5, 0.9],
            "index": 507,
        }
    )
    fig = ablation_figure(table)
    bars, nll, kl = fig.data
    assert list(bars.x) == ["host", "irm", "irm_zero"]
    assert list(nll.x) == [0.0, 1.0, 2.0] and list(nll.y) == [4.0, 2.0, 3.0]
    assert list(kl.y) == [1.5, 0.0, 0.9]
    assert "507" in fig.layout.title.text
    with pytest.raises(TableError, match="kl_to_irm"):
        ablation_figure(table.drop(columns="kl_to_irm"))


def test_own_index_ablation_against_controls(tiny_host):
    from irm_lens.interventions.ablation import own_index_ablation

    irm = IRM.for_host(tiny_host, seed=1, init="torch", masked=(3,))  # writes nothing at 3
    rows = pd.DataFrame({"question": ["Why?", "How so?"], "answer": ["Because.", "Like that."]})
    table = own_index_ablation(tiny_host, irm, rows, 5, [3, 5], mode="plain")
    assert table["condition"].tolist() == ["host", "irm", "top", "control", "control"]
    by = table.set_index(["condition", "index"])["undone"]
    assert by[("host", -1)] == 1.0 and by[("irm", -1)] == 0.0
    assert by[("control", 3)] == pytest.approx(0.0, abs=1e-9)  # zeroing nothing undoes nothing
    assert by[("control", 5)] == pytest.approx(by[("top", 5)])
    assert by[("top", 5)] != 0.0
    nll = table.set_index("condition")["nll"]
    gain = nll["host"] - nll["irm"]
    assert by[("top", 5)] == pytest.approx((table["nll"].iloc[2] - nll["irm"]) / gain)
