"""Striation statistics: is the IRM's |output| organised by residual index (vertical stripes)?

Per run, over all recorded tokens of the paper prompts: the shares of the variance of the mean
|output| map explained by residual index, by layer, and by neither; the cross-layer correlation
of index profiles; a permutation test (indices shuffled within each layer); the same shares of
the signed mean map (the paper's Fig. 2); and the same statistics for every untrained IRM of the
null (the control for structure from the initialisation).
"""

from __future__ import annotations

import pandas as pd

from analyses._common import KINDS, Context, spec_columns
from analyses._summaries import StriationSummary
from analyses._written import write_result
from analyses.rules.paper import striation_rule
from irm_lens import plotting
from irm_lens.measures.recorded import analyze_recordings

PERMUTATIONS = 200


def main(ctx: Context) -> StriationSummary:
    runs = [*ctx.trained(), *ctx.null]
    rows = []
    for run in runs:
        permutations = PERMUTATIONS if ctx.specs[run].trained or run == ctx.untrained else 0
        table = analyze_recordings(
            ctx.recordings(run), tables=("striation",), n_permutations=permutations
        )
        stats = table["striation"].iloc[0].to_dict()
        aligned = run in ctx.aligned(ctx.specs[run].kind) if ctx.specs[run].trained else False
        rows.append({**spec_columns(ctx, run), "aligned": aligned, **stats})
    data = pd.DataFrame(rows)
    named = {row["run"]: row for row in rows if row["run"] in [*ctx.trained(), ctx.untrained]}
    fig = plotting.striation_figure(
        named,
        title=(
            f"Striation: shares of the variance of mean |IRM output| per run "
            f"({ctx.figures.host_label}; p from {PERMUTATIONS} within-layer shuffles)"
        ),
    )
    trained = data[data["run"].isin(ctx.headline)]  # the medians: aligned next-token runs
    every = data[data["run_kind"] != "untrained"]
    untrained = data[data["run"] == ctx.untrained].iloc[0]
    null = data[data["run_kind"] == "untrained"]

    def of_aligned(kind: str, column: str) -> list[float]:
        return every.loc[every["run"].isin(ctx.aligned(kind)), column].tolist()

    summary = StriationSummary(
        n_trained=len(every),
        n_headline=len(trained),
        headline_aligned=ctx.headline_aligned,
        index_share_median=float(trained["index_share"].median()),
        layer_share_median=float(trained["layer_share"].median()),
        index_over_layer_runs=int((trained["index_share"] > trained["layer_share"]).sum()),
        significant_runs=int((trained["p_value"] < 0.01).sum()),
        cross_layer_corr_median=float(trained["cross_layer_corr"].median()),
        untrained_index_share=float(untrained["index_share"]),
        untrained_cross_layer_corr=float(untrained["cross_layer_corr"]),
        null_index_shares=null["index_share"].tolist(),
        null_layer_shares=null["layer_share"].tolist(),
        null_cross_layer_corrs=null["cross_layer_corr"].tolist(),
        signed_index_share_median=float(trained["signed_index_share"].median()),
        signed_layer_share_median=float(trained["signed_layer_share"].median()),
        above_untrained_runs=int((trained["index_share"] > null["index_share"].max()).sum()),
        p_min_possible=1 / (PERMUTATIONS + 1),
        # the verdict rule over aligned runs only, one per loss kind
        rules={
            kind: striation_rule(
                of_aligned(kind, "index_share"),
                of_aligned(kind, "layer_share"),
                of_aligned(kind, "cross_layer_corr"),
                null["index_share"].tolist(),
                null["cross_layer_corr"].tolist(),
                signed=(
                    of_aligned(kind, "signed_index_share"),
                    of_aligned(kind, "signed_layer_share"),
                ),
            )
            for kind in KINDS
        },
    )
    write_result(
        ctx,
        "striation",
        data,
        fig,
        summary=summary,
        runs=runs,
        size=(1300, 650),
        settings={"permutations": PERMUTATIONS},
    )
    return summary
