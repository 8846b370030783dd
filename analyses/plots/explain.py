"""The figure of the ``explain`` tier: the original's loss quirks, separated, side by side."""

from __future__ import annotations

import math
import textwrap
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analyses.plots.trajectory import SNAPSHOT_COLUMNS
from irm_lens.plotting.base import check_columns, ci_error_bars, style

EMOTION_COLORS = {"anger": "#d62728", "sadness": "#1f77b4", "joy": "#ff7f0e", "neutral": "#7f7f7f"}
DASHES = ("solid", "dash", "dot", "dashdot")
COLUMNS = ("run", "emotion", "seed", "cell", "step", "irm", *SNAPSHOT_COLUMNS)


def explain_figure(table: pd.DataFrame, null: pd.DataFrame, summary: Any) -> go.Figure:
    """One column per cell of the 2 x 2 (t+2 / t+1 x padding counted / masked). Top row: the
    own-objective specificity against optimizer steps with its 95 % CI (hollow markers: not
    aligned); bottom row: the dominance ratio with each snapshot's top index written beside it,
    the null's largest ratio (untrained IRMs) dashed. Colour: emotion; dash: seed."""
    check_columns(table, COLUMNS, "explain")
    snaps = table[table["irm"] == "snapshot"]
    cells = list(dict.fromkeys(snaps["cell"]))
    shared = {c["cell"]: c for c in summary.cells}

    def title(cell: str) -> str:
        c = shared.get(cell)
        if not c or c["index"] is None or c["index"] != c["index"]:
            return cell
        return f"{cell}<br>{int(c['index'])} tops {c['share']:.0%} of {c['n_aligned']} aligned"

    fig = make_subplots(
        rows=2,
        cols=max(len(cells), 1),
        shared_yaxes="rows",
        horizontal_spacing=0.04,
        vertical_spacing=0.14,
        subplot_titles=[title(c) for c in cells] + [""] * len(cells),
    )
    seeds = sorted(snaps["seed"].unique())
    for col, cell in enumerate(cells, start=1):
        for _, rows in snaps[snaps["cell"] == cell].sort_values("step").groupby("run", sort=False):
            emotion, seed = rows["emotion"].iloc[0], rows["seed"].iloc[0]
            line = {
                "color": EMOTION_COLORS.get(emotion, "#333"),
                "dash": DASHES[seeds.index(seed) % len(DASHES)],
            }
            symbols = ["circle" if v == "aligned" else "circle-open" for v in rows["verdict"]]
            # both panels: the run's steps, line and markers (hollow: not aligned)
            series = {
                "x": rows["step"].astype(int).astype(str),
                "line": line,
                "marker": {"symbol": symbols, "size": 8},
            }
            legend = {
                "name": f"{emotion}, seed {seed}",
                "legendgroup": f"{emotion}{seed}",
                "showlegend": col == 1,
            }
            fig.add_trace(
                go.Scatter(
                    y=rows["specificity"],
                    mode="lines+markers",
                    **series,
                    **legend,
                    error_y=ci_error_bars(
                        rows["specificity"],
                        rows["specificity_low"],
                        rows["specificity_high"],
                        thickness=1,
                    ),
                ),
                row=1,
                col=col,
            )
            fig.add_trace(
                go.Scatter(
                    y=rows["dominance"],
                    mode="lines+markers+text",
                    **series,
                    text=rows["top_index"].astype(str),
                    textposition="top center",
                    textfont={"size": 10},
                    **{**legend, "showlegend": False},
                ),
                row=2,
                col=col,
            )
        if len(null):
            fig.add_hline(
                y=float(null["dominance"].max()),
                line={"dash": "dash", "color": "#999"},
                row=2,
                col=col,
            )
    fig.update_xaxes(title_text="optimizer step", type="category", row=2)
    fig.update_yaxes(title_text="own-objective specificity", row=1, col=1)
    fig.update_yaxes(title_text="dominance ratio (dashed: untrained max)", row=2, col=1)
    verdict = summary.padding
    style(
        fig,
        title=f"Why one index? The original's loss quirks separated. Shared top index only "
        f"with padding: {verdict.verdict}",
    )
    return fig


SETTING_COLORS = {
    "all + L1": "#d62728",
    "q4": "#1f77b4",
    "second seed": "#2ca02c",
    "long tier": "#7f7f7f",
}


