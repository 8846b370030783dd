"""Why one index? The original's two loss quirks, separated (``TIER=explain``).

The original's loss predicts the token two ahead (t+2) and counts every position of rows
EOS-padded to 128 tokens; bank rows are about 30 tokens, so most of its terms are "EOS predicts
EOS". Its four 14-step runs on this host share one top index (316 in 4/4). This tier trains the
2 x 2 {t+1, t+2} x {padding counted, padding masked} in the original's setting (plain text after
BOS, lr 1e-4, 16 rows a step) for anger and sadness and two seeds, each to the last step of
``SCHEDULE`` with snapshots on it, and measures the first trained and the last snapshot and each
run's best IRM: the own-objective specificity (its target, on held-out questions), the top index
and its dominance (share of |output| x d_model and over the runner-up) against a null of
untrained IRMs on the same rows, the index and layer shares of the output map, and the top
index's direct effect on the EOS logit through the final norm and unembedding.

``analyses.rules.explain.padding_rule`` decides whether a shared top index appears only when
padding counts; ``concentration_rule`` whether it concentrates with training. Each run's rows are
written as soon as it is measured (``data.csv`` grows run by run): a tier stopped part way keeps
the finished runs' results; run it again to go on.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from torch import Tensor

from analyses._common import Context
from analyses._config import cache_key, cached_table
from analyses._measured import heldout, nll_by_question
from analyses._runset import RunSpec
from analyses._summaries import ExplainSummary
from analyses._written import kept_seconds, write_result, written_runs
from analyses.plots.explain import explain_figure
from analyses.rules.base import Verdict
from analyses.rules.explain import cell_sharing, concentration_rule, padding_rule
from analyses.trajectory import heldout_outputs, seconds_per_step
from irm_lens.anatomy import final_gain, unembedding
from irm_lens.data.batches import pad_id
from irm_lens.irm import IRM
from irm_lens.measures.alignment import ALIGNED, specificity
from irm_lens.measures.dominance import top_two
from irm_lens.measures.push import direct_token_z, signed_push
from irm_lens.measures.shape import output_shape
from irm_lens.rundir import RunDir
from irm_lens.training.config import FAITHFUL_PAPER_LOSS, preset
from irm_lens.training.runs import snapshot_path

NEEDS_RUN_SET = False  # trains its own runs; the default run set need not exist

EMOTIONS = ("anger", "sadness")
# {offset} x {padding}: the original as it ran first
CELLS = ((2, "counted"), (2, "masked"), (1, "counted"), (1, "masked"))
SCHEDULE = (0, 14, 30, 60)
SMOKE_SCHEDULE = (0, 2, 4)
TRAINING = dict(eval_every=20, patience=6)
SMOKE_TRAINING = dict(eval_every=2, patience=6)
# Init seeds of the untrained IRMs of the null, beside the tier's own seeds.
NULL_SEEDS = tuple(range(1, 9))


def cell_name(offset: int, padding: str) -> str:
    """``t2-counted`` etc.: the objective of one cell of the 2 x 2."""
    return f"t{offset}-{padding}"


def explain_specs(ctx: Context) -> list[RunSpec]:
    """The tier's runs in the order they are trained: per seed, per emotion, the four cells."""
    figures = ctx.figures
    schedule = SMOKE_SCHEDULE if figures.fast else SCHEDULE
    seeds = figures.seeds[:1] if figures.fast else figures.seeds[:2]
    emotions = [e for e in EMOTIONS if e in figures.emotions][: 1 if figures.fast else None]
    base = {
        **FAITHFUL_PAPER_LOSS,
        **(SMOKE_TRAINING if figures.fast else TRAINING),
        "max_steps": schedule[-1],
        "snapshots": schedule,
        "host": figures.host,
        "device": figures.device,
        "dtype": figures.dtype,
    }
    if figures.fast:  # the tiny host's context is short
        base["max_len"] = 48
    specs = []
    for seed in seeds:
        for emotion in emotions:
            for offset, padding in CELLS:
                config = preset(
                    figures.preset,
                    emotion=emotion,
                    seed=seed,
                    paper_offset=offset,
                    paper_padding=padding,
                    **base,
                )
                name = f"{emotion}_{cell_name(offset, padding)}_s{seed}"
                specs.append(RunSpec(name, config))
    return specs


def _outputs(ctx: Context, irm: IRM, emotion: str, spec: RunSpec) -> list[Tensor]:
    config = spec.config
    return heldout_outputs(ctx.host(), irm, heldout(emotion), config.prompt_mode, config.max_len)


