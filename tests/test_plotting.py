"""Figure builders: hand-built tables in, figure objects checked (no rendering)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from irm_lens.plotting import (
    TableError,
    consistency_figure,
    dominant_indices_figure,
    heatmap_figure,
    heatmap_grid,
    layer_topk_figure,
    sparsity_figure,
    token_map_figure,
    topk_timing_figure,
)

LAYERS = (7, 2, 4)  # deliberately unsorted: rows must come out ordered by layer id
D_MODEL = 5


def _value(layer: int, index: int) -> float:
    return float(layer * 10 + index) * (-1.0 if index % 2 else 1.0)


def _heat(stat: str = "mean", n_tokens: int = 23, scale: float = 1.0) -> pd.DataFrame:
    rows = [
        {"layer": layer, "index": index, "value": scale * _value(layer, index)}
        for layer in LAYERS
        for index in range(D_MODEL)
    ]
    table = pd.DataFrame(rows).assign(stat=stat, n_tokens=n_tokens)
    if stat == "mean_abs":
        table["value"] = table["value"].abs()
    return table


def _axis_titles_set(fig: go.Figure) -> None:
    for name in fig.layout:
        if name.startswith(("xaxis", "yaxis")):
            assert fig.layout[name].title.text, name


def _common(fig: go.Figure) -> None:
    assert isinstance(fig, go.Figure)
    assert fig.layout.template.layout.paper_bgcolor == "white"  # plotly_white
    assert fig.layout.font.size == 14
    _axis_titles_set(fig)


def test_heatmap_orientation_and_signed_scale():
    table = _heat()
    fig = heatmap_figure(table)
    _common(fig)
    (trace,) = fig.data
    assert isinstance(trace, go.Heatmap)
    assert list(trace.y) == sorted(LAYERS)
    assert list(trace.x) == list(range(D_MODEL))
    z = np.asarray(trace.z)
    assert z.shape == (len(LAYERS), D_MODEL)
    for row in table.itertuples():
        assert z[list(trace.y).index(row.layer), row.index] == row.value
    top = table["value"].abs().max()
    assert trace.colorscale == go.Heatmap(colorscale="RdBu_r").colorscale
    assert trace.zmid == 0 and trace.zmin == -top and trace.zmax == top
    assert fig.layout.xaxis.title.text == "residual index"
    assert fig.layout.yaxis.title.text == "injected layer"
    assert tuple(fig.layout.xaxis.range) == (-0.5, D_MODEL - 0.5)
    assert fig.layout.title.text == "Mean IRM output over 23 tokens"
    assert "%{y}" in trace.hovertemplate and "%{x}" in trace.hovertemplate
    assert "%{z" in trace.hovertemplate


def test_heatmap_zmax_override_and_title_override():
    fig = heatmap_figure(_heat(), zmax=3.5, title="custom")
    assert (fig.data[0].zmin, fig.data[0].zmax, fig.data[0].zmid) == (-3.5, 3.5, 0)
    assert fig.layout.title.text == "custom"
    with pytest.raises(ValueError, match="zmax"):
        heatmap_figure(_heat(), zmax=0.0)


def test_heatmap_mean_abs_is_sequential_from_zero():
    table = _heat("mean_abs", n_tokens=11)
    trace = heatmap_figure(table).data[0]
    assert trace.zmin == 0 and trace.zmax == table["value"].max()
    assert trace.zmid is None
    assert trace.colorscale != go.Heatmap(colorscale="RdBu_r").colorscale
    assert heatmap_figure(table).layout.title.text == "Mean |IRM output| over 11 tokens"


def test_heatmap_gaps_keep_the_full_index_range():
    table = _heat()
    table = table[~((table["layer"] == 2) & (table["index"] == 3))]
    z = np.asarray(heatmap_figure(table).data[0].z)
    assert z.shape == (len(LAYERS), D_MODEL) and np.isnan(z[0, 3])


def test_heatmap_rejects_bad_tables():
    with pytest.raises(ValueError, match="n_tokens") as info:
        heatmap_figure(_heat().drop(columns=["n_tokens", "stat"]))
    assert "stat" in str(info.value)
    with pytest.raises(TableError, match="negative"):
        heatmap_figure(_heat().assign(stat="mean_abs"))
    with pytest.raises(TableError, match="one value"):
        heatmap_figure(pd.concat([_heat(n_tokens=3), _heat(n_tokens=4)]))
    with pytest.raises(TableError, match="stat"):
        heatmap_figure(_heat(stat="median"))


def test_token_map_is_signed_and_centred():
    table = _heat()[["layer", "index", "value"]]
    fig = token_map_figure(table, token="joy")
    trace = fig.data[0]
    top = table["value"].abs().max()
    assert (trace.zmin, trace.zmax, trace.zmid) == (-top, top, 0)
    assert "'joy'" in fig.layout.title.text
    _common(fig)


def test_grid_has_one_heatmap_and_colour_scale_per_panel():
    names = ["anger", "sadness", "neutral", "untrained"]
    scales = [1.0, 2.0, 0.5, 0.01]
    tables = {name: _heat(scale=s) for name, s in zip(names, scales, strict=True)}
    fig = heatmap_grid(tables, cols=2)
    _common(fig)
    assert len(fig.data) == len(names)
    assert all(isinstance(t, go.Heatmap) for t in fig.data)
    axes = [t.coloraxis for t in fig.data]
    assert len(set(axes)) == len(names)
    assert [a.text for a in fig.layout.annotations] == names
    for trace, s in zip(fig.data, scales, strict=True):
        ca = fig.layout[trace.coloraxis]
        top = s * max(abs(_value(layer, i)) for layer in LAYERS for i in range(D_MODEL))
        assert ca.cmid == 0 and ca.cmin == pytest.approx(-top) and ca.cmax == pytest.approx(top)
    assert len({t.xaxis for t in fig.data}) == len(names)
    assert "23 tokens" in fig.layout.title.text


def test_grid_rejects_mixed_stats_and_missing_columns():
    with pytest.raises(TableError, match="one statistic"):
        heatmap_grid({"a": _heat(), "b": _heat("mean_abs")})
    with pytest.raises(ValueError, match="value"):
        heatmap_grid({"a": _heat().drop(columns="value")})


def _timing(k: int = 7) -> pd.DataFrame:
    counts = {0: 3, 1: 2, 2: 1, 3: 1, 4: 0}
    kinds = {0: "prompt", 1: "prompt", 2: "prompt", 3: "generated", 4: "generated"}
    return pd.DataFrame(
        {"token": list(counts), "kind": [kinds[t] for t in counts], "count": list(counts.values())}
    ).assign(k_used=k)


def test_topk_timing_traces_boundary_and_title():
    fig = topk_timing_figure(_timing(7))
    _common(fig)
    by_name = {t.name: t for t in fig.data}
    assert set(by_name) == {"prompt", "generated"} and len(fig.data) == 2
    assert list(by_name["prompt"].x) == [0, 1, 2] and list(by_name["prompt"].y) == [3, 2, 1]
    assert list(by_name["generated"].x) == [3, 4] and list(by_name["generated"].y) == [1, 0]
    assert by_name["prompt"].marker.color != by_name["generated"].marker.color
    (line,) = fig.layout.shapes
    assert line.x0 == line.x1 == 2.5
    assert "Top-7" in fig.layout.title.text and "1000" not in fig.layout.title.text
    assert "7" in fig.layout.yaxis.title.text


def test_topk_timing_rejects_bad_tables():
    with pytest.raises(ValueError, match="kind"):
        topk_timing_figure(_timing().drop(columns="kind"))
    with pytest.raises(TableError, match="precede"):
        topk_timing_figure(
            _timing().assign(kind=["generated", "prompt", "prompt", "prompt", "prompt"])
        )
    with pytest.raises(TableError, match="k_used"):
        topk_timing_figure(_timing().assign(k_used=[1, 2, 3, 4, 5]))


def test_layer_topk_title_uses_k():
    table = pd.DataFrame({"layer": [3, 1, 2], "count": [5, 2, 6], "k_used": 13})
    fig = layer_topk_figure(table)
    _common(fig)
    assert list(fig.data[0].x) == [1, 2, 3] and list(fig.data[0].y) == [2, 6, 5]
    assert "Top-13" in fig.layout.title.text


def test_sparsity_range_and_threshold():
    table = pd.DataFrame({"layer": [0, 1, 2], "sparsity": [0.1, 0.5, 0.9], "threshold": 1e-4})
    fig = sparsity_figure(table)
    _common(fig)
    assert tuple(fig.layout.yaxis.range) == (0, 1)
    assert "0.0001" in fig.layout.title.text
    with pytest.raises(TableError, match=r"\[0, 1\]"):
        sparsity_figure(table.assign(sparsity=[0.1, 1.5, 0.2]))
    with pytest.raises(ValueError, match="threshold"):
        sparsity_figure(table.drop(columns="threshold"))


def _dominant() -> pd.DataFrame:
    indices = [1512, 4, 9, 30, 2, 17]
    share = [0.4, 0.2, 0.15, 0.1, 0.1, 0.05]
    table = pd.DataFrame({"index": indices, "share": share, "rank": range(1, 7)})
    table["mean_abs"] = table["share"] * 2.0
    return table.sample(frac=1.0, random_state=0)  # rank, not row order, decides


def test_dominant_indices_rank_top_and_highlight():
    fig = dominant_indices_figure(_dominant(), top=4, highlight=(1512, 30, 17))
    _common(fig)
    assert list(fig.layout.xaxis.categoryarray) == ["1512", "4", "9", "30"]
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["highlighted"].x) == ["1512", "30"]
    assert list(by_name["other indices"].x) == ["4", "9"]
    assert by_name["highlighted"].marker.color != by_name["other indices"].marker.color
    assert by_name["highlighted"].showlegend
    assert fig.layout.yaxis.title.text == "share of total |IRM output|"
    assert "Top 4" in fig.layout.title.text
    assert "17 (rank 6)" in fig.layout.annotations[0].text
    with pytest.raises(TableError, match="top"):
        dominant_indices_figure(_dominant(), top=0)


def test_consistency_categories_and_grouping():
    table = pd.DataFrame(
        {
            "index": [4, 1512, 9],
            "top1_count": [1, 4, 0],
            "topk_count": [3, 5, 2],
            "n_runs": 5,
        }
    )
    table["top1_freq"] = table["top1_count"] / 5
    table["topk_freq"] = table["topk_count"] / 5
    fig = consistency_figure(table)
    _common(fig)
    assert fig.layout.barmode == "group"
    assert [t.name for t in fig.data] == ["top-1", "top-k"]
    assert list(fig.data[0].x) == ["1512", "4", "9"]
    assert list(fig.data[0].y) == [0.8, 0.2, 0.0] and list(fig.data[1].y) == [1.0, 0.6, 0.4]
    assert fig.layout.xaxis.type == "category"
    assert "5 runs" in fig.layout.title.text
    with pytest.raises(ValueError, match="top1_freq"):
        consistency_figure(table.drop(columns="top1_freq"))


def _trajectory_rows(run: str, steps: tuple[int, ...], irm: str = "snapshot") -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "run": run,
                "step": s,
                "verdict": "aligned" if s else "not aligned",
                "specificity": 0.01 * s,
                "specificity_low": 0.01 * s - 0.02,
                "specificity_high": 0.01 * s + 0.02,
                "top_index": 7 + s,
                "dominance": 1.5 + 0.01 * s,
                "dominance_low": 1.4,
                "dominance_high": 2.0 + 0.01 * s,
                "index_share": 0.1,
                "cross_layer_corr": 0.05,
                "irm": irm,
            }
            for s in steps
        ]
    )


def test_trajectory_draws_each_runs_best_irm_as_a_star_after_the_schedule():
    from analyses.plots.trajectory import trajectory_figure

    table = pd.concat(
        [
            _trajectory_rows("a", (0, 4, 8)),
            _trajectory_rows("b", (0, 4, 8)),
            _trajectory_rows("a", (6,), irm="best"),
        ]
    )
    losses = pd.DataFrame({"run": ["a", "a", "b"], "step": [4, 6, 8], "val_loss": [2.0, 1.5, 1.8]})
    fig = trajectory_figure(table, losses)
    assert list(fig.layout.xaxis.categoryarray) == ["0", "4", "8", "best"]
    stars = [t for t in fig.data if t.marker.symbol == "star"]
    # specificity, dominance, index share, and the validation curve at step 6 (its loss 1.5)
    assert [(t.xaxis, tuple(t.x)) for t in stars] == [
        ("x", ("best",)),
        ("x2", ("best",)),
        ("x3", ("best",)),
        ("x4", (6,)),
    ]
    assert stars[1].text == ("13",) and stars[3].y == (1.5,)
    assert stars[0].error_y.array == (pytest.approx(0.02),)
    # the snapshot lines never reach the best category
    assert all("best" not in tuple(t.x) for t in fig.data if t.mode == "lines+markers")
    # without best rows, no best category
    plain = trajectory_figure(table[table["irm"] == "snapshot"], losses)
    assert list(plain.layout.xaxis.categoryarray) == ["0", "4", "8"]
    assert not [t for t in plain.data if t.marker.symbol in ("star", "star-open")]


def test_evaluation_figure_keeps_its_colours_apart_and_bounds_fact_retention():
    from scipy import stats

    from analyses.plots.runset import evaluation_figure
    from irm_lens.plotting.base import BASE_COLOUR, HIGHLIGHT_COLOUR

    table = pd.DataFrame(
        {
            "run": ["a", "b"],
            "target": ["anger", "sadness"],
            "nll_drop": [0.3, -0.1],
            "nrc_share_host": [0.02, 0.01],
            "nrc_share_irm": [0.05, 0.01],
            "fact_retention_host": [0.5, 0.75],
            "fact_retention_irm": [0.25, 0.5],
            "fact_n_host": [4, 4],
            "fact_n_irm": [4, 4],
        }
    )
    fig = evaluation_figure(table)
    drops = [t for t in fig.data if t.xaxis == "x"]
    assert [(t.name, list(t.x)) for t in drops] == [("NLL lowered", ["a"]), ("NLL raised", ["b"])]
    assert {t.marker.color for t in drops}.isdisjoint({BASE_COLOUR, HIGHLIGHT_COLOUR})
    facts = [t for t in fig.data if t.xaxis == "x3"]
    irm = next(t for t in facts if t.name == "host + IRM")
    ci = stats.binomtest(1, 4).proportion_ci(method="wilson")  # run a: 1 of 4 answers
    assert irm.error_y.array[0] == pytest.approx(100 * (ci.high - 0.25))
    assert irm.error_y.arrayminus[0] == pytest.approx(100 * (0.25 - ci.low))
    bare = evaluation_figure(table.drop(columns=["fact_n_host", "fact_n_irm"]))
    assert all(t.error_y.array is None for t in bare.data if t.xaxis == "x3")
