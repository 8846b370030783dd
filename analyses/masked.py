"""Masked retraining: the first seed's IRMs trained again with their dominant indices held at 0.

The ``K`` indices that are most often in the trained runs' top ``K`` are masked out of the IRM's
output (``TrainConfig.masked``), and, as the control, ``K`` random indices outside them. Per run:
alignment (specificity with its CI), the new top index (a substitute?) and what the host profile
says about it; ``analyses.rules.mechanism.masking_verdict`` decides.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analyses._common import Context, mechanism_emotions
from analyses._measured import dominance_rows
from analyses._summaries import MaskedSummary
from analyses._written import write_variants
from analyses.plots.mechanism import masking_figure
from analyses.rules.base import Verdict
from analyses.rules.mechanism import MARGIN, MIN_LOSS, masking_verdict
from irm_lens import measures

K = 5
SETTINGS = ("no mask", f"top {K} masked", f"{K} random masked")


def _masks(ctx: Context) -> tuple[tuple[int, ...], tuple[int, ...]]:
    tables = {r: ctx.dominance[r] for r in ctx.trained("next-token")}
    frequencies, _ = measures.dominance_consistency(tables, k=K)
    top = tuple(sorted(int(i) for i in frequencies["index"].head(K)))
    rng = np.random.default_rng(ctx.first_seed)
    pool = np.setdiff1d(np.arange(ctx.host().cfg.d_model), top)
    return top, tuple(sorted(int(i) for i in rng.choice(pool, size=K, replace=False)))


def _host_facts(ctx: Context, index: int) -> dict[str, float]:
    gains = ctx.host_profile["gains"].set_index("index")
    residual = ctx.host_profile["residual"]
    peak = residual.groupby("index")["max_abs"].max()
    return {
        "final_gain_rank": int(gains.loc[index, "final_gain_rank"]),
        "peak_over_median": float(peak[index] / peak.median()),
    }


def masking_rule(data: pd.DataFrame) -> Verdict:
    """``masking_verdict`` over a masking table (``data.csv``, or the summary's ``by_run``)."""
    trained = data[data["trained"]]
    spec = {
        s: trained[trained["setting"] == s].set_index("emotion")["specificity"] for s in SETTINGS
    }
    emotions = list(spec[SETTINGS[0]].index)
    unmasked = data[data["setting"] == SETTINGS[0]]
    null = unmasked[~unmasked["trained"]]["ratio"]
    aligned_unmasked = trained[(trained["setting"] == SETTINGS[0]) & trained["aligned"]]
    return masking_verdict(
        [spec[SETTINGS[0]][e] for e in emotions],
        [spec[SETTINGS[1]][e] for e in emotions],
        [spec[SETTINGS[2]][e] for e in emotions],
        dominance_effect=float(np.median(aligned_unmasked["ratio"]) / np.median(null))
        if len(aligned_unmasked)
        else float("nan"),
        n_aligned=len(aligned_unmasked),
    )


def main(ctx: Context) -> MaskedSummary:
    top, random = _masks(ctx)
    emo = mechanism_emotions(ctx)
    contexts = {
        SETTINGS[0]: ctx.variant(emotions=emo, null=True),
        SETTINGS[1]: ctx.variant("masktop", masked=top, emotions=emo),
        SETTINGS[2]: ctx.variant("maskrandom", masked=random, emotions=emo),
    }
    data = pd.DataFrame(
        [
            row
            for setting, c in contexts.items()
            for row in dominance_rows(c, setting, {"host basis": None})
        ]
    )
    data["top1_in_mask"] = data["top1"].isin(top)
    unmasked = data[data["setting"] == SETTINGS[0]]
    rank_before = {
        "untrained" if not t else e: ctx.dominance[r].set_index("index")["rank"]
        for e, r, t in zip(unmasked["emotion"], unmasked["run"], unmasked["trained"], strict=True)
        if t or r == ctx.untrained
    }
    data["top1_rank_unmasked"] = [
        int(rank_before[e].loc[i]) for e, i in zip(data["emotion"], data["top1"], strict=True)
    ]
    trained = data[data["trained"]]
    verdict = masking_rule(data)
    substitutes = {
        row["run"]: {"index": int(row["top1"]), **_host_facts(ctx, int(row["top1"]))}
        for _, row in trained[trained["setting"] == SETTINGS[1]].iterrows()
    }
    fig = masking_figure(
        data,
        title=(
            f"Masked retraining: specificity and dominance with the top {K} indices {list(top)} or "
            f"{K} random ones {list(random)} held at 0 ({ctx.figures.host_label}, seed "
            f"{ctx.first_seed})"
        ),
    )
    summary = MaskedSummary(
        verdict=verdict,
        masked_top=list(top),
        masked_random=list(random),
        k=K,
        margin=MARGIN,
        min_loss=MIN_LOSS,
        substitutes=substitutes,
        by_run=data.to_dict(orient="records"),
    )
    write_variants(
        ctx,
        "masked",
        data,
        fig,
        contexts.values(),
        summary=summary,
        settings={"k": K},
    )
    return summary
