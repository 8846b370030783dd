"""Paper Fig. 2: the average IRM output per (layer, residual index), per emotion and seed.

Averaged over the paper's token set (every prompt token plus the first 10 generated ones) of the
seven paper prompts, signed, one colour scale per panel.
"""

from __future__ import annotations

import pandas as pd

from analyses._common import Context, heatmap_table, panel_name
from analyses._written import write_result
from irm_lens import plotting


def main(ctx: Context) -> dict[str, object]:
    runs = ctx.trained("next-token")
    tables = {run: heatmap_table(ctx, run) for run in runs}
    data = pd.concat(tables.values(), ignore_index=True)
    # rows: emotions, columns: seeds
    order = sorted(
        runs,
        key=lambda r: (
            ctx.figures.emotions.index(ctx.specs[r].config.emotion),
            ctx.figures.seeds.index(ctx.specs[r].config.seed),
        ),
    )
    panels = {panel_name(ctx, run): tables[run] for run in order}
    n_seeds = len(ctx.figures.seeds)
    title = (
        "Fig. 2: mean IRM output by injected layer and residual index<br><sup>"
        f"{ctx.figures.host_label}; 7 paper prompts, prompt + first 10 generated tokens; "
        "rows: emotions, columns: seeds</sup>"
    )
    fig = plotting.heatmap_grid(panels, cols=n_seeds if n_seeds > 1 else 2, title=title)
    fig.update_layout(margin={"t": 130})
    rows = -(-len(panels) // (n_seeds if n_seeds > 1 else 2))
    top = {run: int(ctx.dominance[run].iloc[0]["index"]) for run in runs}
    summary: dict[str, object] = {
        "runs": runs,
        "top_index_by_run": top,
        "n_tokens": [int(data["n_tokens"].min()), int(data["n_tokens"].max())],
    }
    write_result(
        ctx, "fig2_heatmaps", data, fig, summary=summary, runs=runs, size=(1200, 260 + 300 * rows)
    )
    return summary
