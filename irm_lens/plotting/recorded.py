"""Figures of recorded IRM outputs besides the heat maps: top-k timing (paper Fig. 3), top-k by
layer, sparsity, dominant indices and their consistency across runs.

Every builder (here and in the other plotting modules) checks the columns it needs
(``TableError`` names the missing ones), derives its numbers (layers, index range, token counts,
k, thresholds) from the table, and titles the figure with what was computed. Writing figures to
disk is ``irm_lens.export.save_figure``'s job.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go

from irm_lens.plotting.base import (
    BASE_COLOUR,
    HIGHLIGHT_COLOUR,
    KIND_COLOURS,
    TableError,
    check_columns,
    constant,
    style,
)

TOPK_TIMING_COLUMNS = ("token", "kind", "count", "k_used")
LAYER_TOPK_COLUMNS = ("layer", "count", "k_used")
SPARSITY_COLUMNS = ("layer", "sparsity", "threshold")
DOMINANT_COLUMNS = ("index", "mean_abs", "share", "rank")
CONSISTENCY_COLUMNS = ("index", "top1_count", "topk_count", "n_runs", "top1_freq", "topk_freq")


def topk_timing_figure(table: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Where the k largest |IRM output| values fall, counted per token position (paper Fig. 3).

    Args:
        table: columns ``token, kind, count, k_used``; ``kind`` "prompt" or "generated", all
            prompt positions before all generated ones.

    Returns:
        Two bar traces (prompt, generated) and a dashed line where generation starts.
    """
    what = "top-k timing"
    check_columns(table, TOPK_TIMING_COLUMNS, what)
    k = int(constant(table, "k_used", what))
    unknown = set(table["kind"]) - set(KIND_COLOURS)
    if unknown:
        raise TableError(
            f"Column 'kind' of the {what} table holds {sorted(unknown)}; "
            f"expected {list(KIND_COLOURS)}."
        )
    parts = {kind: table[table["kind"] == kind].sort_values("token") for kind in KIND_COLOURS}
    prompt, generated = parts["prompt"], parts["generated"]
    if len(prompt) and len(generated) and prompt["token"].max() >= generated["token"].min():
        raise TableError(f"In the {what} table, prompt tokens must precede generated tokens.")
    fig = go.Figure()
    for kind, part in parts.items():
        fig.add_bar(
            x=part["token"].to_numpy(),
            y=part["count"].to_numpy(),
            name=kind,
            marker_color=KIND_COLOURS[kind],
            hovertemplate=f"{kind} token %{{x}}<br>%{{y}} of the top {k}<extra></extra>",
        )
    if len(prompt) and len(generated):
        boundary = (prompt["token"].max() + generated["token"].min()) / 2
        fig.add_vline(
            x=float(boundary),
            line_dash="dash",
            line_color="black",
            annotation_text="generation starts",
            annotation_position="top right",
        )
    fig.update_layout(bargap=0.1, legend_title_text="token kind")
    fig.update_xaxes(title_text="token position")
    fig.update_yaxes(title_text=f"values among the top {k}")
    return style(fig, title or f"Top-{k} |IRM output| values by token position")


