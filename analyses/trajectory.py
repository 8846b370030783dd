"""The long tier: IRMs trained far longer, measured at a schedule of steps (``TIER=long``).

Anger, sadness, joy and neutral (next-token loss) and anger with the original's loss as it ran
(``config.FAITHFUL_PAPER_LOSS``), first seed, each trained up to ``SCHEDULE[-1]`` optimizer
steps (8 epochs of the quick preset's rows; the original's loss, 16 rows a step, reaches its
15-epoch cap at 450 steps first) or until validation loss stops improving, the IRM saved
after every step of the schedule (step 0 is the untrained IRM: each run's own control). A
run already trained for a shorter schedule is extended, not trained again
(``analyses._runset``; the cache must still hold it).
Per snapshot, and for the run's best IRM by validation loss (``irm`` column ``best``; measured
apart where it is not on the schedule): specificity with its 95 % CI on every held-out
question, and the shape of its outputs on the own-voice held-out rows (top index, dominance
ratio with its CI, index share of variance, cross-layer correlation).
``analyses.rules.budget.choose_budget`` picks ``make figures``'s default budget from it.

Each run's measures are written as soon as it is finished (``data.csv`` grows run by run), so a
tier stopped part way leaves the finished runs' results; run it again to go on.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from einops import rearrange

from analyses._common import Context
from analyses._config import FiguresConfig, cache_key, cached_table
from analyses._measured import heldout, nll_by_question
from analyses._runset import RunSpec, stage_seconds
from analyses._summaries import TrajectorySummary
from analyses._written import read_summary, write_result
from analyses.plots.trajectory import trajectory_figure
from analyses.rules.budget import choose_budget, largest_step_within
from irm_lens.files import write_csv_atomic
from irm_lens.irm import IRM
from irm_lens.measures.alignment import specificity, verdict_of
from irm_lens.measures.shape import output_shape
from irm_lens.prompts import encode
from irm_lens.record import irm_outputs
from irm_lens.rundir import RunDir
from irm_lens.training.config import FAITHFUL_PAPER_LOSS, preset
from irm_lens.training.runs import snapshot_path

NEEDS_RUN_SET = False  # trains its own runs; the default run set need not exist

SCHEDULE = (0, 14, 30, 60, 120, 240, 480)
# The original's loss costs 4-5x a next-token step on 2 CPU cores (about 20 s vs 4.6 s), so
# its run to the same cap takes about 2.5 h here; it stops at 15 epochs (450 steps) first.
PAPER_SCHEDULE = SCHEDULE
SMOKE_SCHEDULE = (0, 2, 4)
EMOTIONS = ("anger", "sadness", "joy", "neutral")
# Validation every 20 steps; stop after 6 passes (120 steps) without improvement.
LONG = dict(eval_every=20, patience=6, epochs=15)
SMOKE_LONG = dict(eval_every=2, patience=6, epochs=15)
# The cold `make figures` default tier minus its training, in minutes on 2 CPU cores (measured
# in the seventh session: 35.3 min cold, of which 16.4 min trained its 16 runs at 14 steps).
FIXED_MIN = 18.9
LIMIT_MIN = 60.0


def schedule_settings(figures: FiguresConfig, schedule: Sequence[int]) -> dict[str, Any]:
    """Training settings of a tier's run on this invocation's host, device and dtype: trained to
    the last step of ``schedule``, with its IRM saved at each of the schedule's steps."""
    return {
        "max_steps": schedule[-1],
        "snapshots": schedule,
        "host": figures.host,
        "device": figures.device,
        "dtype": figures.dtype,
    }


def long_specs(ctx: Context) -> list[RunSpec]:
    """The tier's runs, in the order they are trained."""
    figures = ctx.figures
    schedule = SMOKE_SCHEDULE if figures.fast else SCHEDULE
    paper_schedule = SMOKE_SCHEDULE if figures.fast else PAPER_SCHEDULE
    extra = {
        **(SMOKE_LONG if figures.fast else LONG),
        **schedule_settings(figures, schedule),
        "seed": ctx.first_seed,
    }
    emotions = [e for e in EMOTIONS if e in figures.emotions]
    specs = []
    for emotion in emotions:
        config = preset(figures.preset, emotion=emotion, **extra)
        specs.append(RunSpec(f"{emotion}_long_s{ctx.first_seed}", config))
    # the original's loss, faithfully, for the first emotion; last, as it is the slowest
    paper = preset(
        figures.preset,
        emotion=emotions[0],
        **{**extra, **FAITHFUL_PAPER_LOSS, **schedule_settings(figures, paper_schedule)},
    )
    specs.append(RunSpec(f"{emotions[0]}_paperloss_long_s{ctx.first_seed}", paper))
    return specs


def heldout_outputs(host: Any, irm: IRM, rows: pd.DataFrame, mode: str, max_len: int) -> list[Any]:
    """The IRM's outputs at every token of each held-out row (question and own-voice answer)."""
    result = []
    for question, answer in zip(rows["question"], rows["answer"], strict=True):
        ids = encode(host.tokenizer, question, answer, mode=mode).ids[:max_len]  # type: ignore[arg-type]
        out = irm_outputs(host, irm, torch.tensor([ids], device=host.W_E.device))
        result.append(rearrange(out, "inject 1 pos d -> pos inject d"))
    return result


