"""Length and seeds where concentration was largest (``TIER=explain``, ``--only longer``).

At 14 steps the top index's dominance was largest with the L1 penalty on all layers (sadness:
about 3.9 x uniform on the paper prompts) and with the last quarter of the layers (q4), and the
long tier trained one seed. Here the same settings are trained as far as the long tier (its
schedule, validation every 20 steps, early stop after 120 steps without improvement): all
layers + L1 and q4 for anger and sadness, and a second init seed of the long tier's anger and
sadness. Each saved snapshot and each run's best IRM is measured like the long tier's
(``analyses.trajectory``: specificity with its CI on every held-out question, top index and
dominance on the own-voice held-out rows; step 0 is the run's own untrained IRM).

``analyses.rules.explain.concentration_rule`` judges, per setting and over all of them, whether
the best IRM's dominance exceeds the first trained snapshot's; ``seed_rule`` whether the long
tier's best IRMs of two seeds share their top index. Runs are trained and written one at a
time, a setting's pair at a time (``data.csv`` grows run by run): a tier stopped part way keeps
the finished runs; run it again to go on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analyses._common import Context
from analyses._runset import RunSpec
from analyses._summaries import LongerSummary
from analyses._written import kept_seconds, write_result, written_runs
from analyses.plots.explain import longer_figure
from analyses.rules.base import Verdict
from analyses.rules.explain import concentration_rule, seed_rule
from analyses.trajectory import (
    LONG,
    SCHEDULE,
    SMOKE_LONG,
    SMOKE_SCHEDULE,
    best_measures,
    run_measures,
    schedule_settings,
    seconds_per_step,
)
from irm_lens.measures.alignment import ALIGNED
from irm_lens.training.config import preset

NEEDS_RUN_SET = False  # trains its own runs; the default run set need not exist

# setting -> (run-name label, training changes); the order runs are trained in, per emotion
SETTINGS: dict[str, tuple[str, dict[str, Any]]] = {
    "all + L1": ("l1", {"l1_alpha": 1e-4}),
    "q4": ("layersq4", {"layers": "q4"}),
    "second seed": ("", {}),
}
# The order the settings' pairs are trained in: the cheapest first (q4 backpropagates through
# a quarter of the layers: about half the seconds a step of the all-layer runs here).
TRAIN_ORDER = ("q4", "all + L1", "second seed")
SECOND_SEED = 420
EMOTIONS = ("sadness", "anger")


def longer_specs(ctx: Context) -> list[RunSpec]:
    """The runs, a setting's pair at a time in ``TRAIN_ORDER`` (each verdict needs two runs: a
    setting's growth two aligned runs, the seeds two emotions), sadness (the largest
    concentration at 14 steps) first within each."""
    figures = ctx.figures
    schedule = SMOKE_SCHEDULE if figures.fast else SCHEDULE
    extra = {**(SMOKE_LONG if figures.fast else LONG), **schedule_settings(figures, schedule)}
    emotions = [e for e in EMOTIONS if e in figures.emotions][: 1 if figures.fast else None]
    specs = []
    for setting in TRAIN_ORDER:
        label, changes = SETTINGS[setting]
        for emotion in emotions:
            seed = SECOND_SEED if setting == "second seed" else ctx.first_seed
            config = preset(figures.preset, emotion=emotion, seed=seed, **extra, **changes)
            name = "_".join(p for p in (emotion, label, "long", f"s{seed}") if p)
            specs.append(RunSpec(name, config))
    return specs


def setting_of(run: str) -> str:
    """The setting a run of this result belongs to, from its name."""
    for setting, (label, _) in SETTINGS.items():
        if label and f"_{label}_" in run:
            return setting
    return "second seed"


def growth_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Per run: its best IRM's row with the dominance at the first trained snapshot, at step
    0 (its own untrained IRM), and ``growth`` (best over first trained)."""
    out = []
    for run, rows in table.groupby("run", sort=False):
        snaps = rows[rows["irm"] == "snapshot"].sort_values("step")
        trained, untrained = snaps[snaps["step"] > 0], snaps[snaps["step"] == 0]
        best = rows[rows["irm"] == "best"].iloc[-1]
        first = trained.iloc[0]
        out.append(
            {
                **best.to_dict(),
                "setting": setting_of(str(run)),
                "aligned": best["verdict"] == ALIGNED,
                "first_step": int(first["step"]),
                "first_top": int(first["top_index"]),
                "first_dominance": float(first["dominance"]),
                "untrained_dominance": float(untrained["dominance"].iloc[0])
                if len(untrained)
                else float("nan"),
                "growth": float(best["dominance"]) / float(first["dominance"]),
            }
        )
    return pd.DataFrame(out)


