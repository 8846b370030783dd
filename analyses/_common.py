"""What every analysis script shares: the run set, the loaded host, and writing a result.

A result is a directory ``<out>/<name>/`` with ``data.csv`` (the long table the figure is drawn
from), ``figure.png`` and ``figure.html`` (the figure), and ``config.json`` (the settings, the runs
it used and a ``summary`` of its headline numbers, which ``report.py`` turns into REPORT.md).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import torch
from transformer_lens.model_bridge import TransformerBridge

from analyses._config import FiguresConfig
from analyses._measured import nll_by_question, own_offset
from analyses._runset import RunSpec, ensure_runs, null_seeds, run_specs
from irm_lens import interventions, measures
from irm_lens.canary import check_generation
from irm_lens.errors import IrmLensError
from irm_lens.export import save_figure
from irm_lens.files import write_csv_atomic, write_text_atomic
from irm_lens.host import load_host
from irm_lens.measures.alignment import ALIGNED, Specificity, specificity
from irm_lens.measures.recorded import analyze_recordings, pooled
from irm_lens.prompts import PAPER_PROMPTS, encode
from irm_lens.record import Recording, load_recordings
from irm_lens.rundir import RunDir
from irm_lens.stack import provenance
from irm_lens.training.config import Objective
from irm_lens.training.distributed import launched, rank_device

KINDS = ("next-token", "paper loss")
"""The loss kinds of trained runs: reported apart in every table and verdict."""

IRM_FIELDS = ("layers", "width_mult", "depth", "init", "masked", "rotated_output", "seed")
"""Training-config fields that change an untrained IRM."""


class Context:
    """One ``make figures`` invocation: configuration, run directories, host, recordings."""

    def __init__(
        self,
        figures: FiguresConfig,
        *,
        progress: bool = True,
        specs: Sequence[RunSpec] | None = None,
    ) -> None:
        self.figures = figures
        self.progress = progress
        chosen = run_specs(figures) if specs is None else specs
        self.specs: dict[str, RunSpec] = {s.name: s for s in chosen}
        self._host: TransformerBridge | None = None
        self._runs: dict[str, Path] | None = None
        self._recordings: dict[tuple[str, str], list[Recording]] = {}
        self.timings: dict[str, float] = {}  # seconds per step of this invocation (the report)
        self.cold = False  # whether this invocation found none of its runs cached

    @property
    def out(self) -> Path:
        return Path(self.figures.out)

    def host(self) -> TransformerBridge:
        if self._host is None:
            device = rank_device(self.figures.device, launched())  # cuda:<local rank>
            host = load_host(self.figures.host, device=device, dtype=self.figures.dtype)
            check_generation(host)  # before any run or result is written
            self._host = host
        return self._host

    @property
    def runs(self) -> dict[str, Path]:
        """Run name -> directory, every stage done (trains what is missing)."""
        if self._runs is None:
            log = functools.partial(print, flush=True)
            self._runs = ensure_runs(
                self.figures,
                self.host,
                specs=list(self.specs.values()),
                progress=self.progress,
                log=log,
            )
        return self._runs

    def variant(
        self,
        label: str = "",
        *,
        host: str | None = None,
        emotions: tuple[str, ...] | None = None,
        null: bool = False,
        **training: Any,
    ) -> Context:
        """The first seed's next-token runs (of ``emotions``; default all) and untrained
        baseline again, on another ``host`` and/or with ``training`` changes to every run's
        config (e.g. ``optimizer="sgd"``); ``label`` goes into the run names
        (``anger_rotated_s42``). ``null``: the whole untrained null of the run set's init seeds
        (``Context.null``), not only the first seed's control."""
        seed = self.first_seed
        figures = dataclasses.replace(
            self.figures,
            host=host or self.figures.host,
            seeds=(seed,),
            paper_loss=False,
            null_irms=1,
            emotions=emotions or self.figures.emotions,
        )
        base = run_specs(figures)
        if null:
            control = next(s for s in base if not s.trained)
            base += [
                RunSpec(
                    f"untrained_s{n}",
                    dataclasses.replace(control.config, seed=n),
                    trained=False,
                    null=True,
                )
                for n in null_seeds(self.figures)[1:]
            ]
        specs = []
        for s in base:
            # An untrained IRM is the same under any optimizer or loss: only what builds it
            # changes it, so the other changes keep it on the main set's cached baseline.
            changes = (
                training if s.trained else {k: v for k, v in training.items() if k in IRM_FIELDS}
            )
            renamed = label and (s.trained or changes or host)
            stem, _, run_seed = s.name.rpartition("_s")
            specs.append(
                dataclasses.replace(
                    s,
                    name=f"{stem}_{label}_s{run_seed}" if renamed else s.name,
                    config=dataclasses.replace(s.config, **changes),
                )
            )
        other = Context(figures, progress=self.progress, specs=specs)
        if figures.host == self.figures.host:  # the same host: share the loaded one
            other._host = self._host
        return other

    @cached_property
    def alignment(self) -> dict[str, Specificity]:
        """Every run's specificity to its emotion on all held-out questions, on its own
        objective (next token; t+2 for the original's loss), with its CI and verdict
        (``measures.alignment``; cached in the run directories)."""
        memo: dict[Any, pd.DataFrame] = {}
        return {
            run: specificity(nll_by_question(self, run, memo), spec.config.emotion)
            for run, spec in self.specs.items()
            if not spec.null
        }

    @cached_property
    def next_token(self) -> dict[str, Specificity]:
        """The same on the next-token target for every run: for a run trained on another
        objective (the original's t+2), how much it damaged the host's own prediction."""
        memo: dict[Any, pd.DataFrame] = {}
        return {
            run: specificity(nll_by_question(self, run, memo, offset=1), spec.config.emotion)
            if own_offset(spec.config) != 1
            else self.alignment[run]
            for run, spec in self.specs.items()
            if not spec.null
        }

    def aligned(self, kind: str) -> list[str]:
        """Trained runs of ``kind`` (``next-token`` or ``paper loss``) that are aligned: only
        these enter the mechanistic verdicts."""
        return [r for r in self.trained(kind) if self.alignment[r].verdict == ALIGNED]

    def subset(self, specs: Sequence[RunSpec]) -> Context:
        """Other runs under the same configuration, sharing this context's loaded host."""
        other = Context(self.figures, progress=self.progress, specs=specs)
        other._host = self._host
        return other

    def trained(self, kind: str | None = None) -> list[str]:
        """Names of trained runs (``kind``: ``next-token`` or ``paper loss``; None = both)."""
        return [n for n, s in self.specs.items() if s.trained and (kind is None or s.kind == kind)]

    @property
    def untrained(self) -> str:
        """The untrained control of the first seed (recorded and evaluated)."""
        return next(n for n, s in self.specs.items() if not s.trained)

    @property
    def null(self) -> list[str]:
        """Every untrained IRM (the control first, then the null's other init seeds): the null
        distribution the verdict rules read."""
        return [n for n, s in self.specs.items() if not s.trained]

    @property
    def first_seed(self) -> int:
        return self.figures.seeds[0]

    def recordings(self, run: str, prompt_set: str = "paper") -> list[Recording]:
        key = (run, prompt_set)
        if key not in self._recordings:
            self._recordings[key] = load_recordings(RunDir(self.runs[run]).recordings / prompt_set)
        return self._recordings[key]

    def outputs(self, run: str, prompt_set: str = "paper") -> torch.Tensor:
        """Every recorded token of a run's prompt set: ``[token, inject, d_model]``."""
        return pooled(self.recordings(run, prompt_set))

    @cached_property
    def dominance(self) -> dict[str, pd.DataFrame]:
        """``dominant_indices`` of every run (paper prompts, all recorded tokens)."""
        return {
            name: analyze_recordings(self.recordings(name), tables=("dominant_indices",))[
                "dominant_indices"
            ]
            for name in self.specs
        }

    @property
    def headline(self) -> list[str]:
        """The runs the report's medians are over: the aligned next-token runs (the trained
        next-token runs when none is aligned, so that the analyses still have a subject; the
        summaries then say so with ``headline_aligned``)."""
        return self.aligned("next-token") or self.trained("next-token") or self.trained()

    @property
    def headline_aligned(self) -> bool:
        return bool(self.aligned("next-token"))

    @cached_property
    def dominant_index(self) -> int:
        """The index that ranks first in most headline runs (ties: most top-5 places)."""
        tables = {n: self.dominance[n] for n in self.headline}
        frequencies, _ = measures.dominance_consistency(tables, k=5)
        return int(frequencies.iloc[0]["index"])

    @cached_property
    def host_profile(self) -> dict[str, pd.DataFrame]:
        """The host's residual profile, massive-activation dims and norm gains."""
        prompts = [r.prompt for r in self.recordings(self.untrained)]
        return interventions.host_profile(self.host(), prompts, mode="plain")

    @cached_property
    def massive_index(self) -> int | None:
        massive = self.host_profile["massive"]
        return int(massive.iloc[0]["index"]) if len(massive) else None

    def run_settings(self, run: str) -> dict[str, Any]:
        """What a result's ``config.json`` says of a run it read: its cache directory's name
        (name and key) and the training settings that define it."""
        spec = self.specs[run]
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
            "directory": spec.directory(self.figures).name,
            "trained": spec.trained,
            **{f: getattr(config, f) for f in fields},
        }

    def spec_columns(self, run: str) -> dict[str, Any]:
        spec = self.specs[run]
        return {
            "run": run,
            "emotion": spec.config.emotion if spec.trained else "untrained",
            "seed": spec.config.seed,
            "run_kind": spec.kind,
        }

    def write(
        self,
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
        target = self.out / result
        used = list(self.specs) if runs is None else list(runs)
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
                k: v for k, v in self.figures.to_dict().items() if k not in ("out", "cache")
            },
            "runs": {name: self.run_settings(name) for name in used},
            **provenance(),
        }
        write_text_atomic(target / "config.json", json.dumps(config, indent=2, default=str))
        return target

    def write_variants(
        self,
        result: str,
        data: pd.DataFrame,
        fig: go.Figure,
        variants: Iterable[Context],
        *,
        summary: Any,
        size: tuple[int, int],
        settings: dict[str, Any],
    ) -> Path:
        """``write`` for a result on ``variants`` of the run set (``variant``): it names no run
        of the main set, and its ``settings`` gain ``run_dirs``, the variants' run directories."""
        run_dirs = [p.name for c in variants for p in c.runs.values()]
        settings = {**settings, "run_dirs": run_dirs}
        return self.write(result, data, fig, summary=summary, runs=[], size=size, settings=settings)