def _shape_row(ctx: Context, irm: IRM, outputs: list[Tensor]) -> dict[str, Any]:
    """Where the IRM's outputs concentrate, and what its top index does to the pad logit."""
    host = ctx.host()
    shape = output_shape(outputs, irm.layers, seed=ctx.first_seed)
    two = top_two(outputs)
    push = signed_push(outputs, two.top)
    gain, w_u = final_gain(host).cpu(), unembedding(host).cpu()
    pad_z = direct_token_z(gain, w_u, two.top, pad_id(host.tokenizer), push)
    return {
        **dataclasses.asdict(shape),
        "runner_up": two.runner_up,
        "gap": two.gap,
        "push": push,
        "pad_logit_z": pad_z,
    }


def _measure_run(ctx: Context, spec: RunSpec, memo: dict[Any, pd.DataFrame]) -> pd.DataFrame:
    """One row per saved snapshot of the run and one for its best IRM (``irm`` = ``best``)."""
    run_dir, config = ctx.runs[spec.name], spec.config
    # the first trained snapshot and the last: the growth rule's two ends (the untrained IRM is
    # the null's; the snapshots between are kept in the run for a finer trajectory)
    measured = (config.snapshots[1], config.snapshots[-1])
    steps = [s for s in measured if snapshot_path(run_dir, s).exists()]
    best_step = int(json.loads(RunDir(run_dir).summary.read_text())["best_step"])
    rows = []
    for step, snapshot in [*((s, s) for s in steps), (best_step, None)]:
        path = RunDir(run_dir).irm if snapshot is None else snapshot_path(run_dir, snapshot)
        irm = IRM.load(path, ctx.host())
        irm.eval()
        verdict = specificity(nll_by_question(ctx, spec.name, memo, step=snapshot), config.emotion)
        shape = _shape_row(ctx, irm, _outputs(ctx, irm, config.emotion, spec))
        rows.append(
            {
                "run": spec.name,
                "emotion": config.emotion,
                "seed": config.seed,
                "cell": cell_name(config.paper_offset, config.paper_padding),
                "offset": config.paper_offset,
                "padding": config.paper_padding,
                "step": step,
                "irm": "snapshot" if snapshot is not None else "best",
                **verdict.columns(),
                **shape,
            }
        )
    return pd.DataFrame(rows)


def run_measures(ctx: Context, spec: RunSpec, memo: dict[Any, pd.DataFrame]) -> pd.DataFrame:
    """``_measure_run``, cached in the run's directory."""
    path = ctx.runs[spec.name] / "explain" / f"measures-{cache_key('explain', 2)}.csv"
    return cached_table(path, lambda: _measure_run(ctx, spec, memo))


def null_measures(ctx: Context, specs: list[RunSpec]) -> pd.DataFrame:
    """The untrained IRMs of ``NULL_SEEDS`` and the tier's seeds, measured like the trained
    ones on each emotion's held-out rows in the tier's prompt format: the control."""
    seeds = sorted(
        {*NULL_SEEDS[: 2 if ctx.figures.fast else None], *(s.config.seed for s in specs)}
    )
    rows = []
    for emotion in dict.fromkeys(s.config.emotion for s in specs):
        spec = next(s for s in specs if s.config.emotion == emotion)
        for seed in seeds:
            irm = dataclasses.replace(spec.config, seed=seed).untrained_irm(ctx.host())
            irm.eval()
            shape = _shape_row(ctx, irm, _outputs(ctx, irm, emotion, spec))
            rows.append({"emotion": emotion, "seed": seed, **shape})
    return pd.DataFrame(rows)


def _null(ctx: Context, specs: list[RunSpec]) -> pd.DataFrame:
    key = cache_key("explain-null", 1, specs[0].key(ctx.figures), NULL_SEEDS)
    path = ctx.out / "explain" / "null.csv"
    if path.exists():
        table = pd.read_csv(path, dtype={"key": str})
        if "key" in table and (table["key"] == key).all():
            return table
    return null_measures(ctx, specs).assign(key=key)


def final_rows(table: pd.DataFrame, *, first: bool = False) -> pd.DataFrame:
    """Each run's IRM at its last snapshot (``first``: its first trained one), with
    ``aligned`` and its dominance growth from the first trained snapshot to the last."""
    snaps = table[table["irm"] == "snapshot"].sort_values("step", kind="stable")
    out = []
    for _, rows in snaps.groupby("run", sort=False):
        trained = rows[rows["step"] > 0]
        last = trained.iloc[0 if first else -1]
        end = trained.iloc[-1]
        growth = end["dominance"] / trained.iloc[0]["dominance"] if len(trained) > 1 else np.nan
        out.append({**last.to_dict(), "aligned": last["verdict"] == ALIGNED, "growth": growth})
    return pd.DataFrame(out)


