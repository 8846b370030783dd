"""What ``make figures`` cost: per-result timings, the kept cold run's costs, the budget."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import torch

from analyses._common import Context
from analyses._runset import stage_done, stage_seconds
from irm_lens.files import write_text_atomic

COSTS = "costs.json"

"""Where the last cold invocation's wall-clock seconds per step are kept beside the report."""


def keep_cold_costs(ctx: Context) -> None:
    """A cold invocation (nothing cached) keeps its wall-clock costs in ``costs.json``, before
    any section of the report reads them."""
    if ctx.cold and ctx.timings:
        record = {
            "timings": ctx.timings,
            "threads": torch.get_num_threads(),
            "written": datetime.date.today().isoformat(),
            "stages": {n: stage_seconds(ctx.runs[n]) for n in ctx.specs},
        }
        write_text_atomic(ctx.out / COSTS, json.dumps(record, indent=2))


def cold_costs(out: Path) -> dict[str, Any]:
    """The last cold invocation's ``costs.json`` (empty where none was kept)."""
    path = out / COSTS
    return dict(json.loads(path.read_text())) if path.exists() else {}


def timing_lines(ctx: Context) -> list[str]:
    """The wall-clock cost of a cold ``make figures`` (kept in ``costs.json`` by the last
    invocation that found nothing cached), and of this invocation when it was not cold."""
    lines = []
    if cold := cold_costs(ctx.out):
        steps = ", ".join(f"{name} {sec:.0f} s" for name, sec in cold["timings"].items())
        total = sum(cold["timings"].values())
        lines.append(
            f"A cold `make figures` (nothing cached; {cold['written']}, {cold['threads']} CPU "
            f"threads), before the report: **{total / 60:.1f} min** ({steps}); add about 1.5 "
            f"min of `make install` on a fresh clone."
        )
    if ctx.timings and not ctx.cold:
        total = sum(ctx.timings.values())
        lines.append(f"This invocation (partly cached): {total / 60:.1f} min.")
    return [*lines, "", "Per run and stage (when it ran):", ""] if lines else []


def cost_rows(ctx: Context) -> str:
    """Seconds per run and stage: from the run cache, or where it is not here (a fresh clone
    writing the report from the committed results), as the cold invocation kept them."""
    dirs = {name: spec.directory(ctx.figures) for name, spec in ctx.specs.items()}
    if all(stage_done(d, "train") for d in dirs.values()):
        stages, source = {name: stage_seconds(d) for name, d in dirs.items()}, ""
        missing = "cached"  # the stage ran in an earlier invocation
    else:
        stages = cold_costs(ctx.out).get("stages", {})
        source = f"The run cache is not here: as `{COSTS}` kept them (its cold invocation).\n\n"
        missing = "not kept"
    rows = ["| run | kind | train s | record s | evaluate s |", "|---|---|---|---|---|"]
    for name, spec in ctx.specs.items():
        t = stages.get(name, {})
        cells = [
            f"{t[k + '_s']:.0f}" if k + "_s" in t else missing if k in spec.stages else "-"
            for k in ("train", "record", "evaluate")
        ]
        rows.append(f"| {name} | {spec.kind} | {' | '.join(cells)} |")
    return source + "\n".join(rows)


def budget(ctx: Context, kind: str) -> str:
    """The optimizer steps the run set trained its runs of ``kind`` for."""
    steps = sorted(
        {s.config.max_steps for s in ctx.specs.values() if s.kind == kind},
        key=lambda n: (n is None, n or 0),
    )
    if not steps:
        return "no runs"
    return ", ".join("to early stop" if n is None else f"{n} steps" for n in steps)