def run_measures(ctx: Context, run: str, memo: dict[Any, pd.DataFrame]) -> pd.DataFrame:
    """One row per saved snapshot of ``run`` (cached in its run directory)."""
    path = ctx.runs[run] / "trajectory" / f"measures-{cache_key('trajectory', 1)}.csv"
    return cached_table(path, lambda: _measure(ctx, run, memo))


def best_measures(
    ctx: Context, run: str, memo: dict[Any, pd.DataFrame], measured: pd.DataFrame
) -> pd.DataFrame:
    """The row of the run's best IRM by validation loss (``irm.safetensors``; ``irm`` column
    ``best``): its snapshot's row where that step is on the schedule, else measured (cached)."""
    best_step = int(json.loads(RunDir(ctx.runs[run]).summary.read_text())["best_step"])
    if best_step in set(measured["step"]):
        return measured[measured["step"] == best_step].assign(irm="best")
    path = ctx.runs[run] / "trajectory" / f"best-{cache_key('trajectory', 1)}.csv"
    return cached_table(path, lambda: pd.DataFrame([_row(ctx, run, memo, best_step, None)]))


def _measure(ctx: Context, run: str, memo: dict[Any, pd.DataFrame]) -> pd.DataFrame:
    run_dir = ctx.runs[run]
    # a run that stopped early has no later snapshots
    steps = [s for s in ctx.specs[run].config.snapshots if snapshot_path(run_dir, s).exists()]
    return pd.DataFrame([_row(ctx, run, memo, step, step) for step in steps])


def _row(
    ctx: Context, run: str, memo: dict[Any, pd.DataFrame], step: int, snapshot: int | None
) -> dict[str, Any]:
    """The measures of the run's IRM after ``step`` steps: its snapshot, or (``snapshot``
    None) its best IRM."""
    spec, run_dir = ctx.specs[run], ctx.runs[run]
    config = spec.config
    host = ctx.host()
    path = RunDir(run_dir).irm if snapshot is None else snapshot_path(run_dir, snapshot)
    irm = IRM.load(path, host)
    irm.eval()
    verdict = specificity(nll_by_question(ctx, run, memo, step=snapshot), config.emotion)
    rows = heldout(config.emotion)
    outputs = heldout_outputs(host, irm, rows, config.prompt_mode, config.max_len)
    shape = output_shape(outputs, irm.layers, seed=ctx.first_seed)
    return {
        "run": run,
        "emotion": config.emotion,
        "kind": spec.kind,
        "step": step,
        "irm": "snapshot" if snapshot is not None else "best",
        **verdict.columns(),
        **dataclasses.asdict(shape),
    }


def _losses(ctx: Context, run: str) -> pd.DataFrame:
    metrics = pd.read_csv(RunDir(ctx.runs[run]).metrics)
    return metrics[["step", "val_loss"]].assign(run=run)


def seconds_per_step(run_dir: Path) -> float:
    """Training seconds per step over the steps whose time was kept (a run resumed after an
    interruption: those since it resumed, ``train_from_step``)."""
    steps = int(pd.read_csv(RunDir(run_dir).metrics)["step"].max())
    times = stage_seconds(run_dir)
    timed = steps - int(times.get("train_from_step", 0))
    return times.get("train_s", float("nan")) / max(timed, 1)


@dataclasses.dataclass
class _Rows:
    """Measured runs of the tier: their rows, validation losses and training seconds per step."""

    tables: list[pd.DataFrame] = dataclasses.field(default_factory=list)
    losses: list[pd.DataFrame] = dataclasses.field(default_factory=list)
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    def without(self, runs: set[str]) -> _Rows:
        return _Rows(
            [t[~t["run"].isin(runs)] for t in self.tables],
            [c[~c["run"].isin(runs)] for c in self.losses],
            {r: c for r, c in self.seconds.items() if r not in runs},
        )


def main(ctx: Context) -> TrajectorySummary | None:
    specs = long_specs(ctx)
    kinds = {s.name: s.kind for s in specs}
    emotions = [s.config.emotion for s in specs if s.kind == "next-token"]
    done, earlier = _written(ctx, specs)  # runs an earlier invocation measured
    memo: dict[Any, pd.DataFrame] = {}

    def write(upto: Context) -> TrajectorySummary:
        # a run measured under another key is shown, marked as earlier, until it is redone
        old = earlier.without(set(done.seconds))
        return _write(upto, done, old, kinds, emotions)

    summary = write(ctx.subset([])) if done.tables or earlier.tables else None
    measured: list[RunSpec] = []
    for spec in specs:  # one run at a time: its results are written before the next trains
        if spec.name in done.seconds:
            continue
        measured.append(spec)
        upto = ctx.subset(measured)  # trains this run; the ones before it are cached
        rows = run_measures(upto, spec.name, memo).assign(irm="snapshot")
        rows = pd.concat([rows, best_measures(upto, spec.name, memo, rows)], ignore_index=True)
        done.tables.append(rows.assign(key=spec.key(ctx.figures)))
        done.losses.append(_losses(upto, spec.name))
        done.seconds[spec.name] = seconds_per_step(upto.runs[spec.name])
        summary = write(upto)
    return summary


