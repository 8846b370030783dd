"""Where a training run's and a recording's files live: the one place their names are spelled.

A run directory holds ``config.json`` (the ``TrainConfig``), ``irm.safetensors`` (the best IRM by
validation loss), ``last.safetensors`` (the resumable state: IRM, Adam and counters),
``metrics.csv``, ``summary.json`` once finished, optional evaluation tables, ``snapshots/`` (the
IRM at chosen steps) and ``recordings/``. A recording directory holds ``recording.json`` beside
its tensors. ``tests/test_layout.py`` keeps these names out of every other module.
"""

from __future__ import annotations

import os
from pathlib import Path

RECORDING_INFO = "recording.json"
"""The provenance and prompt list of a recording directory (``irm_lens.record``)."""


class RunDir:
    """A run directory's paths by name: ``RunDir(path).irm`` rather than
    ``path / "irm.safetensors"``."""

    CONFIG = "config.json"
    IRM = "irm.safetensors"
    LAST = "last.safetensors"
    METRICS = "metrics.csv"
    SUMMARY = "summary.json"
    EVALUATION = "evaluation.csv"
    GENERATIONS = "generations.csv"
    DATA = "data.csv"
    """A custom-data run's copy of the rows it trained on (``--data``, or a DataFrame)."""
    SNAPSHOTS = "snapshots"
    RECORDINGS = "recordings"
    FILES = (CONFIG, IRM, LAST, METRICS, SUMMARY, EVALUATION, GENERATIONS, DATA)
    """The files of a run (``train --overwrite`` replaces exactly these)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def irm(self) -> Path:
        return self.path / self.IRM

    @property
    def last(self) -> Path:
        return self.path / self.LAST

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def summary(self) -> Path:
        return self.path / self.SUMMARY

    @property
    def data(self) -> Path:
        return self.path / self.DATA

    @property
    def snapshots(self) -> Path:
        return self.path / self.SNAPSHOTS

    @property
    def recordings(self) -> Path:
        return self.path / self.RECORDINGS

    def snapshot(self, step: int) -> Path:
        """The IRM saved at optimizer step ``step``."""
        return self.snapshots / f"step-{step:06d}.safetensors"
