"""What every figure builder shares: the table check, the error it raises, CI error bars, style
and colours."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from irm_lens.errors import IrmLensError

DIVERGING = "RdBu_r"
SEQUENTIAL = "Viridis"
KIND_COLOURS = {"prompt": "#1f77b4", "generated": "#ff7f0e"}
BASE_COLOUR, HIGHLIGHT_COLOUR = "#9aa5b1", "#d62728"


class TableError(IrmLensError, ValueError):
    """A table handed to a figure builder that lacks columns or holds impossible values."""


def check_columns(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise TableError(
            f"The {what} table is missing column(s) {missing}; it has {list(table.columns)}. "
            f"Pass the DataFrame of the matching analysis function (columns {list(columns)})."
        )
    if table.empty:
        raise TableError(f"The {what} table is empty: there is nothing to plot.")


def constant(table: pd.DataFrame, column: str, what: str) -> Any:
    values = table[column].unique()
    if len(values) != 1:
        raise TableError(
            f"Column {column!r} of the {what} table must hold one value, got {sorted(values)}; "
            "split the table and plot each part separately."
        )
    value = values[0]
    return value.item() if isinstance(value, np.generic) else value


def ci_error_bars(
    value: Any, low: Any, high: Any, *, scale: float = 1.0, **extra: Any
) -> dict[str, Any]:
    """Plotly ``error_y`` (or ``error_x``) settings for asymmetric bars from ``value`` to the
    bounds of its confidence interval, ``low`` and ``high`` (Series or arrays alike).

    ``scale`` multiplies the bars' lengths (100: fractions drawn in points); ``extra``: further
    settings of the bars (``thickness``, ``color``)."""
    above, below = high - value, value - low
    if scale != 1.0:
        above, below = scale * above, scale * below
    return {"type": "data", "symmetric": False, "array": above, "arrayminus": below, **extra}


def style(fig: go.Figure, title: str) -> go.Figure:
    fig.update_layout(title=title, template="plotly_white", font={"size": 14})
    return fig