@dataclass(frozen=True)
class Judgement:
    """The tier's verdicts under the current rules: the padding rule over the runs aligned to
    their emotion (the paper's criterion) and over the runs that learned their own objective
    (own-voice drop CI above 0, specific or not), at the last snapshot and at the first trained
    one (the default tier's budget), the growth rule per padding group, and each cell's sharing
    under each."""

    padding: Verdict
    padding_learned: Verdict
    padding_first: Verdict  # over runs that learned their objective, at the first snapshot
    concentration: dict[str, Verdict]
    cells: pd.DataFrame
    cells_learned: pd.DataFrame
    cells_first: pd.DataFrame


LEARNED = "runs that learned their objective"


def judge(table: pd.DataFrame, null: pd.DataFrame) -> Judgement:
    """``Judgement`` from the tier's rows (``data.csv``) and its null (``null.csv``)."""
    columns = ["cell", "padding", "aligned", "top_index", "own_low", "growth", "seed"]
    last = final_rows(table) if len(table) else pd.DataFrame(columns=columns)
    learned = last.assign(aligned=last["own_low"] > 0)
    early = final_rows(table, first=True) if len(table) else pd.DataFrame(columns=columns)
    early = early.assign(aligned=early["own_low"] > 0)
    null_tops = [int(t) for t in null["top_index"]]
    names = [cell_name(offset, padding) for offset, padding in CELLS]
    concentration = {
        group: concentration_rule(
            list(last.loc[(last["padding"] == group) & last["aligned"], "growth"]),
            group=f"runs with padding {group}",
        )
        for group in ("counted", "masked")
    }
    return Judgement(
        padding=padding_rule(last, null_tops, names),
        padding_learned=padding_rule(learned, null_tops, names, LEARNED),
        padding_first=padding_rule(early, null_tops, names, LEARNED),
        concentration=concentration,
        cells=cell_sharing(last, null_tops, names),
        cells_learned=cell_sharing(learned, null_tops, names),
        cells_first=cell_sharing(early, null_tops, names),
    )


def summarise(
    table: pd.DataFrame, null: pd.DataFrame, specs: list[RunSpec], seconds: dict[str, float]
) -> ExplainSummary:
    """The tier's bookkeeping and its verdicts when written (the report judges again from the
    committed rows, ``judge``)."""
    j = judge(table, null)
    done = set(table["run"]) if len(table) else set()
    return ExplainSummary(
        runs=[s.name for s in specs if s.name in done],
        finished=all(s.name in done for s in specs),
        n_planned=len(specs),
        padding=j.padding,
        concentration=j.concentration,
        cells=j.cells.to_dict("records"),
        null_ratio_median=float(null["dominance"].median()),
        null_ratio_max=float(null["dominance"].max()),
        null_gap_max=float(null["gap"].max()),
        null_tops={str(k): int(v) for k, v in null["top_index"].value_counts().items()},
        seconds_by_run=seconds,
    )


def _write(
    ctx: Context,
    table: pd.DataFrame,
    null: pd.DataFrame,
    specs: list[RunSpec],
    seconds: dict[str, float],
) -> ExplainSummary:
    summary = summarise(table, null, specs, seconds)
    figure = explain_figure(table, null, summary)
    tier = ctx.subset(specs)  # the tier's runs, for the settings written beside the result
    write_result(
        tier,
        "explain",
        table,
        figure,
        summary=summary,
        runs=summary.runs,
        size=(1300, 800),
        tables={"null": null},
    )
    return summary


def render(ctx: Context) -> ExplainSummary | None:
    """Write the result again from its committed rows (figure, summary under the current
    rules), training nothing; None where no run has been measured."""
    specs = explain_specs(ctx)
    done = written_runs(ctx, "explain", specs)
    if not done or not (ctx.out / "explain" / "null.csv").exists():
        return None
    null = pd.read_csv(ctx.out / "explain" / "null.csv", dtype={"key": str})
    seconds = kept_seconds(ctx, "explain", done)
    return _write(ctx, pd.concat(done.values(), ignore_index=True), null, specs, seconds)


def main(ctx: Context) -> ExplainSummary:
    specs = explain_specs(ctx)
    done = written_runs(ctx, "explain", specs)
    seconds = kept_seconds(ctx, "explain", done)
    null = _null(ctx, specs)
    memo: dict[Any, pd.DataFrame] = {}
    summary = None
    for spec in specs:  # one run at a time: its rows are written before the next trains
        if spec.name in done:
            continue
        upto = ctx.subset([spec])
        done[spec.name] = run_measures(upto, spec, memo).assign(key=spec.key(ctx.figures))
        seconds[spec.name] = seconds_per_step(upto.runs[spec.name])
        table = pd.concat(done.values(), ignore_index=True)
        summary = _write(ctx, table, null, specs, seconds)
    if summary is None:  # every run was already written: the verdicts under the current rules
        summary = _write(ctx, pd.concat(done.values(), ignore_index=True), null, specs, seconds)
    return summary