def layer_topk_figure(table: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """How many of the k largest |IRM output| values each injected layer holds.

    Args:
        table: columns ``layer, count, k_used``.
    """
    what = "layer top-k"
    check_columns(table, LAYER_TOPK_COLUMNS, what)
    k = int(constant(table, "k_used", what))
    table = table.sort_values("layer")
    fig = go.Figure(
        go.Bar(
            x=table["layer"].to_numpy(),
            y=table["count"].to_numpy(),
            hovertemplate=f"injected layer %{{x}}<br>%{{y}} of the top {k}<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="injected layer", type="category")
    fig.update_yaxes(title_text=f"values among the top {k}")
    return style(fig, title or f"Top-{k} |IRM output| values by injected layer")


def sparsity_figure(table: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Fraction of near-zero IRM outputs per injected layer.

    Args:
        table: columns ``layer, sparsity, threshold``; sparsity in [0, 1] is the share of
            |value| below ``threshold``.
    """
    what = "sparsity"
    check_columns(table, SPARSITY_COLUMNS, what)
    threshold = float(constant(table, "threshold", what))
    if ((table["sparsity"] < 0) | (table["sparsity"] > 1)).any():
        raise TableError(f"Column 'sparsity' of the {what} table must lie in [0, 1].")
    table = table.sort_values("layer")
    fig = go.Figure(
        go.Bar(
            x=table["layer"].to_numpy(),
            y=table["sparsity"].to_numpy(),
            hovertemplate="injected layer %{x}<br>fraction %{y:.3f}<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="injected layer", type="category")
    fig.update_yaxes(title_text=f"fraction with |IRM output| < {threshold:g}", range=[0, 1])
    default = f"Fraction of |IRM output| below {threshold:g} by injected layer"
    return style(fig, title or default)


def dominant_indices_figure(
    table: pd.DataFrame,
    *,
    top: int = 20,
    highlight: Sequence[int] = (),
    title: str | None = None,
) -> go.Figure:
    """The ``top`` residual indices by share of total |IRM output|, in rank order.

    Args:
        table: columns ``index, mean_abs, share, rank`` (rank 1 = largest share).
        top: how many indices to show.
        highlight: indices drawn in a second colour with their own legend entry (e.g. a host's
            massive-activation dimensions); those outside the top are listed in a note.
    """
    what = "dominant indices"
    check_columns(table, DOMINANT_COLUMNS, what)
    if top < 1:
        raise TableError(f"top must be >= 1, got {top}.")
    ranked = table.sort_values("rank")
    shown = ranked.head(top)
    marked = shown["index"].isin(list(highlight))
    fig = go.Figure()
    groups = (("other indices", ~marked, BASE_COLOUR), ("highlighted", marked, HIGHLIGHT_COLOUR))
    for name, mask, colour in groups:
        part = shown[mask]
        fig.add_bar(
            x=part["index"].astype(str).to_numpy(),
            y=part["share"].to_numpy(),
            customdata=part[["rank", "mean_abs"]].to_numpy(),
            name=name,
            marker_color=colour,
            showlegend=name == "other indices" or bool(mask.any()),
            hovertemplate=(
                "residual index %{x}<br>rank %{customdata[0]}<br>share %{y:.3%}<br>"
                "mean |IRM output| %{customdata[1]:.4g}<extra></extra>"
            ),
        )
    fig.update_xaxes(
        title_text="residual index (by rank)",
        type="category",
        categoryorder="array",
        categoryarray=shown["index"].astype(str).tolist(),
    )
    fig.update_yaxes(title_text="share of total |IRM output|", rangemode="tozero")
    outside = ranked[ranked["index"].isin(list(highlight)) & ~ranked.index.isin(shown.index)]
    if len(outside):
        note = ", ".join(
            f"{i} (rank {r})" for i, r in zip(outside["index"], outside["rank"], strict=True)
        )
        fig.add_annotation(
            text=f"highlighted, not in the top {len(shown)}: {note}",
            xref="paper",
            yref="paper",
            x=1,
            y=1,
            showarrow=False,
            xanchor="right",
            yanchor="bottom",
        )
    default = f"Top {len(shown)} residual indices by share of total |IRM output|"
    return style(fig, title or default)


def consistency_figure(table: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """How often each residual index is the top-1 / in the top-k dominant index across runs.

    Args:
        table: columns ``index, top1_count, topk_count, n_runs, top1_freq, topk_freq``.
    """
    what = "dominance consistency"
    check_columns(table, CONSISTENCY_COLUMNS, what)
    n_runs = int(constant(table, "n_runs", what))
    table = table.sort_values(["top1_freq", "topk_freq", "index"], ascending=[False, False, True])
    x = table["index"].astype(str).to_numpy()
    fig = go.Figure()
    for name, freq, count in (
        ("top-1", "top1_freq", "top1_count"),
        ("top-k", "topk_freq", "topk_count"),
    ):
        fig.add_bar(
            x=x,
            y=table[freq].to_numpy(),
            customdata=table[count].to_numpy(),
            name=name,
            hovertemplate=(
                f"residual index %{{x}}<br>{name} in %{{customdata}} of {n_runs} runs"
                "<extra></extra>"
            ),
        )
    fig.update_layout(barmode="group", legend_title_text="dominant as")
    fig.update_xaxes(title_text="residual index", type="category")
    fig.update_yaxes(title_text="fraction of runs", range=[0, 1])
    runs = "run" if n_runs == 1 else "runs"
    return style(fig, title or f"Dominant residual indices across {n_runs} {runs}")
