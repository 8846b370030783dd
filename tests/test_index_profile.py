"""``measures.index_profile`` and ``irm-lens profile`` on inputs with known answers."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from irm_lens.cli import main
from irm_lens.host import load_host
from irm_lens.inject import resid_pre_hook
from irm_lens.interventions.index_profile import (
    index_profile,
    massive_activations,
    matched_controls,
    norm_gain_table,
    norm_lever,
)
from irm_lens.prompts import PAPER_PROMPTS, encode

PROMPTS = list(PAPER_PROMPTS[:3])


def test_gain_table_finds_a_planted_gain_and_ranks_it_smallest():
    host = load_host("tiny-random-llama", device="cpu")  # own copy: its weights are edited
    with torch.no_grad():
        host.blocks[2].ln1.weight[7] = 1e-3
    table = norm_gain_table(host, [7, 8])
    row = table[(table["norm"] == "ln1") & (table["layer"] == 2) & (table["index"] == 7)].iloc[0]
    assert row["gain"] == pytest.approx(1e-3)
    assert row["gain_rank"] == 1
    other = table[(table["norm"] == "ln1") & (table["layer"] == 1) & (table["index"] == 7)]
    assert other.iloc[0]["gain_rank"] > 1
    final = table[table["norm"] == "final"]
    assert set(final["layer"]) == {host.cfg.n_layers} and len(final) == 2
    assert len(table) == 2 * (2 * host.cfg.n_layers + 1)


def test_massive_needs_both_the_absolute_and_the_relative_threshold():
    residual = pd.DataFrame(
        {
            "layer": [0, 0, 0, 1],
            "index": [3, 4, 5, 3],
            "token_kind": ["first", "first", "other", "delimiter"],
            "max_abs": [5000.0, 150.0, 50.0, 2500.0],
            "layer_median_abs": [1.0, 1.0, 0.01, 1.0],
        }
    )
    out = massive_activations(residual)
    assert list(out["index"]) == [3]  # 4: only 150x the median; 5: below 100 in absolute size
    assert out.iloc[0]["layer"] == 0 and out.iloc[0]["times_median"] == 5000.0
    assert massive_activations(residual, ratio=100.0)["index"].tolist() == [3, 4]
    assert massive_activations(residual, threshold=10.0)["index"].tolist() == [3, 5]
    assert massive_activations(residual.assign(max_abs=1.0)).empty


def test_controls_are_seeded_nearest_in_magnitude_and_never_the_index():
    residual = pd.DataFrame({"index": range(100), "mean_abs": [float(i) for i in range(100)]})
    controls = matched_controls(residual, 50, n=4, window=2, seed=3)
    assert len(controls) == 4 and 50 not in controls
    assert all(abs(c - 50) <= 4 for c in controls)  # the 8 nearest: 46..54 without 50
    assert controls == matched_controls(residual, 50, n=4, window=2, seed=3)
    with pytest.raises(ValueError, match="index 100 is not"):
        matched_controls(residual, 100)


def test_lever_at_scale_one_changes_nothing(tiny_host):
    rms, entropy = norm_lever(tiny_host, PROMPTS, [5, 9], scales=(1.0,), layers=[0, 2])
    assert rms["log_rms_ratio"].abs().max() == 0.0
    assert entropy["entropy_change"].abs().max() == 0.0


def test_lever_rms_at_the_scaled_norm_matches_the_formula(tiny_host):
    index, layer, scale = 9, 2, 3.0
    rms, _ = norm_lever(tiny_host, PROMPTS, [index], scales=(scale,), layers=[layer])
    assert rms["norm_layer"].min() == layer  # nothing before the scaled point
    assert set(rms[rms["norm_layer"] == layer]["norm"]) == {"ln1", "ln2"}
    expected = []
    for prompt in PROMPTS:
        ids = encode(tiny_host.tokenizer, prompt, mode="plain").prompt_ids
        _, cache = tiny_host.run_with_cache(
            torch.tensor([ids]), names_filter=[resid_pre_hook(layer)]
        )
        x = cache[resid_pre_hook(layer)][0].double()
        share = x[:, index].pow(2) / x.pow(2).sum(-1)
        expected.append(0.5 * torch.log1p((scale**2 - 1) * share))
    want = float(torch.cat(expected).mean())
    got = rms[(rms["norm"] == "ln1") & (rms["norm_layer"] == layer)]["log_rms_ratio"].item()
    assert got == pytest.approx(want, rel=1e-6)


def test_index_profile_facts_agree_with_its_tables(tiny_host):
    result = index_profile(tiny_host, PROMPTS, 5, n_controls=3, layers=[1, 3])
    facts = result.facts
    assert result.controls and 5 not in result.controls and len(result.controls) == 3
    unembed = tiny_host.W_U.detach().norm(dim=1)
    assert facts.unembed_norm_rank == int((unembed > unembed[5]).sum()) + 1
    assert facts.final_gain == pytest.approx(float(tiny_host.ln_final.weight[5]))
    mine = result.magnitude[result.magnitude["index"] == 5]
    assert facts.peak_abs == pytest.approx(mine["max_abs"].max())
    assert set(result.lever_entropy["scaled_layer"]) == {1, 3}
    assert set(facts.final_rms_effect) == {"0", "2"} and not facts.massive
    final = result.lever_rms[
        (result.lever_rms["norm"] == "final") & (result.lever_rms["scale"] == 0)
    ]
    sizes = final.assign(s=final["log_rms_ratio"].abs()).groupby("index")["s"].median()
    assert facts.final_rms_effect["0"] == pytest.approx(sizes[5] / sizes.drop(5).median())
    with pytest.raises(ValueError, match="out of range"):
        index_profile(tiny_host, PROMPTS, tiny_host.cfg.d_model)


def test_cli_profile_writes_tables_summary_and_figure(tmp_path, capsys):
    out = tmp_path / "p"
    code = main(
        [
            "profile",
            "tiny-random-llama",
            "--index",
            "5",
            "--controls",
            "2",
            "--no-png",
            "--no-progress",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    for name in ("gains", "magnitude", "massive", "lever_rms", "lever_entropy"):
        assert (out / f"{name}.csv").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["index"] == 5 and len(summary["controls"]) == 2
    assert (out / "figure.html").exists()
    assert "residual index 5" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--index", "64"], "--index 64 is out of range"),
        (["--index", "5", "--scales", "1"], "other than 1"),
        (["--index", "5", "--scales", "a,b"], "comma-separated numbers"),
        (["--index", "5", "--prompts", "/nonexistent/p.txt"], "/nonexistent/p.txt"),
    ],
)
def test_cli_profile_bad_input_names_the_argument(tmp_path, capsys, args, message):
    code = main(
        [
            "profile",
            "tiny-random-llama",
            "--no-png",
            "--out",
            str(tmp_path / "p"),
            "--device",
            "cpu",
            *args,
        ]
    )
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


@pytest.mark.embedded
def test_embedded_host_507_is_massive_with_the_smallest_final_gain(embedded_host):
    result = index_profile(embedded_host, list(PAPER_PROMPTS), 507, n_controls=2, layers=[20])
    facts = result.facts
    assert facts.massive and facts.final_gain_rank == 1
    assert facts.peak_token_kind == "first" and facts.peak_abs > 1e4
    assert int(result.massive.iloc[0]["index"]) == 507
    assert math.isfinite(facts.entropy_effect["2"])
