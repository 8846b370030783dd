"""The alignment evaluation table: does each IRM make the host answer in its emotion?

Per run, on held-out test questions: answer NLL of every emotion's bundled answers with and
without the IRM, the NRC emotion-lexicon profile of greedy answers, and fact retention (the
reference answer still contained in the greedy answer). And its specificity
(``irm_lens.analysis.alignment``): own-voice NLL drop minus the other voices' mean drop on
every question not trained on (val + test), with a bootstrap 95 % CI over questions.
"""

from __future__ import annotations

import pandas as pd

from analyses._common import HELDOUT_SPLITS, Context
from analyses._summaries import EvaluationSummary
from irm_lens import plotting
from irm_lens.data.datasets import load_dataset
from irm_lens.data.lexicon import emotion_profile
from irm_lens.evaluate import alignment_summary


def reference_share(emotion: str, rows: int) -> dict[str, float]:
    """The NRC share of ``emotion`` in the bank's own answers in that voice to the same test
    questions the IRMs answer: the lexicon's ceiling on this bank (NaN for ``neutral``, which
    the lexicon has no category for)."""
    answers = load_dataset(emotion, split="test").head(rows)["answer"].tolist()
    profile = emotion_profile(answers).set_index("emotion")["share"]
    return {"nrc_share_reference": float(profile.get(emotion, float("nan")))}


def main(ctx: Context) -> EvaluationSummary:
    runs = [*ctx.trained(), ctx.untrained]
    parts = []
    headline: dict[str, dict[str, object]] = {}
    scores: dict[str, dict[str, float]] = {}
    for run in runs:
        table = pd.read_csv(ctx.runs[run] / "evaluation.csv")
        parts.append(table.assign(**ctx.spec_columns(run)))
        emotion = ctx.specs[run].config.emotion
        scores[run] = {**alignment_summary(table, emotion),
                       **reference_share(emotion, ctx.figures.eval_rows)}  # fmt: skip
        headline[run] = {"target": emotion, **scores[run]}
    data = pd.concat(parts, ignore_index=True)
    fig = plotting.evaluation_figure(
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
        aligned_runs=[r for r in ctx.trained() if specific[r]["verdict"] == "aligned"],
        heldout_splits=list(HELDOUT_SPLITS),
        by_run=headline,
        nll_drop_median=float(pd.Series([h["nll_drop"] for h in trained]).median()),
        runs_with_nll_drop=int(sum(h["nll_drop"] > 0 for h in trained)),
        n_trained=len(trained),
        eval_rows=ctx.figures.eval_rows,
        eval_tokens=ctx.figures.eval_tokens,
    )
    ctx.write("evaluation", data, fig, summary=summary, runs=runs, size=(1300, 700))
    return summary


if __name__ == "__main__":
    from analyses.__main__ import run_one

    run_one(main)
