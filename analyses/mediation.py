"""LM-head mediation: how much of each IRM's effect goes through the final norm's scale, and how
strong a lever the dominant index is against every index of the residual stream.

Per aligned run (next-token and the original's loss apart): the relative NLL drop of its own
voice's held-out answers with the IRM, and the same with the final norm's scale (its input RMS)
held at the host-alone value (``evaluate.frozen_scale_nll_table``). The share that disappears
when the scale is frozen went through it. The lever: the mean |change| of next-token entropy when
one index of the final residual is scaled x8 before the final norm, for all ``d_model`` indices,
at the first answer position of every held-out question (``measures.causal.entropy_lever``);
the dominant index's percentile among them. ``rules.acting.lm_head_rule`` decides.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from analyses._common import KINDS, Context, spec_columns
from analyses._config import cache_key, cached_table
from analyses._measured import heldout, nll_by_question
from analyses._summaries import MediationSummary
from analyses._written import write_result
from irm_lens.evaluate import frozen_scale_nll_table
from irm_lens.inject import resid_post_hook
from irm_lens.interventions.causal import entropy_lever
from irm_lens.irm import IRM
from irm_lens.plotting.base import style
from irm_lens.prompts import encode
from irm_lens.rundir import RunDir


def _drop(table: pd.DataFrame) -> float:
    return 1.0 - float(table["nll_sum"].sum()) / float(table["n_tokens"].sum())


def run_gains(ctx: Context, run: str, memo: dict[Any, pd.DataFrame]) -> dict[str, float]:
    """The run's relative NLL drop on its own voice, with the final norm's scale free and
    frozen (the frozen table is cached in the run directory)."""
    config = ctx.specs[run].config
    nll = nll_by_question(ctx, run, memo, offset=1)  # the frozen table's target
    own = nll[nll["target"] == config.emotion]
    host_nll = own[own["condition"] == "host"]
    key = cache_key("frozen_scale", config.prompt_mode, config.max_len)

    def compute() -> pd.DataFrame:
        irm = IRM.load(RunDir(ctx.runs[run]).irm, ctx.host())
        return frozen_scale_nll_table(
            ctx.host(),
            heldout(config.emotion),
            irm,
            mode=config.prompt_mode,
            max_len=config.max_len,
        )  # type: ignore[arg-type]

    frozen = cached_table(ctx.runs[run] / "specificity" / f"frozen-{key}.csv", compute)
    base = float(host_nll["nll_sum"].sum())
    with_irm = float(own.loc[own["condition"] == "host+irm", "nll_sum"].sum())
    return {
        "gain": 1.0 - with_irm / base,
        "frozen_gain": 1.0 - float(frozen["nll_sum"].sum()) / base,
    }


def final_residuals(ctx: Context) -> torch.Tensor:
    """The host's final residual at the last prompt position of every held-out question."""
    host = ctx.host()
    last = resid_post_hook(host.cfg.n_layers - 1)
    rows = []
    for question in heldout("neutral")["question"]:
        ids = encode(host.tokenizer, question, mode="chat").ids
        with torch.no_grad():
            _, cache = host.run_with_cache(
                torch.tensor([ids], device=host.W_E.device), names_filter=[last]
            )
        rows.append(cache[last][0, -1])
    return torch.stack(rows)


def main(ctx: Context) -> MediationSummary:
    memo: dict[Any, pd.DataFrame] = {}
    rows = []
    for kind in KINDS:
        for run in ctx.trained(kind):
            gains = run_gains(ctx, run, memo) if run in ctx.aligned(kind) else {}
            rows.append(
                {
                    **spec_columns(ctx, run),
                    "aligned": run in ctx.aligned(kind),
                    "gain": gains.get("gain", np.nan),
                    "frozen_gain": gains.get("frozen_gain", np.nan),
                }
            )
    data = pd.DataFrame(rows)
    lever = entropy_lever(ctx.host(), final_residuals(ctx))
    dominant = ctx.dominant_index
    percentile = float((lever < lever[dominant]).mean())
    massive = ctx.massive_index
    by_kind = {}
    for kind in KINDS:
        kept = data[(data["run_kind"] == kind) & data["aligned"]]
        by_kind[kind] = {
            "runs": kept["run"].tolist(),
            "gains": kept["gain"].tolist(),
            "frozen_gains": kept["frozen_gain"].tolist(),
        }
    summary = MediationSummary(
        dominant_index=dominant,
        lever_percentile=percentile,
        lever_dominant=float(lever[dominant]),
        lever_median=float(np.median(lever)),
        lever_top_indices=[int(i) for i in np.argsort(-lever)[:5]],
        massive_index=massive,
        lever_massive_percentile=None
        if massive is None
        else float((lever < lever[massive]).mean()),
        by_kind=by_kind,
        n_positions=len(heldout("neutral")),
    )
    fig = _figure(data, lever, dominant, massive)
    write_result(ctx, "mediation", data, fig, summary=summary, runs=[*ctx.trained(), ctx.untrained])
    return summary


def _figure(data: pd.DataFrame, lever: np.ndarray, dominant: int, massive: int | None) -> go.Figure:
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(
            "own-voice NLL drop, final-norm scale free vs frozen",
            "entropy lever of every index (x8 before the final norm)",
        ),
    )
    kept = data[data["aligned"]]
    for column, label in (("gain", "scale free"), ("frozen_gain", "scale frozen at no-IRM")):
        fig.add_trace(go.Bar(x=kept["run"], y=kept[column], name=label), row=1, col=1)
    order = np.argsort(-lever)
    rank = np.empty_like(order)
    rank[order] = np.arange(1, len(lever) + 1)
    fig.add_trace(
        go.Scatter(
            x=rank[order],
            y=lever[order],
            mode="lines",
            name="all indices",
            line={"color": "#7f7f7f"},
            customdata=order,
            hovertemplate="index %{customdata}<br>rank %{x}<br>%{y:.3g} nats<extra></extra>",
        ),
        row=1,
        col=2,
    )
    marks = [(dominant, "dominant", "#d62728")]
    if massive is not None:
        marks.append((massive, "massive", "#1f77b4"))
    for index, label, color in marks:
        fig.add_trace(
            go.Scatter(
                x=[rank[index]],
                y=[lever[index]],
                mode="markers+text",
                marker={"size": 11, "color": color},
                name=f"{label} {index}",
                text=[f"{label} {index}"],
                textposition="top right",
            ),
            row=1,
            col=2,
        )
    fig.update_yaxes(tickformat=".0%", title_text="relative NLL drop (aligned runs)", row=1, col=1)
    fig.update_yaxes(type="log", title_text="mean |entropy change| (nats)", dtick=1, row=1, col=2)
    fig.update_xaxes(title_text="rank among all indices", row=1, col=2)
    return style(fig, "LM-head mediation")
