"""Figures of the host-side analyses, and `irm-lens analyze --host-analyses` on the tiny host."""

from __future__ import annotations

import pandas as pd
import pytest

from irm_lens.cli import main
from irm_lens.plotting import (
    TableError,
    logit_effect_figure,
    massive_dims_figure,
    norm_effect_figure,
    propagation_figure,
    striation_figure,
)


def test_propagation_figure_one_legend_entry_per_kind():
    table = pd.DataFrame(
        {
            "index": [5, 5, 9, 9, 11, 11],
            "kind": ["target"] * 2 + ["random"] * 4,
            "layer": [1, 2] * 3,
            "persistence": [1.0, 0.9, 1.0, 0.5, 1.0, 0.4],
            "leak": 0.1,
        }
    )
    fig = propagation_figure(table)
    assert [t.name for t in fig.data] == ["index 5", "random indices", "random indices"]
    assert [t.showlegend for t in fig.data] == [True, True, False]
    assert "index 5" in fig.layout.title.text and "layer 1" in fig.layout.title.text


def test_logit_norm_striation_and_profile_figures():
    logit = pd.DataFrame(
        {
            "direction": ["promoted", "suppressed"],
            "rank": [1, 1],
            "token_id": [4, 2],
            "token": [" angry", " calm"],
            "effect": [2.0, -1.0],
        }
    )
    bars = logit_effect_figure(logit, index=7).data[0]
    assert list(bars.x) == [-1.0, 2.0] and list(bars.y) == ["' calm'", "' angry'"]
    norm = pd.DataFrame(
        {"scale": [1.0, 8.0], "entropy": [2.0, 3.0], "top1_prob": [0.5, 0.3], "rms": [1.0, 2.0]}
    )
    fig = norm_effect_figure(norm, index=7)
    assert [list(t.y) for t in fig.data] == [[2.0, 3.0], [0.5, 0.3]]
    stats = {"run": {"index_share": 0.6, "layer_share": 0.3, "resid_share": 0.1}}
    assert [t.y[0] for t in striation_figure(stats).data] == [0.6, 0.3, 0.1]
    profile = pd.DataFrame(
        {
            "layer": [0, 0, 1, 1],
            "index": [0, 1, 0, 1],
            "token_kind": "first",
            "max_abs": [1.0, 3.0, 2.0, 500.0],
        }
    )
    fig = massive_dims_figure(profile, indices=[1])
    assert list(fig.data[1].y) == [3.0, 500.0]
    with pytest.raises(TableError, match="effect"):
        logit_effect_figure(logit.drop(columns="effect"), index=7)
    with pytest.raises(ValueError, match="at least one"):
        striation_figure({})


def test_analyze_with_host_analyses(tiny_host, run_dir, tmp_path, capsys):
    assert main(["record", str(tmp_path / "run"), "--max-rows", "2", "--max-new-tokens", "3"]) == 0
    code = main(
        [
            "analyze",
            str(tmp_path / "run"),
            "--out",
            str(tmp_path / "a"),
            "--no-png",
            "--host-analyses",
            "--permutations",
            "10",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    assert "massive-activation dim" in capsys.readouterr().out
    host_dir = tmp_path / "a" / "run" / "host"

    def read(name: str) -> pd.DataFrame:
        return pd.read_csv(host_dir / f"{name}.csv")

    d_model, n_layers = tiny_host.cfg.d_model, tiny_host.cfg.n_layers
    gains = read("norm_gains")  # one row per residual index, ranks a permutation
    assert gains["index"].tolist() == list(range(d_model))
    assert sorted(gains["final_gain_rank"]) == list(range(1, d_model + 1))
    massive = read("massive_dims")  # the tiny random host has no massive dimension
    assert (
        list(massive.columns)
        == ["index", "max_abs", "median_max_abs", "ratio", "layer", "token_kind"]
        and (massive["ratio"] >= 20).all()
    )
    push = read("propagation")  # the skip path carries a pushed index to every later layer
    target = push[push["kind"] == "target"]
    assert target["layer"].tolist() == list(range(n_layers))
    assert target["persistence"].between(0.5, 1.5).all() and (push["leak"] >= 0).all()
    assert set(push["kind"]) == {"target", "random"}
    carried = read("irm_index_propagation")
    assert carried["layer"].tolist() == list(range(n_layers))
    assert (carried["injected_rms"].diff().dropna() >= 0).all()  # cumulative injections grow
    direct = read("direct_logit_effect")
    promoted = direct[direct["direction"] == "promoted"]["effect"]
    suppressed = direct[direct["direction"] == "suppressed"]["effect"]
    assert len(promoted) == len(suppressed) > 0 and promoted.min() > suppressed.max()
    scaled = read("norm_mediated_effect")
    assert scaled["scale"].tolist() == sorted(scaled["scale"]) and (scaled["entropy"] > 0).all()
    # the striation table carries the control: the untrained IRM on the same prompts
    versus = pd.read_csv(host_dir.parent / "striation.csv")
    assert len(versus) == 1 and int(versus["n_permutations"].iloc[0]) == 10
    shares = versus[["index_share", "layer_share", "resid_share"]].iloc[0].sum()
    assert shares == pytest.approx(1.0, abs=1e-6)
    assert 0 < versus["baseline_index_share"].iloc[0] < 1
    assert not (host_dir / "striation_vs_untrained.csv").exists()
    assert "plotly" in (host_dir / "propagation.html").read_text()[:20000].lower()
