"""The alignment evaluation table: does each IRM make the host answer in its emotion?

Per run, on held-out test questions: answer NLL of every emotion's bundled answers with and
without the IRM, the NRC emotion-lexicon profile of greedy answers, and fact retention (the
reference answer still contained in the greedy answer). And its specificity
(``irm_lens.analysis.alignment``): own-voice NLL drop minus the other voices' mean drop on
every question not trained on (val + test), with a bootstrap 95 % CI over questions.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from analyses._common import Context, cache_key
from irm_lens import plotting
from irm_lens.analysis.alignment import specificity
from irm_lens.datasets import EMOTIONS, load_dataset
from irm_lens.evaluate import alignment_summary, answer_nll_table
from irm_lens.files import write_csv_atomic
from irm_lens.irm import IRM

HELDOUT_SPLITS = ("val", "test")


def heldout(voice: str) -> pd.DataFrame:
    """Every question of ``voice`` not trained on: the val and test splits."""
    parts = [load_dataset(voice, split=split) for split in HELDOUT_SPLITS]
    return pd.concat(parts, ignore_index=True)


def nll_by_question(ctx: Context, run: str, memo: dict[Any, pd.DataFrame]) -> pd.DataFrame:
    """Per held-out question, voice and condition: summed answer NLL and token count (kept in
    the run's cache directory; the host-alone part is shared by all runs through ``memo``)."""
    config = ctx.specs[run].config
    key = cache_key("nll_by_question", HELDOUT_SPLITS, config.prompt_mode, config.max_len)
    path = ctx.runs[run] / "specificity" / f"nll-{key}.csv"
    if path.exists():
        return pd.read_csv(path)
    host = ctx.host()
    irm = IRM.load(ctx.runs[run] / "irm.safetensors", host)
    settings = dict(mode=config.prompt_mode, max_len=config.max_len)
    parts = []
    for voice in EMOTIONS:
        rows = heldout(voice)
        base_key = (voice, config.prompt_mode, config.max_len)
        if base_key not in memo:
            memo[base_key] = answer_nll_table(host, rows, **settings)  # type: ignore[arg-type]
        with_irm = answer_nll_table(host, rows, irm=irm, **settings)  # type: ignore[arg-type]
        for condition, table in (("host", memo[base_key]), ("host+irm", with_irm)):
            parts.append(table.assign(target=voice, condition=condition))
    table = pd.concat(parts, ignore_index=True)
    write_csv_atomic(path, table)
    return table


def main(ctx: Context) -> dict[str, object]:
    runs = [*ctx.trained(), ctx.untrained]
    parts = []
    headline: dict[str, dict[str, object]] = {}
    scores: dict[str, dict[str, float]] = {}
    for run in runs:
        table = pd.read_csv(ctx.runs[run] / "evaluation.csv")
        parts.append(table.assign(**ctx.spec_columns(run)))
        emotion = ctx.specs[run].config.emotion
        scores[run] = alignment_summary(table, emotion)
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
    memo: dict[Any, pd.DataFrame] = {}
    specific = {
        run: specificity(nll_by_question(ctx, run, memo), ctx.specs[run].config.emotion).to_dict()
        for run in runs
    }
    summary = {
        "specificity": specific,
        "aligned_runs": [r for r in ctx.trained() if specific[r]["verdict"] == "aligned"],
        "heldout_splits": list(HELDOUT_SPLITS),
        "by_run": headline,
        "nll_drop_median": float(pd.Series([h["nll_drop"] for h in trained]).median()),
        "runs_with_nll_drop": int(sum(h["nll_drop"] > 0 for h in trained)),
        "n_trained": len(trained),
        "eval_rows": ctx.figures.eval_rows,
        "eval_tokens": ctx.figures.eval_tokens,
    }
    ctx.write("evaluation", data, fig, summary=summary, runs=runs, size=(1300, 700))
    return summary


if __name__ == "__main__":
    from analyses.__main__ import run_one

    run_one(main)
