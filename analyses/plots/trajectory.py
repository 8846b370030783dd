"""The figure of ``rules.budget``: alignment, dominance and striation against steps."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analyses.rules.paper import DOMINANT_GAP
from irm_lens.plotting.base import check_columns, ci_error_bars, style

PALETTE = ("#d62728", "#ff7f0e", "#1f77b4", "#2ca02c", "#7f7f7f", "#9467bd")
SNAPSHOT_COLUMNS = (
    "verdict",
    "specificity",
    "specificity_low",
    "specificity_high",
    "top_index",
    "dominance",
)
"""The measures of one IRM snapshot that this figure and the explain tier's both draw."""
COLUMNS = (
    "run",
    "step",
    *SNAPSHOT_COLUMNS,
    "dominance_low",
    "dominance_high",
    "index_share",
    "cross_layer_corr",
)
LOSS_COLUMNS = ("run", "step", "val_loss")


def trajectory_figure(
    table: pd.DataFrame, losses: pd.DataFrame, *, title: str | None = None
) -> go.Figure:
    """Four panels against optimizer steps (categorical x: the snapshot schedule), one colour
    per run: specificity with its 95 % CI (hollow markers: not aligned), the dominance ratio
    with its CI and the top index written at each point, the striation statistics (index share
    of variance solid, cross-layer correlation dotted), and the validation loss.

    Rows whose ``irm`` column says ``best`` (each run's IRM of lowest validation loss) are drawn
    as stars at a last category, ``best``, and on the validation curve at their step."""
    check_columns(table, COLUMNS, "trajectory")
    check_columns(losses, LOSS_COLUMNS, "validation losses")
    kind = table["irm"].fillna("snapshot") if "irm" in table else pd.Series("snapshot", table.index)
    best, table = table[kind == "best"], table[kind == "snapshot"]
    fig = make_subplots(
        rows=2,
        cols=2,
        horizontal_spacing=0.09,
        vertical_spacing=0.16,
        subplot_titles=(
            "specificity (own-voice NLL drop minus the others'), 95 % CI",
            "dominance ratio (top index share x d_model), 95 % CI; top index",
            "striation: index share of variance (solid), cross-layer corr (dots)",
            "validation loss",
        ),
    )
    steps = sorted(int(s) for s in table["step"].unique())
    order = [str(s) for s in steps] + (["best"] if len(best) else [])
    colors = {run: PALETTE[i % len(PALETTE)] for i, run in enumerate(dict.fromkeys(table["run"]))}
    for run, rows in table.sort_values("step", kind="stable").groupby("run", sort=False):
        color = colors[run]
        x = rows["step"].astype(int).astype(str)
        aligned = rows["verdict"] == "aligned"
        symbols = ["circle" if a else "circle-open" for a in aligned]
        line = {"color": color}
        hidden = {"legendgroup": run, "showlegend": False}  # one legend entry per run
        fig.add_trace(
            go.Scatter(
                x=x,
                y=rows["specificity"],
                name=run,
                legendgroup=run,
                mode="lines+markers",
                line=line,
                marker={"symbol": symbols, "size": 9},
            ),
            row=1,
            col=1,
        )
        for bound in ("specificity_low", "specificity_high"):
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=rows[bound],
                    mode="lines",
                    line={"color": color, "width": 0.5, "dash": "dot"},
                    hoverinfo="skip",
                    **hidden,
                ),
                row=1,
                col=1,
            )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=rows["dominance"],
                mode="lines+markers+text",
                line=line,
                text=rows["top_index"].astype(int).astype(str),
                textposition="top center",
                textfont={"size": 9, "color": color},
                error_y=ci_error_bars(
                    rows["dominance"], rows["dominance_low"], rows["dominance_high"]
                ),
                **hidden,
            ),
            row=1,
            col=2,
        )
        # striation: the index share solid, the cross-layer correlation dotted
        for column, striation_line in (
            ("index_share", line),
            ("cross_layer_corr", {**line, "dash": "dot"}),
        ):
            fig.add_trace(
                go.Scatter(
                    x=x, y=rows[column], mode="lines+markers", line=striation_line, **hidden
                ),
                row=2,
                col=1,
            )
        curve = losses[losses["run"] == run].dropna(subset=["val_loss"])
        fig.add_trace(
            go.Scatter(
                x=curve["step"],
                y=curve["val_loss"],
                mode="lines+markers",
                line=line,
                marker={"size": 4},
                **hidden,
            ),
            row=2,
            col=2,
        )
    for r in best.to_dict("records"):
        _best_markers(fig, r, colors.get(r["run"], PALETTE[-1]), losses)
    fig.add_hline(y=0.0, line_dash="dot", line_color="grey", row=1, col=1)
    # On a log axis plotly places an hline's own annotation at the linear value (10 -> 1e10),
    # so the labels are separate annotations at log10 of their value.
    # A top index at DOMINANT_GAP x the runner-up needs about that ratio (verdicts.top_gap_bound).
    threshold = f"needed for a top index at {DOMINANT_GAP:g}x the runner-up (the verdict's rule)"
    for value, dash, text in ((1.0, "dot", "uniform"), (DOMINANT_GAP, "dash", threshold)):
        fig.add_hline(y=value, line_dash=dash, line_color="grey", row=1, col=2)
        fig.add_annotation(
            text=text,
            x=1,
            xref="x2 domain",
            xanchor="right",
            y=math.log10(value),
            yref="y2",
            yanchor="bottom",
            showarrow=False,
            font={"size": 11, "color": "grey"},
        )
    top = max(float(table["dominance_high"].max()), DOMINANT_GAP) * 1.5
    snapshots = {"type": "category", "categoryorder": "array", "categoryarray": order}
    for col in (1, 2):
        fig.update_xaxes(
            title_text="optimizer steps (snapshot; 0 = untrained; best: lowest val loss)",
            row=1,
            col=col,
            **snapshots,
        )
    fig.update_xaxes(title_text="optimizer steps", row=2, col=1, **snapshots)
    fig.update_xaxes(title_text="optimizer steps", row=2, col=2)
    fig.update_yaxes(tickformat=".0%", row=1, col=1)
    fig.update_yaxes(type="log", range=[math.log10(0.7), math.log10(top)], row=1, col=2)
    fig.update_yaxes(title_text="NLL per predicted token", row=2, col=2)
    return style(fig, title or "Training trajectory: alignment, dominance and striation")


