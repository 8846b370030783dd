"""The alignment evaluation table: does each IRM make the host answer in its emotion?

Per run, on held-out test questions: answer NLL of every emotion's bundled answers with and
without the IRM, the voice classifier's P(own voice) of greedy answers (``measures.voice``, with
its bootstrap CI; the behavioural measure), their NRC emotion-lexicon profile, and fact retention
(the reference answer still contained in the greedy answer). And its specificity
(``irm_lens.measures.alignment``): own-voice NLL drop minus the other voices' mean drop on
every question not trained on (val + test), with a bootstrap 95 % CI over questions, on each
run's own objective (t+2 for the original's loss), and on the next token beside it (what a run
trained on another objective did to the host's own prediction).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd

from analyses._common import Context, spec_columns
from analyses._measured import HELDOUT_SPLITS, nll_by_question, own_offset, selection_questions
from analyses._summaries import EvaluationSummary
from analyses._written import write_result
from analyses.plots import runset
from irm_lens.data.datasets import load_dataset
from irm_lens.data.lexicon import emotion_profile
from irm_lens.evaluate import alignment_summary
from irm_lens.measures.alignment import Specificity, specificity
from irm_lens.measures.voice import VoiceClassifier, bank_classifier, held_out_accuracy, own_voice
from irm_lens.rundir import RunDir

OBJECTIVES = {1: "next token", 2: "t+2 (the original's)"}


def reference_share(emotion: str, rows: int) -> dict[str, float]:
    """The NRC share of ``emotion`` in the bank's own answers in that voice to the same test
    questions the IRMs answer: the lexicon's ceiling on this bank (NaN for ``neutral``, which
    the lexicon has no category for)."""
    answers = load_dataset(emotion, split="test").head(rows)["answer"].tolist()
    profile = emotion_profile(answers).set_index("emotion")["share"]
    return {"nrc_share_reference": float(profile.get(emotion, float("nan")))}


def voice_scores(
    classifier: VoiceClassifier, generations: pd.DataFrame, emotion: str
) -> dict[str, float]:
    """The voice classifier's mean P(own voice) over the greedy answers with and without the
    IRM, each with its bootstrap 95 % CI over questions."""
    scores: dict[str, float] = {}
    for condition, name in (("host", "voice_host"), ("host+irm", "voice_irm")):
        answers = generations.loc[generations["condition"] == condition, "answer"]
        v = own_voice(classifier, answers.fillna("").tolist(), emotion)
        scores |= {name: v.mean, f"{name}_low": v.low, f"{name}_high": v.high}
    return scores


def next_token(ctx: Context, run: str) -> Specificity:
    """A run's specificity on the next-token target: for a run trained on another objective (the
    original's t+2), how much it damaged the host's own prediction (its ``ctx.alignment``
    otherwise)."""
    spec = ctx.specs[run]
    if own_offset(spec.config) == 1:
        return ctx.alignment[run]
    table = nll_by_question(ctx, run, {}, offset=1)
    return specificity(table, spec.config.emotion)


def unselected(ctx: Context, run: str) -> Specificity:
    """A run's specificity (own objective) on the held-out questions its best-IRM selection never
    read (``selection_questions`` left out): whether picking the IRM on validation rows that are
    also evaluation questions flattered it."""
    config = ctx.specs[run].config
    table = nll_by_question(ctx, run, {})
    chosen = table[~table["question_id"].isin(selection_questions(config))]
    return specificity(chosen, config.emotion)


def main(ctx: Context) -> EvaluationSummary:
    runs = [*ctx.trained(), ctx.untrained]
    classifier = bank_classifier()
    parts = []
    headline: dict[str, dict[str, object]] = {}
    scores: dict[str, dict[str, float]] = {}
    for run in runs:
        table = pd.read_csv(ctx.runs[run] / RunDir.EVALUATION)
        parts.append(table.assign(**spec_columns(ctx, run)))
        emotion = ctx.specs[run].config.emotion
        generations = pd.read_csv(ctx.runs[run] / RunDir.GENERATIONS)
        scores[run] = {
            **alignment_summary(table, emotion),
            **reference_share(emotion, ctx.figures.eval_rows),
            **voice_scores(classifier, generations, emotion),
        }
        headline[run] = {"target": emotion, **scores[run]}
    data = pd.concat(parts, ignore_index=True)
    fig = runset.evaluation_figure(
        pd.DataFrame([{"run": r, **v} for r, v in headline.items()]),
        title=(
            f"Alignment per run on held-out questions ({ctx.figures.host_label}, "
            f"{ctx.figures.preset} preset): own-emotion NLL, NRC share, fact retention"
        ),
    )
    trained = [scores[r] for r in ctx.trained()]
    specific = {run: ctx.alignment[run].to_dict() for run in runs}
    summary = EvaluationSummary(
        specificity=specific,
        next_token={run: next_token(ctx, run).to_dict() for run in runs},
        unselected={run: unselected(ctx, run).to_dict() for run in ctx.trained()},
        objective={run: OBJECTIVES[own_offset(ctx.specs[run].config)] for run in runs},
        aligned_runs=[r for r in ctx.trained() if specific[r]["verdict"] == "aligned"],
        heldout_splits=list(HELDOUT_SPLITS),
        by_run=headline,
        nll_drop_median=float(pd.Series([h["nll_drop"] for h in trained]).median()),
        runs_with_nll_drop=int(sum(h["nll_drop"] > 0 for h in trained)),
        n_trained=len(trained),
        eval_rows=ctx.figures.eval_rows,
        eval_tokens=ctx.figures.eval_tokens,
        voice_accuracy={k: dataclasses.asdict(a) for k, a in held_out_accuracy(classifier).items()},
    )
    # the per-question NLLs behind every specificity CI (own objective and next token)
    memo: dict[Any, pd.DataFrame] = {}
    nll = pd.concat(
        [
            nll_by_question(ctx, r, memo, offset=o).assign(run=r, offset=o)
            for r in runs
            for o in sorted({own_offset(ctx.specs[r].config), 1})
        ],
        ignore_index=True,
    )
    write_result(
        ctx,
        "evaluation",
        data,
        fig,
        summary=summary,
        runs=runs,
        size=(1300, 700),
        tables={"specificity": nll},
    )
    return summary
