"""The figure of ``measures.index_profile``: one host index against magnitude-matched controls."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from irm_lens.plotting.base import BASE_COLOUR, HIGHLIGHT_COLOUR, check_columns, style

if TYPE_CHECKING:
    from irm_lens.interventions.index_profile import IndexProfile

KIND_DASH = {"first": "solid", "delimiter": "dash", "other": "dot"}
SCALE_DASH = ("solid", "dash", "dot", "dashdot")


def _band(
    fig: go.Figure,
    table: pd.DataFrame,
    x: str,
    y: str,
    row: int,
    col: int,
    name: str,
    dash: str,
    legend: bool,
) -> None:
    """The controls' median line and min-max band of ``y`` against ``x``."""
    stats = table.groupby(x)[y].agg(["median", "min", "max"]).reset_index()
    fig.add_trace(
        go.Scatter(
            x=list(stats[x]) + list(stats[x][::-1]),
            y=list(stats["max"]) + list(stats["min"][::-1]),
            fill="toself",
            mode="lines",
            fillcolor="rgba(154,165,177,0.25)",
            line={"width": 0},
            hoverinfo="skip",
            showlegend=False,
        ),
        row=row,
        col=col,
    )
    fig.add_trace(
        go.Scatter(
            x=stats[x],
            y=stats["median"],
            name=name,
            legendgroup=name,
            showlegend=legend,
            line={"color": BASE_COLOUR, "dash": dash},
        ),
        row=row,
        col=col,
    )


def _pair(
    fig: go.Figure,
    rows: pd.DataFrame,
    own: tuple[str, str],
    median: tuple[str, str],
    dash: str,
    col: int,
) -> None:
    """The index's values (red) and the median index's (grey) against layer, in row 1."""
    for (column, name), colour in ((own, HIGHLIGHT_COLOUR), (median, BASE_COLOUR)):
        fig.add_trace(
            go.Scatter(
                x=rows["layer"], y=rows[column], name=name, line={"color": colour, "dash": dash}
            ),
            1,
            col,
        )


def index_profile_figure(
    index: int,
    magnitude: pd.DataFrame,
    gains: pd.DataFrame,
    lever_rms: pd.DataFrame,
    lever_entropy: pd.DataFrame,
    *,
    title: str | None = None,
) -> go.Figure:
    """Four panels: |residual| by layer and token kind (index vs the median index); the index's
    norm gains by layer (vs the median gain); the log RMS change at the final norm and the
    next-token entropy change when the index is scaled entering each layer (index in red,
    controls' median and range in grey; one dash per scale)."""
    check_columns(
        magnitude, ("layer", "token_kind", "index", "max_abs", "median_max_abs"), "index magnitude"
    )
    check_columns(gains, ("norm", "layer", "index", "gain", "median_gain"), "norm gain")
    check_columns(
        lever_rms, ("index", "scale", "scaled_layer", "norm", "log_rms_ratio"), "norm lever"
    )
    check_columns(
        lever_entropy, ("index", "scale", "scaled_layer", "entropy_change"), "entropy lever"
    )
    fig = make_subplots(
        rows=2,
        cols=2,
        vertical_spacing=0.14,
        subplot_titles=(
            f"max |residual| at {index} vs median index",
            f"norm gains at {index}",
            "log RMS change at the final norm, scaled entering layer",
            "next-token entropy change (nats), scaled entering layer",
        ),
    )
    _magnitude_panel(fig, index, magnitude)
    _gains_panel(fig, index, gains)
    _lever_panels(fig, index, lever_rms, lever_entropy)
    for col in (1, 2):
        fig.update_xaxes(title_text="layer", row=2, col=col)
    fig.update_xaxes(title_text="layer", row=1, col=1)
    fig.update_xaxes(title_text="layer (final norm: n_layers)", row=1, col=2)
    return style(fig, title or f"Residual index {index}: magnitude, norm gains and the norm lever")


def index_profile_result_figure(profile: IndexProfile, *, title: str | None = None) -> go.Figure:
    """``index_profile_figure`` of the tables of ``interventions.index_profile``'s result."""
    return index_profile_figure(
        profile.index,
        profile.magnitude,
        profile.gains,
        profile.lever_rms,
        profile.lever_entropy,
        title=title,
    )


def _magnitude_panel(fig: go.Figure, index: int, magnitude: pd.DataFrame) -> None:
    mine = magnitude[magnitude["index"] == index]
    for kind, rows in mine.groupby("token_kind"):
        _pair(
            fig,
            rows,
            ("max_abs", f"{index}, {kind}"),
            ("median_max_abs", f"median, {kind}"),
            KIND_DASH.get(str(kind), "solid"),
            1,
        )
    fig.update_yaxes(type="log", title_text="max |residual|", row=1, col=1)


def _gains_panel(fig: go.Figure, index: int, gains: pd.DataFrame) -> None:
    own = gains[(gains["index"] == index) & (gains["norm"] != "final")]
    for norm, dash in (("ln1", "solid"), ("ln2", "dash")):
        rows = own[own["norm"] == norm]
        _pair(
            fig,
            rows,
            ("gain", f"{norm} gain at {index}"),
            ("median_gain", f"{norm} median"),
            dash,
            2,
        )
    final = gains[(gains["index"] == index) & (gains["norm"] == "final")]
    fig.add_trace(
        go.Scatter(
            x=final["layer"],
            y=final["gain"],
            mode="markers",
            marker={"color": HIGHLIGHT_COLOUR, "size": 11, "symbol": "star"},
            name=f"final gain at {index}",
        ),
        1,
        2,
    )


def _lever_panels(
    fig: go.Figure, index: int, lever_rms: pd.DataFrame, lever_entropy: pd.DataFrame
) -> None:
    at_final = lever_rms[lever_rms["norm"] == "final"]
    for k, scale in enumerate(sorted(at_final["scale"].unique())):
        dash = SCALE_DASH[k % len(SCALE_DASH)]
        for col, table, y in ((1, at_final, "log_rms_ratio"), (2, lever_entropy, "entropy_change")):
            at = table[table["scale"] == scale]
            _band(
                fig,
                at[at["index"] != index],
                "scaled_layer",
                y,
                2,
                col,
                f"controls, x{scale:g}",
                dash,
                legend=col == 1,
            )
            own_rows = at[at["index"] == index]
            fig.add_trace(
                go.Scatter(
                    x=own_rows["scaled_layer"],
                    y=own_rows[y],
                    name=f"{index}, x{scale:g}",
                    legendgroup=f"i{scale}",
                    showlegend=col == 1,
                    line={"color": HIGHLIGHT_COLOUR, "dash": dash},
                ),
                2,
                col,
            )
