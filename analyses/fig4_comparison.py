"""Paper Fig. 4: the emotions' average heat maps side by side with an untrained IRM's.

Same statistic as Fig. 2 (first seed), each panel on its own colour scale as in the paper; the
untrained IRM (same architecture and seed, no training) shows what structure comes from the
initialisation alone.
"""

from __future__ import annotations

import pandas as pd

from analyses._common import Context, heatmap_table, panel_name
from analyses._summaries import Fig4ComparisonSummary
from analyses._written import write_result
from irm_lens import plotting


def main(ctx: Context) -> Fig4ComparisonSummary:
    runs = [r for r in ctx.trained("next-token") if ctx.specs[r].config.seed == ctx.first_seed]
    runs.append(ctx.untrained)
    tables = {run: heatmap_table(ctx, run) for run in runs}
    data = pd.concat(tables.values(), ignore_index=True)
    panels = {panel_name(ctx, run): table for run, table in tables.items()}
    title = (
        "Fig. 4: the emotions' IRMs next to an untrained IRM (mean IRM output)<br><sup>"
        f"{ctx.figures.host_label}; seed {ctx.first_seed}; each panel its own colour scale</sup>"
    )
    fig = plotting.heatmap_grid(panels, cols=min(3, len(panels)), title=title)
    fig.update_layout(margin={"t": 130})
    max_abs = {run: float(t["value"].abs().max()) for run, t in tables.items()}
    summary = Fig4ComparisonSummary(
        runs=runs,
        max_abs_mean_output=max_abs,
        trained_over_untrained={r: max_abs[r] / max_abs[ctx.untrained] for r in runs[:-1]},
    )
    rows = (len(panels) + 2) // 3
    write_result(
        ctx, "fig4_comparison", data, fig, summary=summary, runs=runs, size=(1500, 260 + 320 * rows)
    )
    return summary
