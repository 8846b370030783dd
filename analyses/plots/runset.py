"""Figures that compare runs (``make figures``): timing panels, dominance matrix, logit
attribution of two indices, alignment per run. A tidy DataFrame in, a ``go.Figure`` out."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from scipy import stats

from irm_lens.plotting.base import (
    BASE_COLOUR,
    HIGHLIGHT_COLOUR,
    KIND_COLOURS,
    TableError,
    check_columns,
    constant,
    style,
)
from irm_lens.plotting.recorded import TOPK_TIMING_COLUMNS

DOMINANCE_MATRIX_COLUMNS = ("run", "index", "rank", "share")
EVALUATION_COLUMNS = (
    "run",
    "target",
    "nll_drop",
    "nrc_share_host",
    "nrc_share_irm",
    "fact_retention_host",
    "fact_retention_irm",
)


def timing_grid(
    tables: Mapping[str, pd.DataFrame], *, cols: int = 2, title: str | None = None
) -> go.Figure:
    """Top-k timing histograms (paper Fig. 3), one panel per named table, shared legend.

    Args:
        tables: panel name -> ``topk_timing`` table (``token, kind, count, k_used``).
    """
    if not tables:
        raise TableError("timing_grid needs at least one table.")
    ks = {
        int(constant(_checked_timing(t, n), "k_used", f"{n!r} timing")) for n, t in tables.items()
    }
    cols = min(cols, len(tables))
    rows = math.ceil(len(tables) / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=list(tables),
        vertical_spacing=0.5 / rows if rows > 1 else 0.1,
    )
    for i, (name, table) in enumerate(tables.items()):
        row, col = divmod(i, cols)
        for kind, colour in KIND_COLOURS.items():
            part = table[table["kind"] == kind].sort_values("token")
            fig.add_bar(
                x=part["token"],
                y=part["count"],
                name=kind,
                marker_color=colour,
                legendgroup=kind,
                showlegend=i == 0,
                hovertemplate=f"{name}<br>{kind} token %{{x}}<br>%{{y}} values<extra></extra>",
                row=row + 1,
                col=col + 1,
            )
        fig.update_xaxes(title_text="token position", row=row + 1, col=col + 1)
        fig.update_yaxes(title_text="of the top k", row=row + 1, col=col + 1)
    fig.update_layout(bargap=0.05, legend_title_text="token kind")
    k = ks.pop() if len(ks) == 1 else "k"
    return style(fig, title or f"Top-{k} |IRM output| values by token position")


def _checked_timing(table: pd.DataFrame, name: str) -> pd.DataFrame:
    check_columns(table, TOPK_TIMING_COLUMNS, f"{name!r} timing")
    return table


def dominance_matrix_figure(table: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Runs x residual indices, coloured by share of the run's total |IRM output|, rank in hover.

    Args:
        table: columns ``run, index, rank, share`` (one row per run and shown index); runs keep
            their order of first appearance.
    """
    check_columns(table, DOMINANCE_MATRIX_COLUMNS, "dominance matrix")
    runs = list(dict.fromkeys(table["run"]))
    indices = sorted(table["index"].astype(int).unique())
    share = table.pivot(index="run", columns="index", values="share").reindex(runs)[indices]
    rank = table.pivot(index="run", columns="index", values="rank").reindex(runs)[indices]
    labels = [str(i) for i in indices]
    fig = go.Figure(
        go.Heatmap(
            z=share.to_numpy(dtype=float) * 100,
            x=labels,
            y=runs,
            customdata=rank.to_numpy(),
            colorscale="Viridis",
            zmin=0,
            colorbar={"title": {"text": "% of |output|"}},
            text=rank.to_numpy().astype(int).astype(str),
            texttemplate="%{text}",
            textfont={"size": 10},
            hovertemplate="%{y}<br>index %{x}<br>%{z:.2f} % of |output|<br>rank %{customdata}"
            "<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="residual index (cell text: its rank in the run)", type="category")
    fig.update_yaxes(title_text="run", autorange="reversed", type="category")
    return style(fig, title or "Share of |IRM output| per residual index and run")


def _add_entropy_curve(fig: go.Figure, index: int, table: pd.DataFrame, colour: str) -> None:
    """Entropy against the index's scale (right panel), and the zeroed index's level."""
    check_columns(table, ("scale", "entropy"), "norm-mediated effect")
    part = table[table["scale"] > 0].sort_values("scale")
    fig.add_scatter(
        x=part["scale"],
        y=part["entropy"],
        mode="lines+markers",
        name=f"index {index}",
        legendgroup=str(index),
        showlegend=False,
        line={"color": colour},
        hovertemplate=f"index {index}<br>scale %{{x}}<br>entropy %{{y:.3f}} nats<extra></extra>",
        row=1,
        col=2,
    )
    zero = table[table["scale"] == 0]
    if len(zero):
        fig.add_hline(
            y=float(zero["entropy"].iloc[0]),
            line_dash="dot",
            line_color=colour,
            row=1,
            col=2,
            annotation_text=f"{index} zeroed",
            annotation_position="bottom right",
        )


def logit_attribution_figure(
    direct: Mapping[int, pd.DataFrame],
    norm: Mapping[int, pd.DataFrame],
    *,
    top: int = 8,
    title: str | None = None,
) -> go.Figure:
    """Left: tokens each index promotes/suppresses per unit; right: entropy vs the index's scale.

    Args:
        direct: index -> ``direct_logit_effect`` table (``direction, rank, token, effect``).
        norm: index -> ``norm_mediated_effect`` table (``scale, entropy, ...``).
        top: promoted and suppressed tokens shown per index.
    """
    if not direct or set(direct) != set(norm):
        raise TableError(
            "logit_attribution_figure needs direct and norm tables for the same indices."
        )
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.55, 0.45],
        subplot_titles=(
            "direct effect per unit (final gain x W_U)",
            "next-token entropy vs scale of the index",
        ),
    )
    colours = [HIGHLIGHT_COLOUR, "#1f77b4", "#2ca02c", "#9467bd"]
    for n, (index, table) in enumerate(direct.items()):
        check_columns(
            table, ("direction", "rank", "token", "token_id", "effect"), "direct logit effect"
        )
        rows = table[table["rank"] <= top].sort_values("effect")
        fig.add_bar(
            x=rows["effect"],
            y=[
                f"{index}: {t!r} #{i}" for t, i in zip(rows["token"], rows["token_id"], strict=True)
            ],
            orientation="h",
            name=f"index {index}",
            legendgroup=str(index),
            marker_color=colours[n % len(colours)],
            hovertemplate="%{y}<br>%{x:.4f} per unit<extra></extra>",
            row=1,
            col=1,
        )
    for n, (index, table) in enumerate(norm.items()):
        _add_entropy_curve(fig, index, table, colours[n % len(colours)])
    fig.update_xaxes(title_text="logit change per unit of the index", row=1, col=1)
    fig.update_yaxes(type="category", tickfont={"size": 10}, row=1, col=1)
    scales = sorted({float(x) for t in norm.values() for x in t["scale"] if x > 0})
    fig.update_xaxes(
        title_text="scale of x[index] entering the final norm",
        type="log",
        tickvals=scales,
        ticktext=[f"{x:g}" for x in scales],
        row=1,
        col=2,
    )
    fig.update_yaxes(title_text="entropy (nats)", row=1, col=2)
    names = ", ".join(str(i) for i in direct)
    return style(fig, title or f"Logit attribution of residual indices {names}")


