"""The figure of ``analysis.basis``: dominance ratios per run, host, optimizer and basis."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from irm_lens.plotting._common import check_columns, style

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
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": rows["high"] - rows["ratio"],
                    "arrayminus": rows["ratio"] - rows["low"],
                },
                customdata=rows[["top1"]] if "top1" in rows else None,
                hovertemplate="%{x}<br>ratio %{y:.2f}<br>top index %{customdata[0]}<extra></extra>",
            )
        )
    fig.add_hline(y=1.0, line_dash="dot", annotation_text="uniform")
    fig.update_yaxes(type="log", title_text="dominance ratio (top index share x d_model)")
    fig.update_xaxes(title_text="")
    return style(fig, title or "Dominance ratio by host, optimizer and basis")
