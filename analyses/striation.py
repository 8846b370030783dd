"""Striation statistics: is the IRM's |output| organised by residual index (vertical stripes)?

Per run, over all recorded tokens of the paper prompts: the shares of the variance of the mean
|output| map explained by residual index, by layer, and by neither; the cross-layer correlation
of index profiles; a permutation test (indices shuffled within each layer); and the same index
share for the untrained IRM of the same seed (the control for structure from the initialisation).
"""

from __future__ import annotations

import pandas as pd

from analyses._common import KINDS, Context
from analyses._summaries import StriationSummary
from irm_lens import plotting
from irm_lens.analysis.recorded import analyze_recordings
from irm_lens.analysis.verdicts import striation_rule

PERMUTATIONS = 200


def main(ctx: Context) -> StriationSummary:
    runs = [*ctx.trained(), ctx.untrained]
    baseline = ctx.outputs(ctx.untrained)
    rows = []
    for run in runs:
        table = analyze_recordings(ctx.recordings(run), tables=("striation",),
                                   n_permutations=PERMUTATIONS, baseline=baseline)  # fmt: skip
        stats = table["striation"].iloc[0].to_dict()
        aligned = run in ctx.aligned(ctx.specs[run].kind) if ctx.specs[run].trained else False
        rows.append({**ctx.spec_columns(run), "aligned": aligned, **stats})
    data = pd.DataFrame(rows)
    named = {row["run"]: row for row in rows}
    fig = plotting.striation_figure(
        named,
        title=(
            f"Striation: shares of the variance of mean |IRM output| per run "
            f"({ctx.figures.host_label}; p from {PERMUTATIONS} within-layer shuffles)"
        ),
    )
    trained = data[data["run"].isin(ctx.headline)]  # the medians: aligned next-token runs
    every = data[data["run_kind"] != "untrained"]
    untrained = data[data["run_kind"] == "untrained"].iloc[0]
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
        above_untrained_runs=int(
            (trained["index_share"] > float(untrained["index_share"])).sum()
        ),
        p_min_possible=1 / (PERMUTATIONS + 1),
        # the verdict rule over aligned runs only, one per loss kind
        rules={kind: striation_rule(
            every.loc[every["run"].isin(ctx.aligned(kind)), "index_share"].tolist(),
            every.loc[every["run"].isin(ctx.aligned(kind)), "cross_layer_corr"].tolist(),
            float(untrained["index_share"]), float(untrained["cross_layer_corr"]),
        ) for kind in KINDS},
    )  # fmt: skip
    ctx.write(
        "striation",
        data,
        fig,
        summary=summary,
        runs=runs,
        size=(1300, 650),
        settings={"permutations": PERMUTATIONS},
    )
    return summary


if __name__ == "__main__":
    from analyses.__main__ import run_one

    run_one(main)
