"""Do IRMs that disagree on their top index push in the same directions? (``TIER=explain``)

Every pair of the default run set's next-token IRMs of one emotion from two init seeds, compared
by the normalized projection kernel of their top output subspaces
(``irm_lens.measures.subspace``: the ``RANK`` leading directions of the recorded outputs on the
paper prompts), against the untrained null's IRMs in the trained one's place (the control) and
two random subspaces (``RANK / d_model`` on average). Each IRM is also compared with the
steering baselines of ``analyses.baselines``: its bias-only IRM and its emotion's contrastive
vector (one vector per layer), each against the untrained IRMs compared with the same partner.
Two emotions of one seed are not compared: they start from one init.
``analyses.rules.steering.subspace_rule`` judges each kind of pair against its control.
"""

from __future__ import annotations

import itertools
from typing import Any

import pandas as pd
import torch

from analyses._common import Context
from analyses._summaries import SubspaceSummary
from analyses._written import write_result
from analyses.baselines import contrastive
from analyses.plots.explain import subspace_figure
from analyses.rules.steering import subspace_rule
from analyses.steering import bias_vectors
from irm_lens.measures.subspace import RANK, agreement, chance, output_subspace
from irm_lens.steer import SteeringVectors

PAIRS = (
    "same emotion, two seeds",
    "IRM and its bias-only IRM",
    "IRM and its emotion's contrastive vector",
)


def _stacked(vectors: SteeringVectors) -> torch.Tensor:
    return torch.stack(list(vectors.vectors.values()))  # [inject, d_model]


def pair_rows(ctx: Context) -> pd.DataFrame:
    """One row per compared pair: its kind, whether it is the kind's control (an untrained IRM
    in the trained IRM's place), the two names and their agreement."""
    trained = ctx.trained("next-token")

    def space(run: str) -> Any:
        return output_subspace([r.outputs for r in ctx.recordings(run)])

    spaces = {run: space(run) for run in [*trained, *ctx.null]}
    config = {run: ctx.specs[run].config for run in trained}
    rows: list[dict[str, Any]] = []

    def add(kind: str, a: str, b: str, partner: Any, init: int | None = None) -> None:
        """``a`` against ``partner`` (named ``b``), and every untrained IRM against it but
        the one of ``init``, the partner's own init seed (it would share its start)."""
        rows.append(
            {
                "pair": kind,
                "control": False,
                "a": a,
                "b": b,
                "agreement": agreement(spaces[a], partner),
            }
        )
        for u in ctx.null:
            if ctx.specs[u].config.seed != init:
                rows.append(
                    {
                        "pair": kind,
                        "control": True,
                        "a": u,
                        "b": b,
                        "agreement": agreement(spaces[u], partner),
                    }
                )

    for a, b in itertools.combinations(trained, 2):
        if config[a].emotion == config[b].emotion:
            add(PAIRS[0], a, b, spaces[b], init=config[b].seed)
    for run in trained:
        add(
            PAIRS[1],
            run,
            f"bias-only IRM of {run}",
            output_subspace([_stacked(bias_vectors(ctx, run))]),
        )
        vectors = contrastive(ctx, config[run])
        add(
            PAIRS[2],
            run,
            f"contrastive {config[run].emotion}",
            output_subspace([_stacked(vectors)]),
        )
    return pd.DataFrame(rows).drop_duplicates(subset=["pair", "a", "b"])


def main(ctx: Context) -> SubspaceSummary:
    data = pair_rows(ctx)
    random = chance(ctx.host().cfg.d_model, RANK)
    verdicts = {}
    for kind in PAIRS:
        rows = data[data["pair"] == kind]
        verdicts[kind] = subspace_rule(
            list(rows.loc[~rows["control"], "agreement"]),
            list(rows.loc[rows["control"], "agreement"]),
            random,
        )
    summary = SubspaceSummary(verdicts=verdicts, rank=RANK, chance=random)
    write_result(ctx, "subspace", data, subspace_figure(data, random), summary=summary)
    return summary
