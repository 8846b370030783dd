"""The host's massive-activation dims beside the IRMs' dominant index.

Largest |residual| per layer for the dominant IRM index, the host's massive dims and the median
index (over the seven paper prompts), with each index's final-norm gain and unembedding norm.
The hypothesis under test: the IRM's dominant index is a massive-activation dim with a small
final-norm gain (Llama-2-7B's 1512 is reported to be sink-like with gain ~5e-5).
"""

from __future__ import annotations

import pandas as pd

from analyses._common import Context
from analyses._summaries import HostProfileSummary
from analyses._written import write_result
from irm_lens import plotting
from irm_lens.interventions.host_profile import PROFILE_RATIO


def main(ctx: Context) -> HostProfileSummary:
    profile = ctx.host_profile
    residual, massive, gains = profile["residual"], profile["massive"], profile["gains"]
    dominant = ctx.dominant_index
    shown = [dominant, *[int(i) for i in massive["index"].head(2) if int(i) != dominant]]
    per = residual.groupby(["layer", "index"], as_index=False)[["max_abs", "mean_abs"]].max()
    median = per.groupby("layer", as_index=False)[["max_abs", "mean_abs"]].median()
    data = pd.concat(
        [
            per[per["index"].isin(shown)].assign(
                series=lambda t: "index " + t["index"].astype(str)
            ),
            median.assign(index=-1, series="median index"),
        ],
        ignore_index=True,
    )
    gains_by = gains.set_index("index")
    title = (
        f"Residual magnitude by layer: IRM dominant index {dominant} vs the host's massive "
        f"dims ({ctx.figures.host_label}, 7 paper prompts)"
    )
    fig = plotting.massive_dims_figure(residual, indices=shown, title=title)

    def describe(index: int) -> dict[str, float]:
        row = gains_by.loc[index]
        peak = per[per["index"] == index]["max_abs"].max()
        return {
            "final_gain": float(row["final_gain"]),
            "final_gain_rank": int(row["final_gain_rank"]),
            "unembed_norm_rank": int(row["unembed_norm_rank"]),
            "max_abs": float(peak),
            "max_over_median": float(peak / median["max_abs"].max()),
        }

    summary = HostProfileSummary(
        d_model=len(gains),
        massive_dims=massive.head(5).to_dict(orient="records"),
        dominant_index=dominant,
        dominant_is_massive=dominant in set(massive["index"].astype(int)),
        indices={str(i): describe(i) for i in shown},
        median_final_gain=float(gains["final_gain"].median()),
        smallest_gain_index=int(gains.sort_values("final_gain").iloc[0]["index"]),
    )
    write_result(
        ctx,
        "host_profile",
        data,
        fig,
        summary=summary,
        runs=[ctx.untrained],
        settings={"massive_ratio": PROFILE_RATIO},
    )
    return summary
