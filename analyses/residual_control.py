"""The residual explanation's control: IRMs that write through a fixed random rotation per layer.

The explanation: the skip path carries one coordinate system through every layer, so gradients
reaching the IRM's outputs at different layers agree index by index, and its outputs line up in
stripes. Its control: the first seed's next-token IRMs trained again writing ``R_l v_l`` (a
fixed random orthogonal ``R_l`` per layer, ``IRMConfig.rotated_output``). If the skip path makes
the stripes, they form in the residual basis (the written deltas) and not in the IRM's own
outputs ``v_l``; ``analyses.rules.paper.residual_rule`` decides (the report).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from analyses._common import Context
from analyses._summaries import ResidualControlSummary
from analyses._written import write_result
from analyses.plots.mechanism import residual_control_figure
from irm_lens import measures
from irm_lens.irm import IRM
from irm_lens.rundir import RunDir

READINGS = ("plain IRM", "rotated injection: written deltas", "rotated injection: own outputs")


def _share(outputs: torch.Tensor, layers: Sequence[int]) -> float:
    return float(measures.striation(outputs, layers, n_permutations=0)["index_share"])


def main(ctx: Context) -> ResidualControlSummary:
    plain = ctx.variant()
    rotated = ctx.variant("rotinject", rotated_output=ctx.first_seed)
    rows = []
    for run, twin in zip(plain.trained("next-token"), rotated.trained("next-token"), strict=True):
        emotion = ctx.specs[run].config.emotion
        layers = ctx.recordings(run)[0].layers
        irm = IRM.load(RunDir(rotated.runs[twin]).irm, ctx.host())
        written = rotated.outputs(twin)
        aligned_plain, aligned_rot = (
            run in plain.aligned("next-token"),
            twin in rotated.aligned("next-token"),
        )
        rows += [
            {
                "emotion": emotion,
                "run": run,
                "reading": READINGS[0],
                "aligned": aligned_plain,
                "index_share": _share(plain.outputs(run), layers),
            },
            {
                "emotion": emotion,
                "run": twin,
                "reading": READINGS[1],
                "aligned": aligned_rot,
                "index_share": _share(written, layers),
            },
            {
                "emotion": emotion,
                "run": twin,
                "reading": READINGS[2],
                "aligned": aligned_rot,
                "index_share": _share(irm.unrotate(written), layers),
            },
        ]
    data = pd.DataFrame(rows)
    null = [_share(ctx.outputs(r), ctx.recordings(r)[0].layers) for r in ctx.null]
    control = null[0]  # the first seed's untrained IRM, drawn in the figure
    kept = data[data["aligned"]]
    summary = ResidualControlSummary(
        control_share=control,
        null_shares=null,
        shares={
            "next-token": {
                "delta": kept.loc[kept["reading"] == READINGS[1], "index_share"].tolist(),
                "output": kept.loc[kept["reading"] == READINGS[2], "index_share"].tolist(),
            }
        },
        by_run=rows,
    )
    fig = residual_control_figure(
        data,
        control,
        title=(
            f"Residual explanation control ({ctx.figures.host_label}): index share of mean "
            "|output| variance; rotated injection writes R_l v_l (hatched: not aligned)"
        ),
    )
    write_result(
        ctx,
        "residual_control",
        data,
        fig,
        summary=summary,
        runs=[*plain.trained("next-token"), ctx.untrained],
    )
    return summary
