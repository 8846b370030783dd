"""Figures of the host-side analyses: ablation, propagation, logit effects, striation, profile.

A tidy DataFrame (or the striation dict) in, a ``go.Figure`` out, no file I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from irm_lens.plotting.base import BASE_COLOUR, HIGHLIGHT_COLOUR, check_columns, constant, style

ABLATION_COLUMNS = ("condition", "alpha", "nll", "kl_to_irm", "index")


def ablation_figure(table: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """The ablation study: target NLL and KL to the IRM run per condition, and the dose-response.

    Left: one bar per ablation condition (NLL; KL in the hover). Right: NLL and KL against the
    IRM output scale alpha (the ``irm`` run is alpha 1).
    """
    check_columns(table, ABLATION_COLUMNS, "ablation")
    index = int(constant(table, "index", "ablation"))
    fig = make_subplots(rows=1, cols=2, subplot_titles=("ablations", "dose-response (IRM scale)"))
    fixed = table[~table["condition"].str.startswith("scale_")]
    fig.add_trace(
        go.Bar(
            x=fixed["condition"],
            y=fixed["nll"],
            name="target NLL",
            showlegend=False,
            marker_color=BASE_COLOUR,
            customdata=fixed["kl_to_irm"],
            hovertemplate="%{x}<br>NLL %{y:.3f}<br>KL to IRM %{customdata:.3f}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    dose = table[table["condition"].str.startswith("scale_") | (table["condition"] == "irm")]
    dose = dose.sort_values("alpha")
    fig.add_trace(
        go.Scatter(x=dose["alpha"], y=dose["nll"], mode="lines+markers", name="target NLL"),
        row=1,
        col=2,
    )
    fig.add_trace(
        go.Scatter(x=dose["alpha"], y=dose["kl_to_irm"], mode="lines+markers", name="KL to IRM"),
        row=1,
        col=2,
    )
    fig.update_yaxes(title_text="target NLL (nats per answer token)", row=1, col=1)
    fig.update_yaxes(title_text="nats per answer token", row=1, col=2)
    fig.update_xaxes(title_text="IRM output scale alpha", row=1, col=2)
    return style(fig, title or f"Ablating residual index {index}: effect on the target emotion")


PROPAGATION_COLUMNS = ("index", "kind", "layer", "persistence", "leak")


def propagation_figure(table: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Persistence of a residual perturbation by layer: the target index against random ones."""
    check_columns(table, PROPAGATION_COLUMNS, "propagation")
    fig = go.Figure()
    shown: set[str] = set()
    for (index, kind), rows in table.groupby(["index", "kind"], sort=False):
        target = kind == "target"
        fig.add_trace(
            go.Scatter(
                x=rows["layer"],
                y=rows["persistence"],
                mode="lines+markers" if target else "lines",
                name=f"index {index}" if target else "random indices",
                legendgroup=str(kind),
                showlegend=kind not in shown,
                line={
                    "color": HIGHLIGHT_COLOUR if target else BASE_COLOUR,
                    "width": 3 if target else 1,
                },
                customdata=rows["leak"],
                hovertemplate="layer %{x}<br>persistence %{y:.3f}<br>leak %{customdata:.3f}"
                f"<extra>index {index}</extra>",
            )
        )
        shown.add(str(kind))
    fig.update_xaxes(title_text="layer")
    fig.update_yaxes(title_text="change at the index / delta (1 = carried unchanged)")
    target = table.loc[table["kind"] == "target", "index"]
    label = int(target.iloc[0]) if len(target) else "?"
    start = int(table["layer"].min())
    return style(
        fig, title or f"Propagation of a perturbation at index {label} added at layer {start}"
    )


LOGIT_COLUMNS = ("direction", "rank", "token_id", "token", "effect")


def logit_effect_figure(table: pd.DataFrame, *, index: int, title: str | None = None) -> go.Figure:
    """Tokens a residual index promotes and suppresses through the final gain and unembedding."""
    check_columns(table, LOGIT_COLUMNS, "direct logit effect")
    rows = table.sort_values("effect")
    colours = [HIGHLIGHT_COLOUR if d == "promoted" else BASE_COLOUR for d in rows["direction"]]
    fig = go.Figure(
        go.Bar(
            x=rows["effect"],
            y=[repr(t) for t in rows["token"]],
            orientation="h",
            marker_color=colours,
            hovertemplate="%{y}: %{x:.4f}<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="logit change per unit of the index (final gain x W_U)")
    fig.update_yaxes(title_text="token", type="category")
    return style(fig, title or f"Direct logit effect of residual index {index}")


NORM_COLUMNS = ("scale", "entropy", "top1_prob", "rms")


def norm_effect_figure(table: pd.DataFrame, *, index: int, title: str | None = None) -> go.Figure:
    """Next-token entropy and top-1 probability as the index entering the final norm is scaled."""
    check_columns(table, NORM_COLUMNS, "norm-mediated effect")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(
        go.Scatter(
            x=table["scale"], y=table["entropy"], mode="lines+markers", name="entropy (nats)"
        ),
        secondary_y=False,
    )
    fig.add_trace(
        go.Scatter(
            x=table["scale"], y=table["top1_prob"], mode="lines+markers", name="top-1 probability"
        ),
        secondary_y=True,
    )
    fig.update_xaxes(title_text=f"scale of x[{index}] before the final norm", type="log")
    fig.update_yaxes(title_text="next-token entropy (nats)", secondary_y=False)
    fig.update_yaxes(title_text="top-1 probability", secondary_y=True, range=[0, 1])
    return style(fig, title or f"Norm-mediated effect of residual index {index}")


def striation_figure(
    stats: Mapping[str, Mapping[str, float]], *, title: str | None = None
) -> go.Figure:
    """Index, layer and residual shares of the variance of |IRM output|, per named run/control."""
    if not stats:
        raise ValueError("striation_figure needs at least one named result.")
    fig = go.Figure()
    parts = [
        ("index_share", "by residual index"),
        ("layer_share", "by layer"),
        ("resid_share", "neither (residual)"),
    ]
    names = list(stats)
    for key, label in parts:
        fig.add_trace(go.Bar(x=names, y=[stats[n][key] for n in names], name=label))
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title_text="share of the variance of mean |IRM output|", range=[0, 1])
    return style(fig, title or "Striation: where the variance of |IRM output| lies")


def massive_dims_figure(
    profile: pd.DataFrame, *, indices: Sequence[int], title: str | None = None
) -> go.Figure:
    """Largest |residual| by layer for chosen indices (e.g. the IRM's top index and the host's
    massive-activation dims) against the median index."""
    check_columns(profile, ("layer", "index", "max_abs"), "residual profile")
    per = profile.groupby(["layer", "index"], as_index=False)["max_abs"].max()
    median = per.groupby("layer")["max_abs"].median()
    fig = go.Figure(
        go.Scatter(
            x=median.index,
            y=median.values,
            name="median index",
            line={"color": BASE_COLOUR, "dash": "dash"},
        )
    )
    for index in indices:
        rows = per[per["index"] == index]
        fig.add_trace(
            go.Scatter(
                x=rows["layer"], y=rows["max_abs"], mode="lines+markers", name=f"index {index}"
            )
        )
    fig.update_xaxes(title_text="layer (residual stream after it)")
    fig.update_yaxes(title_text="max |residual|", type="log")
    return style(fig, title or "Residual magnitude by layer: chosen indices vs the median index")