SMOKE_MECHANISM_EMOTIONS = 2
"""Under ``FAST=1`` (the pipeline tests) the mechanism tier trains its variants of the first
emotions only: the same code paths at a third of the runs, so ``make test`` stays short."""


def mechanism_emotions(ctx: Context, emotions: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The emotions a mechanism-tier variant trains: ``emotions`` (default: the run set's),
    only the first ``SMOKE_MECHANISM_EMOTIONS`` of them in the smoke configuration."""
    chosen = emotions or ctx.figures.emotions
    return tuple(chosen[:SMOKE_MECHANISM_EMOTIONS]) if ctx.figures.fast else tuple(chosen)


def heatmap_table(ctx: Context, run: str) -> pd.DataFrame:
    """Signed mean IRM output over the paper token set of a run's paper prompts."""
    table = analyze_recordings(ctx.recordings(run), tables=("heatmap",))["heatmap"]
    return table.assign(**ctx.spec_columns(run))


def panel_name(ctx: Context, run: str) -> str:
    spec = ctx.specs[run]
    return f"{spec.config.emotion}, seed {spec.config.seed}" if spec.trained else "untrained IRM"


def prompt_tokens(ctx: Context) -> torch.Tensor:
    """The first paper prompt as plain text, on the host's device."""
    host = ctx.host()
    ids = encode(host.tokenizer, PAPER_PROMPTS[0], mode="plain").prompt_ids
    return torch.tensor([ids], device=host.W_E.device)


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


def read_summary(out: Path, result: str) -> dict[str, Any]:
    """The ``summary`` a result wrote into its config.json ({} if that result is missing)."""
    path = out / result / "config.json"
    if not path.exists():
        return {}
    return dict(json.loads(path.read_text())["summary"])
