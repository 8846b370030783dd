"""The paper's run matrix on this host: the original's layer sets and its L1 runs.

The first seed's anger, sadness and neutral IRMs trained again injecting into each quarter of
the host's layers (``q1``..``q4``, the original's 0-7 ... 24-31 scaled to the host), every 4th
layer and all layers, and with the original's L1 penalty (alpha 1e-4 / n_inject on the sum of
|outputs|). Does the same index dominate across layer sets, and do earlier layer sets get the
larger outputs (the summaries' "earlier neurons played a more significant role")?
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from analyses._common import Context, mechanism_emotions
from analyses._measured import dominance_rows
from analyses._summaries import MatrixSummary
from analyses._written import write_variants
from analyses.plots.mechanism import matrix_figure
from analyses.rules.mechanism import early_layers_verdict, same_index_verdict

EMOTIONS = ("anger", "sadness", "neutral")
LAYER_SETS = ("q1", "q2", "q3", "q4", "every4", "all")
L1: dict[str, Any] = {"l1_alpha": 1e-4}
L1_SETTING = "all + L1"


def _contexts(ctx: Context) -> dict[str, Context]:
    found = {}
    emotions = mechanism_emotions(ctx, EMOTIONS)
    for ls in LAYER_SETS:
        changes: dict[str, Any] = {} if ls == "all" else {"layers": ls}
        found[ls] = ctx.variant(f"layers{ls}" if changes else "", emotions=emotions, **changes)
    found[L1_SETTING] = ctx.variant("l1", emotions=emotions, **L1)
    return found


def main(ctx: Context) -> MatrixSummary:
    contexts = _contexts(ctx)
    rows = []
    for setting, c in contexts.items():
        for row in dominance_rows(c, setting, {"host basis": None}):
            outputs = [r.outputs for r in c.recordings(row["run"])]
            mean_abs = float(sum(o.abs().sum() for o in outputs) / sum(o.numel() for o in outputs))
            rows.append({**row, "layer_set": setting, "mean_abs_output": mean_abs})
    data = pd.DataFrame(rows)
    aligned = data[data["trained"] & data["aligned"]]
    top1 = {s: [int(i) for i in aligned[aligned["layer_set"] == s]["top1"]] for s in contexts}
    same = same_index_verdict({s: top1[s] for s in LAYER_SETS})
    magnitude = {
        q: list(aligned[aligned["layer_set"] == q]["mean_abs_output"])
        for q in ("q1", "q2", "q3", "q4")
    }
    early = early_layers_verdict(magnitude)
    fig = matrix_figure(
        data,
        title=(
            f"The paper's run matrix on {ctx.figures.host_label}: top index per run and mean "
            f"|output| per layer set (seed {ctx.first_seed}; hollow = not aligned)"
        ),
    )
    summary = MatrixSummary(
        same_index=same,
        early_layers=early,
        top1_aligned=top1,
        l1=L1,
        emotions=list(mechanism_emotions(ctx, EMOTIONS)),
        by_run=data.to_dict(orient="records"),
    )
    write_variants(
        ctx,
        "matrix",
        data,
        fig,
        contexts.values(),
        summary=summary,
        settings={"layer_sets": list(LAYER_SETS), "l1": L1},
    )
    return summary
