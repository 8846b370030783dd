"""The figure of the predictor's validation: where trained runs' top indices fall in its ranking."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from irm_lens.plotting.base import check_columns, style

SOURCE_COLORS = {
    "default": "#1f77b4",
    "long": "#d62728",
    "matrix": "#2ca02c",
    "sgd": "#9467bd",
    "explain": "#ff7f0e",
}
COLUMNS = ("run", "source", "emotion", "objective", "layers", "top_index")


def predict_figure(data: pd.DataFrame, predictions: pd.DataFrame, summary: Any) -> go.Figure:
    """Left: each trained run's top index's rank (log scale; 1 = named first) under each
    predictor (one row each: the summed bias gradient, the rows' sign consistency, the host's
    logit lever), colour by where the run comes from; the top k shaded. Right: the gradient's
    top 20 indices per emotion and objective, the runs' top indices among them starred."""
    check_columns(data, COLUMNS, "predict")
    scores = list(summary.verdicts)
    k = int(summary.validation[scores[0]]["k"])
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.55, 0.45],
        horizontal_spacing=0.14,
        subplot_titles=(
            f"rank of each run's top index (top {k} shaded)",
            "the gradient's top 20: share of the bias gradient",
        ),
    )
    rng = np.random.default_rng(0)
    for source, rows in data.groupby("source", sort=False):
        for n, score in enumerate(scores):
            ranks = rows[f"{score}_rank"]
            fig.add_trace(
                go.Scatter(
                    x=ranks,
                    y=n + rng.uniform(-0.25, 0.25, len(rows)),
                    mode="markers",
                    name=source,
                    legendgroup=source,
                    showlegend=n == 0,
                    marker={
                        "color": SOURCE_COLORS.get(str(source), "#333"),
                        "size": 8,
                        "opacity": 0.75,
                    },
                    text=[
                        f"{r.run} ({r.objective}, layers {r.layers}): index {r.top_index}, rank "
                        f"{rank}"
                        for r, rank in zip(rows.itertuples(), ranks, strict=True)
                    ],
                    hoverinfo="text",
                ),
                row=1,
                col=1,
            )
    fig.add_vrect(x0=0.8, x1=k + 0.5, fillcolor="#2ca02c", opacity=0.12, line_width=0, row=1, col=1)
    fig.update_xaxes(
        type="log",
        title_text="rank under the predictor (log)",
        row=1,
        col=1,
        range=[-0.08, np.log10(summary.d_model) + 0.05],
    )
    labels = [f"{s}: {summary.verdicts[s].verdict}" for s in scores]
    fig.update_yaxes(tickvals=list(range(len(scores))), ticktext=labels, row=1, col=1)
    if len(predictions):
        pairs = zip(predictions["emotion"], predictions["objective"], strict=True)
        labels = [f"{e} / {o}" for e, o in pairs]
        tops = set(zip(data["emotion"], data["objective"], data["top_index"], strict=True))
        keys = zip(
            predictions["emotion"], predictions["objective"], predictions["index"], strict=True
        )
        hit = [key in tops for key in keys]
        text = [
            str(i) if h or r == 1 else ""
            for i, h, r in zip(predictions["index"], hit, predictions["rank"], strict=True)
        ]
        marker = {
            "symbol": ["star" if h else "circle" for h in hit],
            "size": [14 if h else 6 for h in hit],
            "color": ["#d62728" if h else "#999" for h in hit],
        }
        fig.add_trace(
            go.Scatter(
                x=predictions["share"],
                y=labels,
                mode="markers+text",
                showlegend=False,
                text=text,
                textposition="top center",
                textfont={"size": 10},
                marker=marker,
            ),
            row=1,
            col=2,
        )
        fig.update_xaxes(
            title_text="share of the summed |bias gradient| (star: a run's top)", row=1, col=2
        )
    style(
        fig,
        title="Does the host alone name the index an IRM pushes on? Three predictors "
        "against every trained run",
    )
    return fig
