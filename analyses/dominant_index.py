"""The dominant-index table: which residual indices carry the most |IRM output|, in every run.

The paper: one index (1512 of Llama-2-7B) stands out in every alignment. Here: each run's
indices ranked by share of total |output| over all recorded paper-prompt tokens, the consistency
of the top index across runs, its share over the runner-up's (a measure that means the same at
any d_model) and its share against the untrained null, and the host's massive-activation dims
beside them (the hypothesis that the dominant index is the host's massive dim: 507 on
SmolLM2-135M).
"""

from __future__ import annotations

import pandas as pd

from analyses._common import KINDS, Context, spec_columns
from analyses._summaries import DominanceSummary
from analyses._written import write_result
from analyses.plots import runset
from analyses.rules.base import Verdict
from analyses.rules.paper import consistency_rule, dominant_rule
from irm_lens import measures

TOP = 5


def main(ctx: Context) -> DominanceSummary:
    runs = [*ctx.trained(), ctx.untrained]
    massive = [int(i) for i in ctx.host_profile["massive"]["index"].head(3)]
    shown: list[int] = []
    for run in runs:
        shown += [int(i) for i in ctx.dominance[run]["index"].head(TOP)]
    data = _table(ctx, runs, sorted(set(shown) | set(massive)), massive)
    trained = ctx.headline  # medians and counts over the aligned next-token runs
    frequencies, overlap = measures.dominance_consistency(
        {r: ctx.dominance[r] for r in trained}, k=TOP
    )
    top1 = {run: int(ctx.dominance[run].iloc[0]["index"]) for run in runs}
    dominant = ctx.dominant_index
    d_model = len(ctx.dominance[runs[0]])
    fig = runset.dominance_matrix_figure(
        data,
        title=(
            f"Dominant indices: share of total |IRM output| per run ({ctx.figures.host_label}, "
            f"d_model {d_model}; top-{TOP} of every run and the host's massive dims {massive})"
        ),
    )
    uniform = 1 / d_model
    rules = {kind: _rules(ctx, kind, d_model) for kind in KINDS}
    summary = DominanceSummary(
        top1_by_run=top1,
        dominant_index=dominant,
        dominant_top1_runs=int(sum(top1[r] == dominant for r in trained)),
        n_trained=len(ctx.trained()),
        n_headline=len(trained),
        headline_aligned=ctx.headline_aligned,
        dominant_share_median=float(
            pd.Series(
                [ctx.dominance[r].set_index("index").loc[dominant, "share"] for r in trained]
            ).median()
        ),
        dominant_rank_by_run={
            r: int(ctx.dominance[r].set_index("index").loc[dominant, "rank"]) for r in runs
        },
        top1_share_median=float(
            pd.Series([ctx.dominance[r].iloc[0]["share"] for r in trained]).median()
        ),
        uniform_share=uniform,
        untrained_top1=top1[ctx.untrained],
        null_top1=[int(ctx.dominance[r].iloc[0]["index"]) for r in ctx.null],
        null_ratios=[ratio(ctx, r) for r in ctx.null],
        null_gaps=[gap(ctx, r) for r in ctx.null],
        ratio_by_run={r: ratio(ctx, r) for r in runs},
        gap_by_run={r: gap(ctx, r) for r in runs},
        host_massive_dims=massive,
        massive_rank_by_run={
            str(m): {r: int(ctx.dominance[r].set_index("index").loc[m, "rank"]) for r in runs}
            for m in massive
        },
        top1_heldout_by_run={
            r: int(measures.dominant_indices(ctx.outputs(r, "heldout")).iloc[0]["index"])
            for r in runs
        },
        mean_top5_jaccard=float(overlap["jaccard"].mean()) if len(overlap) else float("nan"),
        top1_frequencies=frequencies.head(5).to_dict(orient="records"),
        aligned_runs={kind: ctx.aligned(kind) for kind in KINDS},
        consistency_rules={kind: rules[kind][0] for kind in KINDS},
        dominance_rules={kind: rules[kind][1] for kind in KINDS},
    )
    write_result(
        ctx,
        "dominant_index",
        data,
        fig,
        summary=summary,
        runs=runs,
        size=(1300, 300 + 34 * len(runs)),
        settings={"top": TOP},
    )
    return summary


def _table(ctx: Context, runs: list[str], shown: list[int], massive: list[int]) -> pd.DataFrame:
    """Rank and share of every shown index in every run."""
    rows = []
    for run in runs:
        table = ctx.dominance[run].set_index("index")
        for index in shown:
            rows.append(
                {
                    **spec_columns(ctx, run),
                    "index": index,
                    "rank": int(table.loc[index, "rank"]),
                    "share": float(table.loc[index, "share"]),
                    "host_massive_dim": index in massive,
                }
            )
    return pd.DataFrame(rows)


def ratio(ctx: Context, run: str) -> float:
    """The run's dominance ratio: its top index's share of |output| x d_model (1 = uniform)."""
    table = ctx.dominance[run]
    return float(table.iloc[0]["share"]) * len(table)


def gap(ctx: Context, run: str) -> float:
    """The run's top index's share of |output| over the runner-up's (any d_model)."""
    shares = ctx.dominance[run]["share"]
    return float(shares.iloc[0] / shares.iloc[1])


def _rules(ctx: Context, kind: str, d_model: int) -> tuple[Verdict, Verdict]:
    """Consistency (the same index across runs) and dominance (one index far above the rest)
    over the aligned runs of one loss kind, apart, against the untrained null."""
    runs = ctx.aligned(kind)
    top_sets = [[int(i) for i in ctx.dominance[r]["index"].head(TOP)] for r in runs]
    ratios, gaps = [ratio(ctx, r) for r in runs], [gap(ctx, r) for r in runs]
    null = [ratio(ctx, r) for r in ctx.null]
    return consistency_rule(top_sets, d_model), dominant_rule(ratios, gaps, null)
