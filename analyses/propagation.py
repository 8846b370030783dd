"""Residual-stream propagation: is a perturbation at the dominant index carried by the skip path?

The paper's residual-architecture explanation: what the IRM adds at (layer l, index i) reaches
every later layer unchanged, so gradients for index i agree across layers (vertical stripes).
Measured: the change at index i of every later residual per unit added at layer 0 (persistence,
1 = carried unchanged) for the dominant index, the host's top massive dim and random indices; and
for the first trained run, how much of the IRM's own output at the dominant index each layer's
residual carries.
"""

from __future__ import annotations

import pandas as pd

from analyses._common import Context, prompt_tokens
from analyses._summaries import PropagationSummary
from analyses._written import write_result
from irm_lens import plotting
from irm_lens.interventions import causal
from irm_lens.irm import IRM
from irm_lens.prompts import PAPER_PROMPTS
from irm_lens.rundir import RunDir


def main(ctx: Context) -> PropagationSummary:
    host, tokens = ctx.host(), prompt_tokens(ctx)
    dominant, massive = ctx.dominant_index, ctx.massive_index
    targets = [dominant] + ([massive] if massive is not None and massive != dominant else [])
    tables = {i: causal.propagation(host, tokens, index=i) for i in targets}
    data = pd.concat([t.assign(target=i) for i, t in tables.items()], ignore_index=True)
    run = ctx.trained("next-token")[0]
    irm = IRM.load(RunDir(ctx.runs[run]).irm, host)
    carried = causal.irm_index_propagation(host, irm, tokens, index=dominant)
    title = (
        f"Propagation of a perturbation at the IRMs' most frequent top index {dominant}, added at "
        f"layer 0, against random indices ({ctx.figures.host_label})"
    )
    fig = plotting.propagation_figure(tables[dominant], title=title)

    def persistence(table: pd.DataFrame, kind: str) -> float:
        return float(table.loc[table["kind"] == kind, "persistence"].median())

    target = tables[dominant][tables[dominant]["kind"] == "target"]
    summary = PropagationSummary(
        dominant_index=dominant,
        positions="after the first (medians)",
        # a push 10x smaller moves the index by the same amount per unit: the linear regime
        linearity_median=float((target["persistence_small"] / target["persistence"]).median()),
        persistence_median={str(i): persistence(t, "target") for i, t in tables.items()},
        random_persistence_median=persistence(tables[dominant], "random"),
        final_layer_persistence={
            str(i): float(t[t["kind"] == "target"].sort_values("layer")["persistence"].iloc[-1])
            for i, t in tables.items()
        },
        irm_run=run,
        irm_carried_median=float(carried["carried"].median()),
        irm_leak_median=float(carried["leak"].median()),
    )
    write_result(
        ctx,
        "propagation",
        data,
        fig,
        summary=summary,
        runs=[run],
        settings={"prompt": PAPER_PROMPTS[0], "delta": 10.0, "small": 0.1},
    )
    return summary
