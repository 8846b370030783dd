"""The figure of ``rules.mechanism``: dominance ratios per run, host, optimizer and basis."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from irm_lens.plotting.base import check_columns, ci_error_bars, style

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
BASIS_COLUMNS = ("setting", "basis", "run", "emotion", "ratio", "low", "high", "aligned", "trained")


def basis_figure(table: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """One point per run and basis (error bars: bootstrap 95 % CI over prompts; hollow: not
    aligned; diamonds: the untrained controls), grouped by setting along x; log y, 1 = uniform."""
    check_columns(table, BASIS_COLUMNS, "dominance ratio")
    fig = go.Figure()
    x_of = table["setting"] + "<br>" + table["emotion"]
    for basis, rows in table.groupby("basis", sort=False):
        idx = rows.index
        symbols = [
            "diamond" if not t else ("circle" if a else "circle-open")
            for t, a in zip(rows["trained"], rows["aligned"], strict=True)
        ]
        fig.add_trace(
            go.Scatter(
                x=x_of[idx],
                y=rows["ratio"],
                mode="markers",
                name=f"read in the {basis}",
                marker={"size": 11, "symbol": symbols},
                error_y=ci_error_bars(rows["ratio"], rows["low"], rows["high"]),
                customdata=rows[["top1"]] if "top1" in rows else None,
                hovertemplate="%{x}<br>ratio %{y:.2f}<br>top index %{customdata[0]}<extra></extra>",
            )
        )
    fig.add_hline(y=1.0, line_dash="dot", annotation_text="uniform")
    fig.update_yaxes(type="log", title_text="dominance ratio (top index share x d_model)")
    fig.update_xaxes(title_text="")
    return style(fig, title or "Dominance ratio by host, optimizer and basis")


MASKING_COLUMNS = (
    "setting",
    "emotion",
    "specificity",
    "specificity_low",
    "specificity_high",
    "ratio",
    "low",
    "high",
    "top1",
    "trained",
)


def masking_figure(table: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Left: each run's specificity (95 % CI) per emotion, one colour per mask setting. Right:
    its dominance ratio (95 % CI) and top index (hover), untrained controls as diamonds."""
    check_columns(table, MASKING_COLUMNS, "masked retraining")
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(
            "specificity (own-voice NLL drop minus the others')",
            "dominance ratio (top index share x d_model)",
        ),
    )
    for k, (setting, rows) in enumerate(table.groupby("setting", sort=False)):
        colour = PALETTE[k % len(PALETTE)]
        trained = rows[rows["trained"]]
        fig.add_trace(
            go.Scatter(
                x=trained["emotion"],
                y=100 * trained["specificity"],
                mode="markers",
                name=setting,
                legendgroup=setting,
                marker={"color": colour, "size": 11},
                error_y=ci_error_bars(
                    trained["specificity"],
                    trained["specificity_low"],
                    trained["specificity_high"],
                    scale=100,
                ),
            ),
            1,
            1,
        )
        fig.add_trace(
            go.Scatter(
                x=rows["emotion"],
                y=rows["ratio"],
                mode="markers",
                name=setting,
                showlegend=False,
                legendgroup=setting,
                customdata=rows[["top1"]],
                marker={
                    "color": colour,
                    "size": 11,
                    "symbol": ["circle" if t else "diamond" for t in rows["trained"]],
                },
                error_y=ci_error_bars(rows["ratio"], rows["low"], rows["high"]),
                hovertemplate="%{x}<br>ratio %{y:.2f}<br>top index %{customdata[0]}<extra></extra>",
            ),
            1,
            2,
        )
    fig.add_hline(y=0, line_dash="dot", row=1, col=1)
    fig.update_yaxes(title_text="specificity (points)", row=1, col=1)
    fig.update_yaxes(title_text="dominance ratio", type="log", row=1, col=2)
    return style(fig, title or "Masked retraining")


MATRIX_COLUMNS = ("layer_set", "emotion", "top1", "ratio", "aligned", "trained", "mean_abs_output")


def matrix_figure(table: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Left: each trained run's top index (text) by layer set and emotion, coloured by its
    dominance ratio (hollow: not aligned). Right: mean |output| per layer set, one point per run,
    untrained controls as diamonds."""
    check_columns(table, MATRIX_COLUMNS, "run matrix")
    titles = ("top index per run (colour: dominance ratio)", "mean |IRM output| per layer set")
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], subplot_titles=titles)
    trained = table[table["trained"]]
    fig.add_trace(
        go.Scatter(
            x=trained["layer_set"],
            y=trained["emotion"],
            mode="markers+text",
            text=trained["top1"],
            textposition="top center",
            showlegend=False,
            marker={
                "size": 18,
                "color": trained["ratio"],
                "colorscale": "Viridis",
                "showscale": True,
                "colorbar": {"title": "ratio", "x": 0.5},
                "symbol": ["circle" if a else "circle-open" for a in trained["aligned"]],
            },
        ),
        1,
        1,
    )
    for k, (emotion, rows) in enumerate(table.groupby("emotion", sort=False)):
        fig.add_trace(
            go.Scatter(
                x=rows["layer_set"],
                y=rows["mean_abs_output"],
                mode="markers",
                name=str(emotion),
                marker={
                    "size": 10,
                    "color": PALETTE[k % len(PALETTE)],
                    "symbol": "diamond" if emotion == "untrained" else "circle",
                },
            ),
            1,
            2,
        )
    fig.update_yaxes(type="log", title_text="mean |output|", row=1, col=2)
    return style(fig, title or "The paper's run matrix")


CONTROL_COLUMNS = ("emotion", "reading", "index_share", "aligned")


def residual_control_figure(
    table: pd.DataFrame, control_share: float, *, title: str | None = None
) -> go.Figure:
    """Index share of the variance of mean |output| per emotion and reading (the plain IRM's
    outputs; the rotated-injection IRM's written deltas ``R_l v_l`` and its own outputs
    ``v_l``), hollow where the run is not aligned; the untrained IRM's share as a line."""
    check_columns(table, CONTROL_COLUMNS, "residual control")
    fig = go.Figure()
    for i, (reading, rows) in enumerate(table.groupby("reading", sort=False)):
        fig.add_trace(
            go.Bar(
                x=rows["emotion"],
                y=rows["index_share"],
                name=reading,
                marker={
                    "color": PALETTE[i % len(PALETTE)],
                    "pattern": {"shape": ["" if a else "/" for a in rows["aligned"]]},
                },
            )
        )
    fig.add_hline(y=control_share, line_dash="dot", annotation_text="untrained IRM")
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text="index share of variance (mean |output| map)")
    return style(fig, title or "Residual explanation: stripes under a rotated injection")