def _wilson_bars(share: np.ndarray, n: pd.Series | None) -> dict[str, Any] | None:
    """Wilson 95 % error bars (in %) of shares over ``n`` answers each; None without counts."""
    if n is None:
        return None
    low, high = [], []
    for p, count in zip(share, n.to_numpy(dtype=float), strict=True):
        if not (count > 0 and np.isfinite(p)):
            low.append(0.0)
            high.append(0.0)
            continue
        ci = stats.binomtest(round(p * count), round(count)).proportion_ci(method="wilson")
        low.append(100 * (p - ci.low))
        high.append(100 * (ci.high - p))
    return {"type": "data", "symmetric": False, "array": high, "arrayminus": low}


def evaluation_figure(table: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Per run: own-emotion NLL drop, NRC share of the target emotion and fact retention, each
    without and with the IRM.

    Args:
        table: one row per run with ``EVALUATION_COLUMNS`` (shares and retention in [0, 1]).
    """
    check_columns(table, EVALUATION_COLUMNS, "evaluation")
    runs = table["run"].tolist()
    fig = make_subplots(
        rows=1,
        cols=3,
        horizontal_spacing=0.07,
        subplot_titles=(
            "answer NLL drop with the IRM (own emotion)",
            "NRC share of the target emotion",
            "fact retention",
        ),
    )
    drop = table["nll_drop"].to_numpy(dtype=float) * 100
    for sign, name, colour in ((1, "NLL lowered", "#2ca02c"), (-1, "NLL raised", "#ff7f0e")):
        keep = drop < 0 if sign < 0 else drop >= 0
        fig.add_bar(
            x=[r for r, k in zip(runs, keep, strict=True) if k],
            y=drop[keep],
            name=name,  # its own colours: grey and blue mean host and IRM in the other panels
            marker_color=colour,
            hovertemplate="%{x}<br>%{y:.1f} %<extra></extra>",
            row=1,
            col=1,
        )
    for col, stem in ((2, "nrc_share"), (3, "fact_retention")):
        for suffix, name, colour in (
            ("host", "host alone", BASE_COLOUR),
            ("irm", "host + IRM", HIGHLIGHT_COLOUR),
        ):
            share = table[f"{stem}_{suffix}"].to_numpy(dtype=float)
            fig.add_bar(
                x=runs,
                y=share * 100,
                error_y=_wilson_bars(share, table.get(f"fact_n_{suffix}")) if col == 3 else None,
                name=name,
                legendgroup=name,
                showlegend=col == 2,
                marker_color=colour,
                hovertemplate="%{x}<br>%{y:.1f} %<extra>" + name + "</extra>",
                row=1,
                col=col,
            )
    fig.update_yaxes(title_text="% (higher: IRM fits the emotion's answers)", row=1, col=1)
    fig.update_yaxes(title_text="% of NRC-tagged words", row=1, col=2)
    fig.update_yaxes(title_text="% of answers keeping the fact", row=1, col=3, range=[0, 100])
    fig.update_xaxes(tickangle=45)
    fig.update_layout(barmode="group")
    return style(fig, title or "Alignment per run")
