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
from typing import NoReturn, overload

RECORDING_INFO = "recording.json"
"""The provenance and prompt list of a recording directory (``irm_lens.record``)."""


class _Entry:
    """A read-only attribute of ``RunDir`` for one of its entries: ``irm = _Entry(IRM)`` makes
    ``RunDir(p).irm`` the path ``p / "irm.safetensors"``."""

    def __init__(self, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, run: None, owner: type[RunDir]) -> _Entry: ...
    @overload
    def __get__(self, run: RunDir, owner: type[RunDir]) -> Path: ...
    def __get__(self, run: RunDir | None, owner: type[RunDir]) -> Path | _Entry:
        return self if run is None else run.path / self.name

    def __set__(self, run: RunDir, value: object) -> NoReturn:
        raise AttributeError(f"RunDir paths are read-only; this one is always {self.name!r}.")


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
    SPECIFICITY = "specificity.csv"
    """Per held-out question, voice and condition: summed answer NLL and token count (what
    ``measures.alignment.specificity`` bootstraps over), written by ``evaluate``."""
    DATA = "data.csv"
    """A custom-data run's copy of the rows it trained on (``--data``, or a DataFrame)."""
    SNAPSHOTS = "snapshots"
    RECORDINGS = "recordings"
    FILES = (CONFIG, IRM, LAST, METRICS, SUMMARY, EVALUATION, GENERATIONS, SPECIFICITY, DATA)
    """The files of a run (``train --overwrite`` replaces exactly these)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # The paths of its entries, ``self.path / NAME`` (read-only).
    config = _Entry(CONFIG)
    irm = _Entry(IRM)
    last = _Entry(LAST)
    metrics = _Entry(METRICS)
    summary = _Entry(SUMMARY)
    data = _Entry(DATA)
    specificity = _Entry(SPECIFICITY)
    snapshots = _Entry(SNAPSHOTS)
    recordings = _Entry(RECORDINGS)

    def snapshot(self, step: int) -> Path:
        """The IRM saved at optimizer step ``step``."""
        return self.snapshots / f"step-{step:06d}.safetensors"
