"""Interactive atlas per run: every token's IRM output, with a token slider and a prompt dropdown.

One HTML file per run (``atlas/<run>.html``; hover shows token, layer, index and value) over the
seven paper prompts, restricted to the indices with the largest mean |output| plus the dominant
index and the host's massive dims, so the file stays a few megabytes. ``figure.html`` /
``figure.png`` show the first run's.
"""

from __future__ import annotations

import pandas as pd

from analyses._common import Context, spec_columns
from analyses._written import write_result
from irm_lens import plotting
from irm_lens.export import save_figure

N_INDICES = 64
MAX_TOKENS = 48


def main(ctx: Context) -> dict[str, object]:
    runs = [n for n, spec in ctx.specs.items() if not spec.null]
    highlight = [ctx.dominant_index] + (
        [ctx.massive_index] if ctx.massive_index is not None else []
    )
    out = ctx.out / "atlas"
    rows, figures = [], {}
    for run in runs:
        recordings = ctx.recordings(run)
        fig = plotting.atlas_figure(
            recordings, run=run, indices=N_INDICES, highlight=highlight, max_tokens=MAX_TOKENS
        )
        path = save_figure(fig, out, run, png=False, shared_plotlyjs=True)["html"]
        figures[run] = fig
        rows.append(
            {
                **spec_columns(ctx, run),
                "file": path.name,
                "n_prompts": len(recordings),
                "bytes": path.stat().st_size,
            }
        )
    data = pd.DataFrame(rows)
    summary = {
        "files": {r["run"]: r["file"] for r in rows},
        "n_indices": N_INDICES,
        "max_tokens": MAX_TOKENS,
        "highlight": highlight,
    }
    write_result(ctx, "atlas", data, figures[runs[0]], summary=summary, runs=runs, size=(1300, 700))
    return summary
