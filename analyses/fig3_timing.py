"""Paper Fig. 3: when the 1000 largest |IRM outputs| happen, counted per token position.

For every run and paper prompt: the top-1000 values over tokens x layers x indices, counted per
token position, in sequence order and in the order the original drew its histogram (its token
files natural-sorted by name: the prompt's last token, the generated tokens, then the prompt from
BOS). The claim: most fall early in inference, very few past the sequence's midpoint. The figure
counts the paper's top-1000; the rule reads the top-k that is the same fraction of each token's
values as 1000 is on Llama-2-7B (``scaled_k``), against the untrained null.
"""

from __future__ import annotations

import pandas as pd

from analyses._common import KINDS, Context, panel_name, spec_columns
from analyses._summaries import TimingSummary
from analyses._written import write_result
from analyses.plots import runset
from analyses.rules.acting import timing_rule
from irm_lens import measures
from irm_lens.measures.timing import file_order

K = 1000
LLAMA2_VALUES_PER_TOKEN = 4096 * 32
"""d_model x injected layers of the paper's host: its top-1000 is this fraction of a token's
values, which ``scaled_k`` carries over to another host."""


def scaled_k(ctx: Context) -> int:
    """The top-k that takes the same fraction of each token's values as the paper's top-1000 on
    Llama-2-7B (all 32 layers injected)."""
    _, n_inject, d_model = ctx.recordings(ctx.untrained)[0].outputs.shape
    return max(1, round(K * n_inject * d_model / LLAMA2_VALUES_PER_TOKEN))


def timing_table(ctx: Context, run: str, prompt_set: str = "paper", k: int = K) -> pd.DataFrame:
    parts = []
    for rec in ctx.recordings(run, prompt_set):
        table = measures.topk_timing(rec.outputs, rec.kinds, k=k)
        position = file_order(rec.kinds.count("prompt"), len(rec.kinds))
        parts.append(
            table.assign(
                prompt=rec.name,
                n_tokens=len(rec.kinds),
                file_position=position[table["token"].to_numpy()],
            )
        )
    return pd.concat(parts, ignore_index=True).assign(**spec_columns(ctx, run))


def shares(table: pd.DataFrame) -> dict[str, float]:
    """Shares of the counted values: before the midpoint (in sequence order and in the
    original's file order, ``measures.file_order``), on prompt tokens, on token 0."""
    total = table["count"].sum()
    early = table.loc[table["token"] < table["n_tokens"] / 2, "count"].sum()
    prompt = table.loc[table["kind"] == "prompt", "count"].sum()
    first = table.loc[table["token"] == 0, "count"].sum()
    file_early = table.loc[table["file_position"] < table["n_tokens"] / 2, "count"].sum()
    return {
        "before_midpoint": float(early / total),
        "before_midpoint_file_order": float(file_early / total),
        "on_prompt": float(prompt / total),
        "on_first_token": float(first / total),
    }


def main(ctx: Context) -> TimingSummary:
    runs = [*ctx.trained(), *ctx.null]
    data = pd.concat([timing_table(ctx, run) for run in runs], ignore_index=True)
    by_run = {run: shares(data[data["run"] == run]) for run in runs}
    k_scaled = scaled_k(ctx)  # the rule reads it: the paper's share of values per token
    scaled = {run: shares(timing_table(ctx, run, k=k_scaled)) for run in runs}
    shown = [r for r in ctx.trained("next-token") if ctx.specs[r].config.seed == ctx.first_seed]
    shown.append(ctx.untrained)
    # Show the paper prompt whose recordings are longest: plain-text prompts often end early.
    names = [r.name for r in ctx.recordings(shown[0])]
    shortest = {
        n: min(len(next(r for r in ctx.recordings(run) if r.name == n).kinds) for run in shown)
        for n in names
    }
    first = next(
        r for r in ctx.recordings(shown[0]) if r.name == max(names, key=lambda n: shortest[n])
    )
    generated = [r.kinds.count("generated") for run in ctx.trained() for r in ctx.recordings(run)]
    heldout = pd.concat([timing_table(ctx, run, "heldout") for run in ctx.trained()])
    panels = {}
    for run in shown:  # each run in sequence order, then as the original drew it
        rows = data[(data["run"] == run) & (data["prompt"] == first.name)]
        panels[panel_name(ctx, run)] = rows[["token", "kind", "count", "k_used"]]
        in_file_order = rows.assign(token=rows["file_position"]).sort_values("token")
        panels[f"{panel_name(ctx, run)}, original's order"] = in_file_order[
            ["token", "kind", "count", "k_used"]
        ]
    title = (
        f"Fig. 3: where the top-{K} |IRM output| values fall, by token position<br><sup>"
        f"{ctx.figures.host_label}; paper prompt {first.prompt!r}, sampled to "
        f"{ctx.figures.paper_max_length} tokens; seed {ctx.first_seed}</sup>"
    )
    fig = runset.timing_grid(panels, title=title)
    fig.update_layout(margin={"t": 130})
    headline = ctx.headline  # medians over the aligned next-token runs
    trained = [by_run[r]["before_midpoint"] for r in headline]
    summary = TimingSummary(
        k=K,
        by_run=by_run,
        trained_before_midpoint_min=min(trained),
        trained_before_midpoint_median=float(pd.Series(trained).median()),
        untrained_before_midpoint=by_run[ctx.untrained]["before_midpoint"],
        generated_tokens_median=float(pd.Series(generated).median()),
        generated_tokens_min=int(min(generated)),
        shown_prompt=first.prompt,
        heldout_before_midpoint=shares(heldout)["before_midpoint"],
        heldout_on_prompt=shares(heldout)["on_prompt"],
        trained_on_prompt_median=float(
            pd.Series([by_run[r]["on_prompt"] for r in headline]).median()
        ),
        trained_on_first_token_median=float(
            pd.Series([by_run[r]["on_first_token"] for r in headline]).median()
        ),
        trained_before_midpoint_file_order_median=float(
            pd.Series([by_run[r]["before_midpoint_file_order"] for r in headline]).median()
        ),
        n_headline=len(headline),
        headline_aligned=ctx.headline_aligned,
        untrained_before_midpoint_file_order=by_run[ctx.untrained]["before_midpoint_file_order"],
        k_scaled=k_scaled,
        aligned_runs=headline,
        scaled_by_run=scaled,
        null_before_midpoint=[by_run[r]["before_midpoint"] for r in ctx.null],
        null_before_midpoint_file_order=[by_run[r]["before_midpoint_file_order"] for r in ctx.null],
        rules={
            kind: timing_rule(
                [scaled[r]["before_midpoint"] for r in ctx.aligned(kind)],
                [scaled[r]["before_midpoint"] for r in ctx.null],
                [scaled[r]["before_midpoint_file_order"] for r in ctx.aligned(kind)],
                [scaled[r]["before_midpoint_file_order"] for r in ctx.null],
            )
            for kind in KINDS
        },
    )
    per_run = pd.DataFrame(
        [
            {**spec_columns(ctx, r), "k": k, **v}
            for k, table in ((K, by_run), (k_scaled, scaled))
            for r, v in table.items()
        ]
    )
    write_result(
        ctx,
        "fig3_timing",
        data,
        fig,
        summary=summary,
        runs=runs,
        tables={"runs": per_run},
        size=(1200, 300 + 220 * ((len(panels) + 1) // 2)),
    )
    return summary
