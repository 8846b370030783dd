"""Ablating the dominant index ("neuron 1512") of an anger IRM, and the host's massive dim.

On held-out anger questions with the first-seed anger IRM attached: the dominant index zeroed or
mean-ablated in the IRM output and in the residual stream itself, and the IRM output scaled
(dose-response). Effects: anger NLL, KL to the unablated IRM, NRC anger share, fact retention.
The paper's reading predicts that removing the dominant index from the IRM output undoes much of
the alignment; a massive-activation dim should matter to the host itself, IRM or not. And per
aligned next-token run: its own top index zeroed in its output against random indices of
matched magnitude (among its next 20 largest).
Any run and index from the command line: ``irm-lens ablate RUN_DIR --index I``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analyses._common import Context
from analyses._config import cache_key, cached_table
from analyses._summaries import AblationSummary
from analyses._written import write_result
from irm_lens import plotting
from irm_lens.data.datasets import load_dataset
from irm_lens.interventions.ablation import ablation_study, own_index_ablation
from irm_lens.irm import IRM
from irm_lens.rundir import RunDir

MAX_NEW_TOKENS = 24
N_CONTROLS = 5
"""Controls per run for its own top index: random indices among its next 20 largest outputs."""


def own_top(ctx: Context, run: str) -> dict[str, object]:
    """The run's own top index zeroed in its output vs ``N_CONTROLS`` indices of matched
    magnitude (random among ranks 2-21 of its |output| shares), on its held-out test rows."""
    config = ctx.specs[run].config
    ranked = [int(i) for i in ctx.dominance[run]["index"]]
    rng = np.random.default_rng(ctx.first_seed)
    controls = sorted(int(i) for i in rng.choice(ranked[1:21], size=N_CONTROLS, replace=False))
    rows = load_dataset(config.emotion, split="test").head(ctx.figures.ablation_rows)
    key = cache_key("own_top", ranked[0], controls, rows["question_id"].tolist())

    def compute() -> pd.DataFrame:
        irm = IRM.load(RunDir(ctx.runs[run]).irm, ctx.host())
        return own_index_ablation(
            ctx.host(), irm, rows, ranked[0], controls, mode=config.prompt_mode
        )

    table = cached_table(ctx.runs[run] / "ablation" / f"own-top-{key}.csv", compute)
    top = float(table.loc[table["condition"] == "top", "undone"].iloc[0])
    control = float(table.loc[table["condition"] == "control", "undone"].median())
    return {
        "index": ranked[0],
        "undone": top,
        "controls": controls,
        "controls_undone_median": control,
    }


def cached_study(
    ctx: Context, run: str, irm: IRM, rows: pd.DataFrame, index: int, *, generate: bool
) -> pd.DataFrame:
    """``ablation_study``, kept in the run's cache directory (it is a function of the run)."""
    config = ctx.specs[run].config
    key = cache_key(index, rows["question_id"].tolist(), MAX_NEW_TOKENS, generate)
    return cached_table(
        ctx.runs[run] / "ablation" / f"index{index}-{key}.csv",
        lambda: ablation_study(
            ctx.host(),
            irm,
            rows,
            index,
            emotion=config.emotion,
            mode=config.prompt_mode,
            max_new_tokens=MAX_NEW_TOKENS,
            generate=generate,
            progress=ctx.progress,
        ),
    )


def main(ctx: Context) -> AblationSummary:
    run = ctx.trained("next-token")[0]
    config = ctx.specs[run].config
    host = ctx.host()
    irm = IRM.load(RunDir(ctx.runs[run]).irm, host)
    rows = load_dataset(config.emotion, split="test").head(ctx.figures.ablation_rows)
    dominant, massive = ctx.dominant_index, ctx.massive_index
    indices = [dominant] + ([massive] if massive is not None and massive != dominant else [])
    tables = {i: cached_study(ctx, run, irm, rows, i, generate=i == dominant) for i in indices}
    data = pd.concat(tables.values(), ignore_index=True).assign(run=run)
    title = (
        f"Ablating index {dominant} (the IRMs' most frequent top index) in run {run}: "
        f"{config.emotion} NLL per condition and the IRM dose-response "
        f"({len(rows)} held-out questions, {ctx.figures.host_label})"
    )
    fig = plotting.ablation_figure(tables[dominant], title=title)

    def numbers(table: pd.DataFrame) -> dict[str, dict[str, float]]:
        """{metric: {condition: value}}."""
        cols = [c for c in ("nll", "kl_to_irm", "nrc_share", "fact_retention") if c in table]
        return {
            c: {str(k): float(v) for k, v in col.items()}
            for c, col in table.set_index("condition")[cols].items()
        }

    own = {r: own_top(ctx, r) for r in ctx.headline}
    summary = AblationSummary(
        run=run,
        emotion=config.emotion,
        n_rows=len(rows),
        by_index={str(i): numbers(t) for i, t in tables.items()},
        own_top=own,
        own_top_undone_median=float(np.median([o["undone"] for o in own.values()])),
        own_controls_undone_median=float(
            np.median([o["controls_undone_median"] for o in own.values()])
        ),
    )
    write_result(
        ctx,
        "ablation",
        data,
        fig,
        summary=summary,
        runs=[run],
        settings={
            "max_new_tokens": MAX_NEW_TOKENS,
            "indices": indices,
            "generated_for": [dominant],
        },
        size=(1300, 600),
    )
    return summary
