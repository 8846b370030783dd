"""What every analysis script reads: the run set (which runs, trained or not, aligned or not),
the loaded host, and the measurements several results share (alignment, dominance tables, the
host's profile). Writing a result is ``analyses._written``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformer_lens.model_bridge import TransformerBridge

from analyses._config import FiguresConfig
from analyses._measured import nll_by_question
from analyses._runset import RunSpec, ensure_runs, null_seeds, run_specs
from irm_lens import interventions, measures
from irm_lens.canary import check_generation
from irm_lens.host import load_host
from irm_lens.measures.alignment import ALIGNED, Specificity, specificity
from irm_lens.measures.recorded import analyze_recordings, pooled
from irm_lens.prompts import PAPER_PROMPTS, encode
from irm_lens.record import Recording, load_recordings
from irm_lens.rundir import RunDir
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
    return table.assign(**spec_columns(ctx, run))


def spec_columns(ctx: Context, run: str) -> dict[str, Any]:
    """The columns that name a run in a result's table."""
    spec = ctx.specs[run]
    return {
        "run": run,
        "emotion": spec.config.emotion if spec.trained else "untrained",
        "seed": spec.config.seed,
        "run_kind": spec.kind,
    }


def panel_name(ctx: Context, run: str) -> str:
    spec = ctx.specs[run]
    return f"{spec.config.emotion}, seed {spec.config.seed}" if spec.trained else "untrained IRM"


def prompt_tokens(ctx: Context) -> torch.Tensor:
    """The first paper prompt as plain text, on the host's device."""
    host = ctx.host()
    ids = encode(host.tokenizer, PAPER_PROMPTS[0], mode="plain").prompt_ids
    return torch.tensor([ids], device=host.W_E.device)