def _best_markers(fig: go.Figure, r: dict[str, Any], color: str, losses: pd.DataFrame) -> None:
    """One run's best IRM (a ``table`` row) as stars: at the ``best`` category of the first
    three panels (its step in the hover text) and at its step on the validation curve."""
    star = {
        "symbol": "star" if r["verdict"] == "aligned" else "star-open",
        "size": 13,
        "color": color,
        "line": {"color": color, "width": 1},
    }
    common = {
        "legendgroup": r["run"],
        "showlegend": False,
        "hoverinfo": "text+y",
        "hovertext": [f"{r['run']}: best IRM, step {int(r['step'])}"],
    }

    def add(
        y: float, row: int, col: int, ci: tuple[float, float] | None = None, **kwargs: Any
    ) -> None:
        error = {"type": "data", "symmetric": False, "color": color}
        if ci is not None:
            kwargs["error_y"] = {**error, "array": [ci[1] - y], "arrayminus": [y - ci[0]]}
        kwargs = {"mode": "markers", "marker": star, **common, **kwargs}
        fig.add_trace(go.Scatter(x=["best"], y=[y], **kwargs), row=row, col=col)

    add(r["specificity"], 1, 1, (r["specificity_low"], r["specificity_high"]))
    add(
        r["dominance"],
        1,
        2,
        (r["dominance_low"], r["dominance_high"]),
        mode="markers+text",
        text=[str(int(r["top_index"]))],
        textposition="top center",
        textfont={"size": 9, "color": color},
    )
    add(r["index_share"], 2, 1)
    add(r["cross_layer_corr"], 2, 1, marker={**star, "symbol": "star-open", "size": 10})
    curve = losses[(losses["run"] == r["run"]) & (losses["step"] == r["step"])]
    curve = curve.dropna(subset=["val_loss"])
    if len(curve):
        fig.add_trace(
            go.Scatter(
                x=[r["step"]], y=[curve["val_loss"].iloc[0]], mode="markers", marker=star, **common
            ),
            row=2,
            col=2,
        )
