"""Figures of the neuron-level lenses: decoded tokens, attribution, head subspaces.

A tidy DataFrame in, a ``go.Figure`` out, no file I/O.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from irm_lens.plotting.base import BASE_COLOUR, HIGHLIGHT_COLOUR, check_columns, style

DECODE_COLUMNS = ("unit", "direction", "rank", "token_id", "token", "score")
ATTRIBUTION_COLUMNS = ("kind", "layer", "unit", "importance")
SUBSPACE_COLUMNS = ("layer", "head", "write", "read_q", "read_k", "read_v", "chance")


def _unit_bars(
    values: pd.Series, labels: list[str], colours: list[str], hover: str, **more: Any
) -> go.Bar:
    """One horizontal bar per unit: ``values`` against the units' ``labels`` (a category axis),
    in ``colours``, with ``hover`` as the hover text (``%{y}``: the label, ``%{x}``: the value);
    ``more``: further ``go.Bar`` properties."""
    return go.Bar(
        x=values,
        y=labels,
        orientation="h",
        marker_color=colours,
        hovertemplate=f"{hover}<extra></extra>",
        **more,
    )


def decode_figure(table: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Promoted (right) and suppressed (left) tokens of each decoded unit, one row per unit."""
    check_columns(table, DECODE_COLUMNS, "decoding")
    units = list(dict.fromkeys(table["unit"]))
    fig = make_subplots(
        rows=len(units),
        cols=1,
        subplot_titles=[str(u) for u in units],
        vertical_spacing=0.3 / max(len(units), 1),
    )
    for i, unit in enumerate(units, start=1):
        rows = table[table["unit"] == unit].sort_values("score")
        labels = [f"{t!r} #{i_}" for t, i_ in zip(rows["token"], rows["token_id"], strict=True)]
        colours = [HIGHLIGHT_COLOUR if d == "promoted" else BASE_COLOUR for d in rows["direction"]]
        bars = _unit_bars(rows["score"], labels, colours, "%{y}: %{x:.4f}", showlegend=False)
        fig.add_trace(bars, row=i, col=1)
        fig.update_yaxes(type="category", tickfont={"size": 10}, row=i, col=1)
    fig.update_xaxes(title_text="logit change per unit (final gain x W_U)", row=len(units), col=1)
    return style(fig, title or "LM-head decoding: promoted and suppressed tokens")


def attribution_figure(
    table: pd.DataFrame,
    baseline: pd.DataFrame | None = None,
    *,
    top: int = 20,
    title: str | None = None,
) -> go.Figure:
    """The ``top`` units by log-probability importance; with ``baseline`` (activation x
    gradient), each neuron's rank there in the hover."""
    check_columns(table, ATTRIBUTION_COLUMNS, "attribution")
    rows = table.head(top).iloc[::-1]
    labels = [
        f"{k[0].upper()} L{layer}.{unit}"
        for k, layer, unit in zip(rows["kind"], rows["layer"], rows["unit"], strict=True)
    ]
    custom = ["" for _ in labels]
    if baseline is not None:
        ranks = baseline.set_index(["layer", "unit"])["rank"]
        custom = [
            f"<br>activation x gradient rank {ranks.get((layer, unit), '-')}"
            if kind == "neuron"
            else ""
            for kind, layer, unit in zip(rows["kind"], rows["layer"], rows["unit"], strict=True)
        ]
    colours = [HIGHLIGHT_COLOUR if k == "neuron" else "#1f77b4" for k in rows["kind"]]
    hover = "%{y}: %{x:.3f} nats%{customdata}"
    fig = go.Figure(_unit_bars(rows["importance"], labels, colours, hover, customdata=custom))
    fig.update_xaxes(title_text="increase of log p(predicted token) (nats)")
    fig.update_yaxes(title_text="unit (N = MLP neuron, H = attention head)", type="category")
    predicted = table.attrs.get("predicted")
    what = f" for token id {predicted}" if predicted is not None else ""
    return style(fig, title or f"Log-probability attribution{what}: top {len(rows)} units")


def subspace_figure(table: pd.DataFrame, *, index: int, title: str | None = None) -> go.Figure:
    """Share of residual index ``index`` in each head's write and value-read subspaces."""
    check_columns(table, SUBSPACE_COLUMNS, "head subspace")
    chance = float(table["chance"].iloc[0])
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("written by W_O", "read by W_V (gain-folded)")
    )
    for col, key in ((1, "write"), (2, "read_v")):
        grid = table.pivot(index="layer", columns="head", values=key)
        fig.add_trace(
            go.Heatmap(
                z=grid.to_numpy() / chance,
                x=grid.columns,
                y=grid.index,
                coloraxis="coloraxis",
                hovertemplate="layer %{y} head %{x}<br>%{z:.2f} x chance<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="head", row=1, col=col)
        fig.update_yaxes(title_text="layer", row=1, col=col)
    fig.update_layout(
        coloraxis={"colorscale": "Viridis", "cmin": 0, "colorbar": {"title": {"text": "x chance"}}}
    )
    return style(
        fig,
        title
        or f"Residual index {index} in heads' subspaces "
        f"(1 = chance, d_head/d_model = {chance:.3f})",
    )
