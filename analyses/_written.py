"""Writing a result: ``<out>/<name>/`` holds ``data.csv`` (the long table the figure is drawn
from), ``figure.png`` and ``figure.html`` (the figure), and ``config.json`` (the settings, the
training settings of the runs it read and a ``summary`` of its headline numbers, which
``analyses.report`` turns into REPORT.md).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from analyses._common import Context
from analyses._runset import RunSpec
from irm_lens.errors import IrmLensError
from irm_lens.export import save_figure
from irm_lens.files import write_csv_atomic, write_text_atomic
from irm_lens.stack import provenance
from irm_lens.training.config import Objective


def run_settings(ctx: Context, run: str) -> dict[str, Any]:
    """What a result's ``config.json`` says of a run it read: its cache directory's name
    (name and key) and the training settings that define it."""
    spec = ctx.specs[run]
    config = spec.config
    fields: tuple[str, ...] = (
        "emotion",
        "seed",
        "loss",
        "prompt_mode",
        "lr",
        "optimizer",
        "batch_size",
        "grad_accum",
        "max_steps",
        "layers",
    )
    if config.loss == "paper" and config.objective != Objective("paper"):
        fields += ("paper_offset", "paper_padding")
    # the directory's name from the spec: reading settings never trains a run
    return {
        "directory": spec.directory(ctx.figures).name,
        "trained": spec.trained,
        **{f: getattr(config, f) for f in fields},
    }


def write_result(
    ctx: Context,
    result: str,
    data: pd.DataFrame,
    fig: go.Figure,
    *,
    summary: dict[str, Any] | Any,
    runs: Sequence[str] | None = None,
    size: tuple[int, int] = (1100, 650),
    settings: dict[str, Any] | None = None,
    tables: dict[str, pd.DataFrame] | None = None,
) -> Path:
    """Write ``<out>/<result>/`` (data.csv, figure.png, figure.html, config.json; ``tables``:
    more CSVs by file stem, e.g. the per-run numbers behind a large ``data.csv``)."""
    target = ctx.out / result
    used = list(ctx.specs) if runs is None else list(runs)
    write_csv_atomic(target / "data.csv", data)
    for stem, table in (tables or {}).items():
        write_csv_atomic(target / f"{stem}.csv", table)
    _wrap_title(fig)
    save_figure(fig, target, "figure", width=size[0], height=size[1], scale=1.5)
    if dataclasses.is_dataclass(summary) and not isinstance(summary, type):
        summary = dataclasses.asdict(summary)  # a typed summary (analyses._summaries)
    config = {
        "result": result,
        "summary": summary,
        "settings": settings or {},
        # no machine paths in committed files: the run directory's name is its cache key
        "figures_config": {
            k: v for k, v in ctx.figures.to_dict().items() if k not in ("out", "cache")
        },
        "runs": {name: run_settings(ctx, name) for name in used},
        **provenance(),
    }
    write_text_atomic(target / "config.json", json.dumps(config, indent=2, default=str))
    return target


def write_variants(
    ctx: Context,
    result: str,
    data: pd.DataFrame,
    fig: go.Figure,
    variants: Iterable[Context],
    *,
    summary: Any,
    settings: dict[str, Any],
    size: tuple[int, int] = (1300, 650),
) -> Path:
    """``write_result`` for a result on ``variants`` of the run set (``Context.variant``): it
    names no run of the main set, and its ``settings`` gain ``run_dirs``, the variants' run
    directories."""
    run_dirs = [p.name for c in variants for p in c.runs.values()]
    settings = {**settings, "run_dirs": run_dirs}
    return write_result(
        ctx, result, data, fig, summary=summary, runs=[], size=size, settings=settings
    )


def _wrap_title(fig: go.Figure, width: int = 95) -> None:
    """Put a long title's parenthesised details on a smaller second line, so PNGs keep it."""
    title = fig.layout.title.text or ""
    if len(title) <= width or "<br>" in title or " (" not in title:
        return
    head, _, rest = title.partition(" (")
    fig.update_layout(title_text=f"{head}<br><sup>({rest}</sup>", margin={"t": 130})


def check_writable(path: Path) -> None:
    """Fail early, before any training, if results cannot be written to ``path``."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise IrmLensError(
            f"Cannot write results to {path}: {exc.strerror or exc}. Free some space or fix the "
            "permissions, or choose another directory with FIGURES_DIR=..."
        ) from exc


def written_runs(ctx: Context, result: str, specs: Sequence[RunSpec]) -> dict[str, pd.DataFrame]:
    """Run -> its rows in the committed ``result/data.csv``, for the runs of ``specs`` whose
    key (config, data and library versions) is still the one those rows were measured under:
    a result that trains its own runs goes on from these (the run cache need not survive
    between sessions)."""
    path = ctx.out / result / "data.csv"
    if not path.exists():
        return {}
    data = pd.read_csv(path, dtype={"key": str})
    keys = {s.name: s.key(ctx.figures) for s in specs}
    same = data[data["key"] == data["run"].map(keys)]
    return {str(run): rows for run, rows in same.groupby("run", sort=False)}


def kept_seconds(ctx: Context, result: str, done: dict[str, pd.DataFrame]) -> dict[str, float]:
    """Training seconds per step, from ``result``'s committed summary (``seconds_by_run``), of
    the runs in ``done`` (``written_runs``): what a run measured in an earlier session cost."""
    kept = read_summary(ctx.out, result).get("seconds_by_run", {})
    return {str(k): float(v) for k, v in kept.items() if k in done}


def read_summary(out: Path, result: str) -> dict[str, Any]:
    """The ``summary`` a result wrote into its config.json ({} if that result is missing)."""
    path = out / result / "config.json"
    if not path.exists():
        return {}
    return dict(json.loads(path.read_text())["summary"])