def _written(ctx: Context, specs: list[RunSpec]) -> tuple[_Rows, _Rows]:
    """The rows, validation losses and training seconds per step of runs the result already
    holds (committed by an earlier session: the run cache need not survive): those whose key
    (config, data and library versions) is still the same, and apart those measured under
    another key (another schedule, say), which are trained again."""
    target = ctx.out / "trajectory"
    if not (target / "data.csv").exists() or not (target / "losses.csv").exists():
        return _Rows(), _Rows()
    data, curves = pd.read_csv(target / "data.csv"), pd.read_csv(target / "losses.csv")
    seconds = read_summary(ctx.out, "trajectory").get("seconds_by_run", {})
    if "key" not in data:
        return _Rows(), _Rows()
    keys = {s.name: s.key(ctx.figures) for s in specs}
    same = data["key"] == data["run"].map(keys)

    def rows(table: pd.DataFrame) -> _Rows:
        runs = [r for r in table["run"].unique() if r in seconds]
        return _Rows(
            [table[table["run"].isin(runs)]],
            [curves[curves["run"].isin(runs)]],
            {r: float(seconds[r]) for r in runs},
        )

    return rows(data[same]), rows(data[~same & data["run"].isin(keys)])


def _per_step_minutes(
    ctx: Context, cost: dict[str, float], kinds: dict[str, str]
) -> tuple[dict[str, float], float]:
    """Measured training seconds per step by loss kind, and the minutes one more step of every
    run adds to the default tier (next-token: each seed's emotions and the first seed's again
    for ``residual_control``; the emotions with the original's loss)."""
    rates = {
        kind: _median([c for run, c in cost.items() if kinds[run] == kind])
        for kind in ("next-token", "paper loss")
    }
    if math.isnan(rates["paper loss"]):  # not measured yet: its rows are ~2.7x as many tokens
        rates["paper loss"] = rates["next-token"] * 2.7
    n_emotions = len(ctx.figures.emotions)
    seconds = (len(ctx.figures.seeds) + 1) * n_emotions * rates["next-token"]
    return rates, (seconds + n_emotions * rates["paper loss"]) / 60


def _write(
    ctx: Context, done: _Rows, earlier: _Rows, kinds: dict[str, str], emotions: list[str]
) -> TrajectorySummary:
    """Write the result so far (``earlier``: rows of an earlier key, shown until redone); the
    budget needs every emotion of the tier (``emotions``). Verdicts are decided here from the
    CIs, so rows measured (or committed) under an earlier rule follow the current one."""
    table = pd.concat(done.tables + earlier.tables, ignore_index=True)
    # rows written before best IRMs were measured are snapshots
    table["irm"] = table["irm"].fillna("snapshot") if "irm" in table else "snapshot"
    losses = pd.concat(done.losses + earlier.losses, ignore_index=True)
    cost = {**earlier.seconds, **done.seconds}
    verdicts = map(verdict_of, table["specificity_low"], table["own_low"])
    table = table.assign(verdict=list(verdicts))
    rates, per_step_min = _per_step_minutes(ctx, cost, kinds)
    snapshots = table[table["irm"] == "snapshot"]
    schedule = sorted(int(s) for s in snapshots["step"].unique())
    max_step = largest_step_within(
        schedule, LIMIT_MIN, fixed_min=FIXED_MIN, per_step_min=per_step_min
    )
    budget = choose_budget(snapshots, emotions, max_step=max_step)
    order = [r for r in kinds if r in cost]
    summary = TrajectorySummary(
        runs=order,
        finished=all(r in done.seconds for r in kinds),
        earlier=[r for r in order if r not in done.seconds],
        schedule=schedule,
        budget_step=budget.step,
        budget_reason=budget.reason,
        aligned_by_step={str(k): v for k, v in budget.aligned_by_step.items()},
        n_emotions=budget.n_emotions,
        seconds_per_step=rates,
        seconds_by_run=cost,
        minutes_per_budget_step=per_step_min,
        max_step_within_limit=max_step,
        limit_min=LIMIT_MIN,
        fixed_min=FIXED_MIN,
    )
    table = table.set_index("run").loc[order].reset_index()  # the tier's run order
    figure = trajectory_figure(table, losses)
    write_result(
        ctx, "trajectory", table, figure, summary=summary, runs=list(ctx.specs), size=(1300, 850)
    )
    write_csv_atomic(ctx.out / "trajectory" / "losses.csv", losses)
    return summary


def _median(values: list[float]) -> float:
    clean = [v for v in values if not math.isnan(v)]
    return float(np.median(clean)) if clean else float("nan")
