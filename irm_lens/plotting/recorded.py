"""Figures of recorded IRM outputs: a tidy DataFrame in, a ``go.Figure`` out, no file I/O.

Every builder checks the columns it needs (``TableError`` names the missing ones), derives its
numbers (layers, index range, token counts, k, thresholds) from the table, and titles the figure
with what was computed. Signed maps use a diverging scale centred at 0. Writing figures to disk
is ``irm_lens.export.save_figure``'s job.

Example:
    >>> import pandas as pd
    >>> t = pd.DataFrame({"layer": [0, 0], "index": [0, 1], "value": [-1.0, 2.0],
    ...                   "stat": "mean", "n_tokens": 3})
    >>> heatmap_figure(t).layout.title.text
    'Mean IRM output over 3 tokens'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from irm_lens.errors import IrmLensError

HEATMAP_COLUMNS = ("layer", "index", "value", "stat", "n_tokens")
TOKEN_MAP_COLUMNS = ("layer", "index", "value")
TOPK_TIMING_COLUMNS = ("token", "kind", "count", "k_used")
LAYER_TOPK_COLUMNS = ("layer", "count", "k_used")
SPARSITY_COLUMNS = ("layer", "sparsity", "threshold")
DOMINANT_COLUMNS = ("index", "mean_abs", "share", "rank")
CONSISTENCY_COLUMNS = ("index", "top1_count", "topk_count", "n_runs", "top1_freq", "topk_freq")

_STAT_LABEL = {"mean": "mean IRM output", "mean_abs": "mean |IRM output|"}
_DIVERGING = "RdBu_r"
_SEQUENTIAL = "Viridis"
_KIND_COLOURS = {"prompt": "#1f77b4", "generated": "#ff7f0e"}
_BASE_COLOUR, _HIGHLIGHT_COLOUR = "#9aa5b1", "#d62728"


class TableError(IrmLensError, ValueError):
    """A table handed to a figure builder that lacks columns or holds impossible values."""


def _check(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise TableError(
            f"The {what} table is missing column(s) {missing}; it has {list(table.columns)}. "
            f"Pass the DataFrame of the matching analysis function (columns {list(columns)})."
        )
    if table.empty:
        raise TableError(f"The {what} table is empty: there is nothing to plot.")


def _constant(table: pd.DataFrame, column: str, what: str) -> Any:
    values = table[column].unique()
    if len(values) != 1:
        raise TableError(
            f"Column {column!r} of the {what} table must hold one value, got {sorted(values)}; "
            "split the table and plot each part separately."
        )
    value = values[0]
    return value.item() if isinstance(value, np.generic) else value


def _style(fig: go.Figure, title: str) -> go.Figure:
    fig.update_layout(title=title, template="plotly_white", font={"size": 14})
    return fig


def _tokens(n: int) -> str:
    return f"{n} token" if n == 1 else f"{n} tokens"


def _grid(table: pd.DataFrame, what: str) -> tuple[np.ndarray, list[Any], np.ndarray]:
    """``(z[layer_row, index], layers, indices)`` with indices 0..max index, gaps as NaN."""
    if not pd.api.types.is_integer_dtype(table["index"]) or (table["index"] < 0).any():
        raise TableError(f"Column 'index' of the {what} table must hold integers >= 0.")
    if table.duplicated(["layer", "index"]).any():
        raise TableError(f"The {what} table has repeated (layer, index) rows; expected one each.")
    layers = sorted(table["layer"].unique().tolist())
    indices = np.arange(int(table["index"].max()) + 1)
    wide = table.pivot(index="layer", columns="index", values="value")
    z = wide.reindex(index=layers, columns=indices).to_numpy(dtype=float)
    return z, layers, indices


def _scale(z: np.ndarray, signed: bool, zmax: float | None) -> dict[str, Any]:
    """Colour-scale settings: symmetric diverging around 0 if signed, else sequential from 0."""
    if zmax is not None and not zmax > 0:
        raise TableError(f"zmax must be > 0, got {zmax}.")
    top = zmax if zmax is not None else float(np.nanmax(np.abs(z)))
    top = top if top > 0 else 1.0  # an all-zero map still needs a non-empty range
    if signed:
        return {"colorscale": _DIVERGING, "cmid": 0.0, "cmin": -top, "cmax": top}
    return {"colorscale": _SEQUENTIAL, "cmin": 0.0, "cmax": top}


def _heatmap(table: pd.DataFrame, stat: str, what: str) -> tuple[go.Heatmap, np.ndarray]:
    z, layers, indices = _grid(table, what)
    trace = go.Heatmap(
        z=z,
        x=indices,
        y=layers,
        hoverongaps=False,
        hovertemplate=(
            "injected layer %{y}<br>residual index %{x}<br>"
            f"{_STAT_LABEL[stat]} %{{z:.4g}}<extra></extra>"
        ),
    )
    return trace, z


def _stat(table: pd.DataFrame, what: str) -> str:
    stat = _constant(table, "stat", what)
    if stat not in _STAT_LABEL:
        raise TableError(f"Column 'stat' of the {what} table must be one of {list(_STAT_LABEL)}.")
    if stat == "mean_abs" and (table["value"] < 0).any():
        raise TableError(f"The {what} table says stat 'mean_abs' but holds negative values.")
    return str(stat)


def _heatmap_axes(fig: go.Figure, n_indices: int, **where: Any) -> None:
    fig.update_xaxes(title_text="residual index", range=[-0.5, n_indices - 0.5], **where)
    fig.update_yaxes(title_text="injected layer", type="category", **where)


def heatmap_figure(
    table: pd.DataFrame, *, title: str | None = None, zmax: float | None = None
) -> go.Figure:
    """Heat map of a per-(injected layer, residual index) IRM output statistic (paper Fig. 2).

    Args:
        table: columns ``layer, index, value, stat, n_tokens``; one row per (layer, index).
            ``stat`` "mean" (signed: diverging scale centred at 0) or "mean_abs" (sequential).
        title: overrides the derived title ("Mean IRM output over N tokens").
        zmax: colour range limit (``±zmax`` when signed); default the largest |value|.

    Returns:
        A figure with one ``go.Heatmap``: rows ordered by layer id, columns index 0..max index.
    """
    what = "heat map"
    _check(table, HEATMAP_COLUMNS, what)
    stat = _stat(table, what)
    n_tokens = int(_constant(table, "n_tokens", what))
    trace, z = _heatmap(table, stat, what)
    scale = _scale(z, stat == "mean", zmax)
    trace.update(
        colorscale=scale["colorscale"],
        zmin=scale["cmin"],
        zmax=scale["cmax"],
        zmid=scale.get("cmid"),
        colorbar={"title": {"text": _STAT_LABEL[stat]}},
    )
    fig = go.Figure(trace)
    _heatmap_axes(fig, z.shape[1])
    default = f"{_STAT_LABEL[stat][0].upper()}{_STAT_LABEL[stat][1:]} over {_tokens(n_tokens)}"
    return _style(fig, title or default)


def token_map_figure(
    table: pd.DataFrame,
    *,
    token: str | None = None,
    title: str | None = None,
    zmax: float | None = None,
) -> go.Figure:
    """Signed heat map of the IRM output at one token (columns ``layer, index, value``).

    ``token`` (its text or position) goes into the default title.
    """
    what = "token map"
    _check(table, TOKEN_MAP_COLUMNS, what)
    trace, z = _heatmap(table.assign(stat="mean"), "mean", what)
    scale = _scale(z, True, zmax)
    trace.update(
        colorscale=scale["colorscale"],
        zmin=scale["cmin"],
        zmax=scale["cmax"],
        zmid=0.0,
        colorbar={"title": {"text": "IRM output"}},
        hovertemplate=(
            "injected layer %{y}<br>residual index %{x}<br>IRM output %{z:.4g}<extra></extra>"
        ),
    )
    fig = go.Figure(trace)
    _heatmap_axes(fig, z.shape[1])
    default = "IRM output at one token" if token is None else f"IRM output at token {token!r}"
    return _style(fig, title or default)


def _checked(table: pd.DataFrame, name: str) -> pd.DataFrame:
    _check(table, HEATMAP_COLUMNS, f"{name!r} heat map")
    return table


def heatmap_grid(
    tables: Mapping[str, pd.DataFrame], *, cols: int = 2, title: str | None = None
) -> go.Figure:
    """Heat maps side by side, one panel per named table, each with its own colour scale (Fig. 4).

    Args:
        tables: panel name -> heat-map table (as for ``heatmap_figure``), all of one ``stat``.
        cols: panels per row.
        title: overrides the derived title.
    """
    if not tables:
        raise TableError("heatmap_grid needs at least one table.")
    if cols < 1:
        raise TableError(f"cols must be >= 1, got {cols}.")
    names = list(tables)
    stats = {name: _stat(_checked(tables[name], name), f"{name!r} heat map") for name in names}
    if len(set(stats.values())) != 1:
        raise TableError(f"heatmap_grid compares one statistic; the tables have {stats}.")
    stat = stats[names[0]]
    cols = min(cols, len(names))
    rows = math.ceil(len(names) / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=names,
        horizontal_spacing=0.16,
        vertical_spacing=0.3 / rows if rows > 1 else 0.1,
    )
    n_tokens = set()
    for i, name in enumerate(names):
        row, col = divmod(i, cols)
        table = tables[name]
        n_tokens.add(int(_constant(table, "n_tokens", f"{name!r} heat map")))
        trace, z = _heatmap(table, stat, f"{name!r} heat map")
        axis = "coloraxis" if i == 0 else f"coloraxis{i + 1}"
        trace.update(coloraxis=axis)
        fig.add_trace(trace, row=row + 1, col=col + 1)
        _heatmap_axes(fig, z.shape[1], row=row + 1, col=col + 1)
        subplot = fig.get_subplot(row + 1, col + 1)
        x_dom, y_dom = subplot.xaxis.domain, subplot.yaxis.domain
        colorbar = {
            "title": {"text": "mean" if stat == "mean" else "mean |x|"},
            "x": x_dom[1] + 0.01,
            "y": (y_dom[0] + y_dom[1]) / 2,
            "len": y_dom[1] - y_dom[0],
            "thickness": 12,
        }
        fig.update_layout({axis: {**_scale(z, stat == "mean", None), "colorbar": colorbar}})
    lo, hi = min(n_tokens), max(n_tokens)
    counted = _tokens(lo) if lo == hi else f"{lo}–{hi} tokens"
    label = _STAT_LABEL[stat]
    default = f"{label[0].upper()}{label[1:]} over {counted} (each panel its own colour scale)"
    return _style(fig, title or default)


def topk_timing_figure(table: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Where the k largest |IRM output| values fall, counted per token position (paper Fig. 3).

    Args:
        table: columns ``token, kind, count, k_used``; ``kind`` "prompt" or "generated", all
            prompt positions before all generated ones.

    Returns:
        Two bar traces (prompt, generated) and a dashed line where generation starts.
    """
    what = "top-k timing"
    _check(table, TOPK_TIMING_COLUMNS, what)
    k = int(_constant(table, "k_used", what))
    unknown = set(table["kind"]) - set(_KIND_COLOURS)
    if unknown:
        raise TableError(
            f"Column 'kind' of the {what} table holds {sorted(unknown)}; "
            f"expected {list(_KIND_COLOURS)}."
        )
    parts = {kind: table[table["kind"] == kind].sort_values("token") for kind in _KIND_COLOURS}
    prompt, generated = parts["prompt"], parts["generated"]
    if len(prompt) and len(generated) and prompt["token"].max() >= generated["token"].min():
        raise TableError(f"In the {what} table, prompt tokens must precede generated tokens.")
    fig = go.Figure()
    for kind, part in parts.items():
        fig.add_bar(
            x=part["token"].to_numpy(),
            y=part["count"].to_numpy(),
            name=kind,
            marker_color=_KIND_COLOURS[kind],
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
    return _style(fig, title or f"Top-{k} |IRM output| values by token position")


def layer_topk_figure(table: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """How many of the k largest |IRM output| values each injected layer holds.

    Args:
        table: columns ``layer, count, k_used``.
    """
    what = "layer top-k"
    _check(table, LAYER_TOPK_COLUMNS, what)
    k = int(_constant(table, "k_used", what))
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
    return _style(fig, title or f"Top-{k} |IRM output| values by injected layer")


def sparsity_figure(table: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Fraction of near-zero IRM outputs per injected layer.

    Args:
        table: columns ``layer, sparsity, threshold``; sparsity in [0, 1] is the share of
            |value| below ``threshold``.
    """
    what = "sparsity"
    _check(table, SPARSITY_COLUMNS, what)
    threshold = float(_constant(table, "threshold", what))
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
    return _style(fig, title or default)


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
    _check(table, DOMINANT_COLUMNS, what)
    if top < 1:
        raise TableError(f"top must be >= 1, got {top}.")
    ranked = table.sort_values("rank")
    shown = ranked.head(top)
    marked = shown["index"].isin(list(highlight))
    fig = go.Figure()
    groups = (("other indices", ~marked, _BASE_COLOUR), ("highlighted", marked, _HIGHLIGHT_COLOUR))
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
    return _style(fig, title or default)


def consistency_figure(table: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """How often each residual index is the top-1 / in the top-k dominant index across runs.

    Args:
        table: columns ``index, top1_count, topk_count, n_runs, top1_freq, topk_freq``.
    """
    what = "dominance consistency"
    _check(table, CONSISTENCY_COLUMNS, what)
    n_runs = int(_constant(table, "n_runs", what))
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
    return _style(fig, title or f"Dominant residual indices across {n_runs} {runs}")
