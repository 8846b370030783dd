"""Is the IRM a fixed steering vector? Each run's recorded outputs split into their mean over
tokens (one vector per layer) plus the rest.

For every trained IRM and every untrained IRM of the null, over the paper prompts' recorded
tokens: the share of the outputs' sum of squares the constant part explains, the index where
the constant part is largest and whether it is the IRM's top index by |output|.
``irm_lens.measures.steering.steering_rule`` judges the aligned next-token IRMs against the null.
For each next-token IRM the constant part is also exported as steering vectors
(``irm_lens.steer``) and its specificity measured beside the IRM's, alike (the test questions,
``irm_lens.evaluate.intervention_specificity``): does the vector steer as well as the IRM? And a
baseline trained, not read off the IRM: a bias-only IRM (one learned vector per injected layer,
no input; ``irm_lens.interventions.predict.fit_bias``) trained with the run's loss, rows, step
size, batch and steps, measured alike, with its top index and dominance ratio.
Needs the default run set's recordings (the run cache).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
import torch

from analyses._common import Context, spec_columns
from analyses._config import cache_key, cached_table
from analyses._summaries import SteeringSummary
from analyses._written import write_result
from analyses.rules.steering import steering_rule, vector_comparison
from irm_lens.evaluate import intervention_specificity
from irm_lens.inject import attach, write_hook
from irm_lens.interventions.predict import fit_bias
from irm_lens.irm import IRM, parse_layers
from irm_lens.measures.dominance import dominance_ratio
from irm_lens.measures.steering import constant_share, constant_top
from irm_lens.plotting.base import style
from irm_lens.rundir import RunDir
from irm_lens.steer import SteeringVectors
from irm_lens.training.runs import run_summary

_HOST_TABLES: dict[tuple[Any, ...], dict[tuple[Any, ...], Any]] = {}


def host_memo(ctx: Context) -> dict[tuple[Any, ...], Any]:
    """The host-alone answer tables of this process's host, shared by every measurement here
    (no intervention changes them)."""
    f = ctx.figures
    return _HOST_TABLES.setdefault((f.host, f.device, f.dtype), {})


def vector_specificity(ctx: Context, run: str) -> pd.DataFrame:
    """The specificity (with its 95 % CI and verdict) of a run's IRM and of its constant part
    exported as steering vectors, on the test questions, measured alike (cached in the run)."""

    def compute() -> pd.DataFrame:
        host, config = ctx.host(), ctx.specs[run].config
        irm = IRM.load(RunDir(ctx.runs[run]).irm, host)
        irm.eval()
        vectors = SteeringVectors.from_recordings(ctx.recordings(run), source=run)
        rows = []
        for what, within in (
            ("IRM", lambda: attach(host, irm)),
            ("vectors", lambda: vectors.applied(host)),
        ):
            measured = intervention_specificity(host, config, within, host_memo=host_memo(ctx))
            rows.append({"intervention": what, **measured.columns()})
        return pd.DataFrame(rows)

    path = ctx.runs[run] / "steering" / f"specificity-{cache_key('vector-specificity', 1)}.csv"
    return cached_table(path, compute)


def bias_vectors(ctx: Context, run: str) -> SteeringVectors:
    """A bias-only IRM trained like ``run`` (its loss, training rows, lr, rows per step, injected
    layers and the optimizer steps it took; its seed for the row draws), one vector per
    injected layer (cached in the run as a safetensors file)."""
    path = ctx.runs[run] / "steering" / f"bias-{cache_key('bias-vectors', 2)}.safetensors"
    if path.exists():
        return SteeringVectors.load(path)
    host, config = ctx.host(), ctx.specs[run].config
    layers = parse_layers(config.layers, host.cfg.n_layers)
    fit = fit_bias(
        host,
        config.rows("train"),
        objective=config.objective,
        mode=config.prompt_mode,
        max_len=config.max_len,
        steps=int(run_summary(ctx.runs[run])["steps"]),
        lr=config.lr,
        batch_size=config.batch_size,
        grad_accum=config.grad_accum,
        layers=layers,
        seed=config.seed,
    )
    meta = {"source": f"bias-only IRM trained like {run}", "loss": f"{fit.losses[-1]:.6g}"}
    vectors = SteeringVectors({write_hook(layer): fit.vectors[layer] for layer in layers}, meta)
    vectors.save(path)
    return vectors


def bias_baseline(ctx: Context, run: str) -> pd.DataFrame:
    """The bias-only IRM of ``run`` (``bias_vectors``): specificity measured like the IRM's,
    top index and dominance ratio of its vectors (cached in the run)."""

    def compute() -> pd.DataFrame:
        host, config = ctx.host(), ctx.specs[run].config
        vectors = bias_vectors(ctx, run)
        measured = intervention_specificity(
            host, config, lambda: vectors.applied(host), host_memo=host_memo(ctx)
        )
        d = dominance_ratio([torch.stack(list(vectors.vectors.values()))[None]])
        loss = float(vectors.meta["loss"])
        return pd.DataFrame(
            [{**measured.columns(), "top1": d.top1, "ratio": d.ratio, "loss": loss}]
        )

    path = ctx.runs[run] / "steering" / f"bias-{cache_key('bias-baseline', 2)}.csv"
    return cached_table(path, compute)


def main(ctx: Context) -> SteeringSummary:
    rows = []
    for run in [*ctx.trained(), *ctx.null]:
        outputs = [r.outputs for r in ctx.recordings(run)]
        spec = ctx.specs[run]
        rows.append(
            {
                **spec_columns(ctx, run),
                "aligned": run in ctx.aligned(spec.kind) if spec.trained else False,
                "constant_share": constant_share(outputs),
                "constant_top": constant_top(outputs),
                "irm_top": int(ctx.dominance[run].iloc[0]["index"]),
            }
        )
    data = pd.DataFrame(rows)
    data["same_top"] = data["constant_top"] == data["irm_top"]
    measured = {run: vector_specificity(ctx, run) for run in ctx.trained("next-token")}
    for what, prefix in (("IRM", "irm"), ("vectors", "vector")):
        for column in ("specificity", "specificity_low", "specificity_high", "verdict"):
            data[f"{prefix}_{column}"] = data["run"].map(
                {r: t.set_index("intervention").loc[what, column] for r, t in measured.items()}
            )
    bias = {run: bias_baseline(ctx, run).iloc[0] for run in ctx.trained("next-token")}
    for column in (
        "specificity",
        "specificity_low",
        "specificity_high",
        "verdict",
        "top1",
        "ratio",
    ):
        data[f"bias_{column}"] = data["run"].map({r: b[column] for r, b in bias.items()})
    headline = data[data["run"].isin(ctx.headline)]
    null = data[data["run_kind"] == "untrained"]
    verdict = steering_rule(list(headline["constant_share"]), list(null["constant_share"]))
    compared = data.dropna(subset=["vector_specificity"])
    summary = SteeringSummary(
        verdict=verdict,
        runs=list(headline["run"]),
        same_top=int(headline["same_top"].sum()),
        null_max=float(null["constant_share"].max()),
        vectors=vector_comparison(
            list(compared["irm_specificity"]), list(compared["vector_specificity"])
        ),
        bias=vector_comparison(
            list(compared["irm_specificity"]), list(compared["bias_specificity"]), "a bias-only IRM"
        ),
    )
    write_result(
        ctx, "steering", data, _figure(data, verdict.verdict), summary=summary, size=(1100, 600)
    )
    return summary


def _figure(data: pd.DataFrame, verdict: str) -> go.Figure:
    fig = go.Figure()
    for kind, rows in data.groupby("run_kind", sort=False):
        fig.add_trace(
            go.Bar(
                x=rows["run"],
                y=rows["constant_share"],
                name=str(kind),
                text=[
                    f"{c}/{t}" for c, t in zip(rows["constant_top"], rows["irm_top"], strict=True)
                ],
                textposition="outside",
            )
        )
    fig.update_yaxes(title_text="share of sum of squares in the constant part", range=[0, 1.1])
    fig.update_xaxes(tickangle=-45)
    return style(
        fig,
        title=f"Is the IRM a fixed steering vector? {verdict} (labels: constant's top / IRM's top)",
    )
