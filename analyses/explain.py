"""Why one index? The original's two loss quirks, separated (``TIER=explain``).

The original's loss predicts the token two ahead (t+2) and counts every position of rows
EOS-padded to 128 tokens; bank rows are about 30 tokens, so most of its terms are "EOS predicts
EOS". Its four 14-step runs on this host share one top index (316 in 4/4). This tier trains the
2 x 2 {t+1, t+2} x {padding counted, padding masked} in the original's setting (plain text after
BOS, lr 1e-4, 16 rows a step) for anger and sadness and two seeds, each to ``STEPS`` optimizer
steps with snapshots on ``SCHEDULE``, and measures every snapshot and each run's best IRM: the
own-objective specificity (its target, on held-out questions), the top index and its dominance
(share of |output| x d_model and over the runner-up) against a null of untrained IRMs on the same
rows, the index and layer shares of the output map, and the top index's direct effect on the
EOS logit through the final norm and unembedding.

``irm_lens.analysis.explain.padding_rule`` decides whether a shared top index appears only when
padding counts; ``concentration_rule`` whether it concentrates with training. Each run's rows are
written as soon as it is measured (``data.csv`` grows run by run): a tier stopped part way keeps
the finished runs' results; run it again to go on.
"""

from __future__ import annotations

from analyses._common import Context
from analyses._runset import RunSpec
from irm_lens.training.config import FAITHFUL_PAPER_LOSS, preset

NEEDS_RUN_SET = False  # trains its own runs; the default run set need not exist

EMOTIONS = ("anger", "sadness")
# {offset} x {padding}: the original as it ran first
CELLS = ((2, "counted"), (2, "masked"), (1, "counted"), (1, "masked"))
SCHEDULE = (0, 14, 30, 60)
SMOKE_SCHEDULE = (0, 2, 4)
TRAINING = dict(eval_every=20, patience=6)
SMOKE_TRAINING = dict(eval_every=2, patience=6)


def cell_name(offset: int, padding: str) -> str:
    """``t2-counted`` etc.: the objective of one cell of the 2 x 2."""
    return f"t{offset}-{padding}"


def explain_specs(ctx: Context) -> list[RunSpec]:
    """The tier's runs in the order they are trained: per seed, per emotion, the four cells."""
    figures = ctx.figures
    schedule = SMOKE_SCHEDULE if figures.fast else SCHEDULE
    seeds = figures.seeds[:1] if figures.fast else figures.seeds[:2]
    emotions = [e for e in EMOTIONS if e in figures.emotions][: 1 if figures.fast else None]
    base = {**FAITHFUL_PAPER_LOSS, **(SMOKE_TRAINING if figures.fast else TRAINING),
            "max_steps": schedule[-1], "snapshots": schedule, "host": figures.host,
            "device": figures.device, "dtype": figures.dtype}  # fmt: skip
    if figures.fast:  # the tiny host's context is short
        base["max_len"] = 48
    specs = []
    for seed in seeds:
        for emotion in emotions:
            for offset, padding in CELLS:
                config = preset(figures.preset, emotion=emotion, seed=seed, paper_offset=offset,
                                paper_padding=padding, **base)  # fmt: skip
                name = f"{emotion}_{cell_name(offset, padding)}_s{seed}"
                specs.append(RunSpec(name, config))
    return specs