EMOTION_SYMBOLS = {"anger": "diamond", "sadness": "circle", "neutral": "square", "joy": "cross"}


def longer_figure(table: pd.DataFrame, reference: pd.DataFrame | None) -> go.Figure:
    """Dominance of the top index over training steps, each run a line coloured by setting
    with a marker per emotion (its best IRM a star, labelled with its top index), beside the
    long tier's first-seed runs (``reference``, its ``data.csv``; grey, dotted)."""
    fig = go.Figure()
    lines = [table] if len(table) else []
    if reference is not None:
        lines.append(reference[reference["kind"] == "next-token"].assign(setting="long tier"))
    stars = pd.concat([p[p["irm"] == "best"] for p in lines]) if lines else pd.DataFrame()
    stars = stars.sort_values(["step", "dominance"]) if len(stars) else stars
    # best-IRM labels above and below in turn, in order of step, so neighbours do not overlap
    above = {str(r): i % 2 == 0 for i, r in enumerate(stars.get("run", []))}
    for part in lines:
        for run, rows in part.groupby("run", sort=False):
            setting = str(rows["setting"].iloc[0])
            snaps = rows[rows["irm"] == "snapshot"].sort_values("step")
            best = rows[rows["irm"] == "best"]
            colour = SETTING_COLORS[setting]
            symbol = EMOTION_SYMBOLS.get(str(rows["emotion"].iloc[0]), "circle")
            fig.add_trace(
                go.Scatter(
                    x=snaps["step"],
                    y=snaps["dominance"],
                    mode="lines+markers",
                    name=f"{run} ({setting})",
                    line={"color": colour, "dash": "dot" if setting == "long tier" else "solid"},
                    marker={"symbol": symbol, "size": 8},
                    text=[f"top {t}" for t in snaps["top_index"]],
                    hovertemplate="%{fullData.name}<br>step %{x}: %{y:.2f} (%{text})",
                )
            )
            fig.add_trace(
                go.Scatter(
                    x=best["step"],
                    y=best["dominance"],
                    mode="markers+text",
                    marker={"symbol": "star", "size": 13, "color": colour},
                    text=[str(t) for t in best["top_index"]],
                    textposition="top center" if above.get(str(run), True) else "bottom center",
                    showlegend=False,
                    hovertemplate=f"{run} best IRM<br>step %{{x}}: %{{y:.2f}}",
                )
            )
    fig.update_xaxes(title_text="optimizer step (0 = the run's untrained IRM)")
    fig.update_yaxes(title_text="dominance ratio (top index share x d_model; 1 = uniform)")
    return style(
        fig,
        title="Trained longer where concentration was largest: dominance over training "
        "(markers: anger diamonds, sadness circles; stars: best IRM by validation loss, "
        "labelled with its top index)",
    )


BASELINE_COLORS = {
    "host alone": "#7f7f7f",
    "IRM": "#000000",
    "exported vectors": "#9467bd",
    "bias-only IRM": "#8c564b",
    "contrastive vector": "#2ca02c",
    "prompt": "#ff7f0e",
}


def baselines_figure(data: pd.DataFrame) -> go.Figure:
    """Top: each intervention's specificity per emotion; bottom: the voice classifier's
    probability of the emotion on its greedy answers; 95 % CIs as bars (one marker per seed
    where the intervention is per run)."""
    check_columns(
        data,
        ("intervention", "emotion", "specificity", "specificity_low", "specificity_high", "voice"),
        "baselines",
    )
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=(
            "specificity on the test questions (NLL-based)",
            "voice classifier: P(emotion) of the greedy answers",
        ),
    )
    for name, colour in BASELINE_COLORS.items():
        rows = data[data["intervention"] == name]
        if rows.empty:
            continue
        for row, (column, scale) in enumerate((("specificity", 100), ("voice", 1)), start=1):
            shown = rows.dropna(subset=[column])
            if shown.empty:
                continue
            fig.add_trace(
                go.Scatter(
                    x=shown["emotion"],
                    y=scale * shown[column],
                    error_y=ci_error_bars(
                        shown[column], shown[f"{column}_low"], shown[f"{column}_high"], scale=scale
                    ),
                    mode="markers",
                    marker={"color": colour, "size": 10},
                    name=name,
                    legendgroup=name,
                    showlegend=row == 1 or name == "host alone",
                    offsetgroup=name,
                ),
                row=row,
                col=1,
            )
    fig.update_layout(scattermode="group")
    fig.update_yaxes(title_text="specificity (%)", row=1, col=1)
    fig.update_yaxes(title_text="P(own voice)", range=[0, 1], row=2, col=1)
    return style(fig, title="Steering baselines beside the IRM, by the same yardsticks")