@dataclass(frozen=True)
class LongerJudgement:
    """The result's verdicts under the current rules, and the per-run rows they read."""

    runs: pd.DataFrame  # growth_rows
    concentration: dict[str, Verdict]  # setting (and "all settings") -> concentration_rule
    seeds: Verdict  # seed_rule


def judge(table: pd.DataFrame, first_seed_best: dict[str, int]) -> LongerJudgement:
    """The verdicts from the result's rows: growth per setting and pooled (aligned best IRMs),
    and whether the second seed's best IRMs share the long tier's first seed's top index
    (``first_seed_best``: emotion -> that run's best top index, from the committed
    ``trajectory`` result)."""
    runs = growth_rows(table) if len(table) else pd.DataFrame(columns=["setting", "aligned"])
    aligned = runs[runs["aligned"]] if len(runs) else runs
    concentration = {
        setting: concentration_rule(
            list(aligned.loc[aligned["setting"] == setting, "growth"]), group=f"{setting} runs"
        )
        for setting in SETTINGS
    }
    concentration["all settings"] = concentration_rule(
        list(aligned["growth"]) if len(aligned) else [], group="runs"
    )
    second = runs[runs["setting"] == "second seed"] if len(runs) else runs
    pairs = {
        str(r["emotion"]): (first_seed_best[str(r["emotion"])], int(r["top_index"]))
        for _, r in second.iterrows()
        if str(r["emotion"]) in first_seed_best
    }
    return LongerJudgement(runs, concentration, seed_rule(pairs))


def first_seed_tops(out: Path) -> dict[str, int]:
    """Emotion -> the top index of the long tier's best IRM (next-token, first seed), read
    from the committed ``trajectory`` result under ``out``; empty when it is not there."""
    data = _reference(out)
    if data is None:
        return {}
    best = data[(data["irm"] == "best") & (data["kind"] == "next-token")]
    return {str(r["emotion"]): int(r["top_index"]) for _, r in best.iterrows()}


def _reference(out: Path) -> pd.DataFrame | None:
    path = out / "trajectory" / "data.csv"
    return pd.read_csv(path) if path.exists() else None


def main(ctx: Context) -> LongerSummary:
    specs = longer_specs(ctx)
    done = written_runs(ctx, "longer", specs)
    seconds = kept_seconds(ctx, "longer", done)
    memo: dict[Any, pd.DataFrame] = {}
    summary = None
    for spec in specs:  # one run at a time: its rows are written before the next trains
        if spec.name in done:
            continue
        upto = ctx.subset([spec])
        rows = run_measures(upto, spec.name, memo).assign(irm="snapshot")
        rows = pd.concat([rows, best_measures(upto, spec.name, memo, rows)], ignore_index=True)
        done[spec.name] = rows.assign(key=spec.key(ctx.figures), setting=setting_of(spec.name))
        seconds[spec.name] = seconds_per_step(upto.runs[spec.name])
        summary = _write(ctx, specs, done, seconds)
    return summary or _write(ctx, specs, done, seconds)


def _write(
    ctx: Context, specs: list[RunSpec], done: dict[str, pd.DataFrame], seconds: dict[str, float]
) -> LongerSummary:
    table = pd.concat(done.values(), ignore_index=True) if done else pd.DataFrame()
    j = judge(table, first_seed_tops(ctx.out))
    summary = LongerSummary(
        runs=[s.name for s in specs if s.name in done],
        finished=all(s.name in done for s in specs),
        n_planned=len(specs),
        concentration=j.concentration,
        seeds=j.seeds,
        seconds_by_run=seconds,
    )
    write_result(
        ctx.subset(specs),
        "longer",
        table,
        longer_figure(table, _reference(ctx.out)),
        summary=summary,
        runs=summary.runs,
        size=(1300, 600),
    )
    return summary
