"""Heat maps of recorded IRM outputs (paper Fig. 2): one map, a per-token map, a grid of maps.

Example:
    >>> import pandas as pd
    >>> t = pd.DataFrame({"layer": [0, 0], "index": [0, 1], "value": [-1.0, 2.0],
    ...                   "stat": "mean", "n_tokens": 3})
    >>> heatmap_figure(t).layout.title.text
    'Mean IRM output over 3 tokens'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from irm_lens.plotting.base import DIVERGING, SEQUENTIAL, TableError, check_columns, constant, style

HEATMAP_COLUMNS = ("layer", "index", "value", "stat", "n_tokens")
TOKEN_MAP_COLUMNS = ("layer", "index", "value")

_STAT_LABEL = {"mean": "mean IRM output", "mean_abs": "mean |IRM output|"}


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
        return {"colorscale": DIVERGING, "cmid": 0.0, "cmin": -top, "cmax": top}
    return {"colorscale": SEQUENTIAL, "cmin": 0.0, "cmax": top}


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
    stat = constant(table, "stat", what)
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
    check_columns(table, HEATMAP_COLUMNS, what)
    stat = _stat(table, what)
    n_tokens = int(constant(table, "n_tokens", what))
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
    return style(fig, title or default)


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
    check_columns(table, TOKEN_MAP_COLUMNS, what)
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
    return style(fig, title or default)


def _checked(table: pd.DataFrame, name: str) -> pd.DataFrame:
    check_columns(table, HEATMAP_COLUMNS, f"{name!r} heat map")
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
        n_tokens.add(int(constant(table, "n_tokens", f"{name!r} heat map")))
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
    return style(fig, title or default)