def subspace_figure(data: pd.DataFrame, chance: float) -> go.Figure:
    """Per kind of pair: the trained pairs' normalized projection kernels (dots) beside the
    control's (grey: an untrained IRM in the trained one's place); random subspaces dashed."""
    check_columns(data, ("pair", "control", "a", "b", "agreement"), "subspace")
    fig = go.Figure()
    for control, name, colour in (
        (True, "untrained IRM in its place", "#bbbbbb"),
        (False, "trained IRM", "#d62728"),
    ):
        rows = data[data["control"] == control]
        fig.add_trace(
            go.Box(
                x=rows["pair"],
                y=rows["agreement"],
                name=name,
                marker_color=colour,
                boxpoints="all",
                jitter=0.4,
                pointpos=0,
                text=rows["a"] + " / " + rows["b"],
            )
        )
    fig.add_hline(
        y=chance,
        line_dash="dash",
        annotation_text="two random subspaces",
        annotation_position="top left",
    )
    fig.update_layout(boxmode="group")
    fig.update_yaxes(title_text="normalized projection kernel (1 = same subspace)")
    return style(fig, title="Do IRMs push in the same directions? Top output subspaces compared")


def why_figure(data: pd.DataFrame) -> go.Figure:
    """One panel per candidate explanation (the predictors of the index share one): its effect
    with the 95 % CI (black) beside the control it is read against (grey, dashed), the verdict
    in the panel's title."""
    check_columns(data, ("explanation", "measure", "effect", "low", "high", "control"), "why")
    predictors = data["explanation"].str.startswith("the host alone names the index")
    groups = [(str(r.explanation), data.loc[[i]]) for i, r in data[~predictors].iterrows()]
    if predictors.any():
        groups.append(("the host alone names the index", data[predictors]))
    cols = min(4, math.ceil(math.sqrt(len(groups))))
    n_rows = -(-len(groups) // cols)

    def title(name: str, rows: pd.DataFrame) -> str:
        verdicts = ", ".join(dict.fromkeys(rows["verdict"]))
        return f"{name}<br><b>{verdicts}</b>"

    fig = make_subplots(
        rows=n_rows,
        cols=cols,
        subplot_titles=[title(n, r) for n, r in groups],
        vertical_spacing=0.44 / n_rows,  # the gaps take the same share of the height
        horizontal_spacing=0.07,
    )
    for k, (name, rows) in enumerate(groups):
        row, col = k // cols + 1, k % cols + 1
        labels = (
            [s.split("(")[-1].rstrip(")") for s in rows["explanation"]]
            if len(rows) > 1
            else ["measured"]
        )
        fig.add_trace(
            go.Scatter(
                x=labels,
                y=rows["effect"],
                error_y=ci_error_bars(rows["effect"], rows["low"], rows["high"]),
                mode="markers",
                marker={"color": "black", "size": 10},
                name=name,
                showlegend=False,
                hovertext=rows.get("reason"),
            ),
            row=row,
            col=col,
        )
        fig.add_trace(
            go.Scatter(
                x=labels,
                y=rows["control"],
                mode="lines+markers",
                line={"color": "#999999", "dash": "dash"},
                marker={"color": "#999999", "symbol": "line-ew-open", "size": 14},
                name=str(rows["control_label"].iloc[0]),
                showlegend=False,
            ),
            row=row,
            col=col,
        )
        measure = textwrap.fill(str(rows["measure"].iloc[0]), 34).replace("\n", "<br>")
        fig.update_yaxes(title={"text": measure, "font": {"size": 11}}, row=row, col=col)
    fig.update_annotations(font_size=11)
    return style(
        fig,
        title="Why one index? Each explanation's effect (black, 95 % CI) and its control (grey)",
    )
