"""The settings of one ``make figures`` invocation (``FiguresConfig``, read from the
environment), and the run cache's keys and cached tables."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from irm_lens.data.datasets import EMOTIONS
from irm_lens.errors import IrmLensError
from irm_lens.files import write_csv_atomic
from irm_lens.host import BUILTIN_HOSTS, TINY, cache_dir
from irm_lens.training.config import PRESETS

# Bump when a stage's output format or meaning changes: old cached runs are then not reused.
RUNSET_VERSION = 3  # 3: paper and held-out prompts recorded in batches of 8


class FiguresConfigError(IrmLensError, ValueError):
    """A ``make figures`` setting that cannot be used (names the variable and what to do)."""


@dataclass(frozen=True)
class FiguresConfig:
    """What ``make figures`` runs (one per invocation, saved beside every result).

    Args:
        host: host for ``load_host`` (None = embedded SmolLM2-135M-Instruct).
        device, dtype: where and in what precision the host runs (IRMs train in fp32).
        seeds: IRM seeds of the next-token runs; the first also seeds the paper-loss runs and
            the untrained baseline.
        preset: training preset (``quick``: minutes per run on a laptop CPU; ``paper``: the
            original's schedule, for GPUs).
        emotions: bundled emotions to align to.
        paper_loss: also train every emotion with the original's loss as it ran (first seed;
            ``config.FAITHFUL_PAPER_LOSS`` over the preset's step budget).
        heldout: held-out questions recorded per run (greedy answers, chat format).
        paper_max_length: tokens per paper prompt recording, prompt included (original: 100).
        heldout_tokens: greedy tokens generated per held-out question.
        eval_rows, eval_tokens: test rows and generated tokens per condition in the evaluation.
        ablation_rows: held-out rows in the ablation study.
        out: where the results go (``figures/<result>/``).
        cache: where runs are cached (default ``$IRM_LENS_CACHE/runs``).
        fast: the smoke configuration (tiny random host, seconds per run).
        null_irms: untrained IRMs of different init seeds (the training seeds first), recorded
            like the trained runs: the null distribution every rule reads (at least 1; the first
            is also evaluated as the untrained control).
    """

    host: str | None = None
    device: str | None = None
    dtype: str = "float32"
    seeds: tuple[int, ...] = (42, 420)
    preset: str = "quick"
    emotions: tuple[str, ...] = EMOTIONS
    paper_loss: bool = True
    heldout: int = 3
    paper_max_length: int = 100
    heldout_tokens: int = 24
    eval_rows: int = 12
    eval_tokens: int = 24
    ablation_rows: int = 8
    out: str = "figures"
    cache: str | None = None
    fast: bool = False
    null_irms: int = 10

    def __post_init__(self) -> None:
        if not self.seeds:
            raise FiguresConfigError("SEEDS is empty; give at least one seed, e.g. SEEDS=42.")
        if self.null_irms < 1:
            raise FiguresConfigError(f"null_irms={self.null_irms}: the run set needs at least 1.")
        if self.preset not in PRESETS:
            raise FiguresConfigError(f"PRESET={self.preset!r}; use one of {list(PRESETS)}.")
        unknown = [e for e in self.emotions if e not in EMOTIONS]
        if unknown or not self.emotions:
            raise FiguresConfigError(
                f"EMOTIONS has {unknown or 'nothing'}; the bundled ones are {list(EMOTIONS)}."
            )
        if self.device and self.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise FiguresConfigError(
                    f"DEVICE={self.device} but torch {torch.__version__} sees no CUDA GPU. Run on "
                    "a machine with one (and a CUDA build of torch), or leave DEVICE unset for CPU."
                )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FiguresConfig:
        """Read the ``make figures`` variables: HOST, DEVICE, DTYPE, SEEDS, PRESET, EMOTIONS,
        FAST, FIGURES_DIR, IRM_LENS_RUNS (empty = unset)."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        fast = (get("FAST") or "0") not in ("0", "false", "no")
        base = cls.smoke() if fast else cls()
        plain = {
            "HOST": "host",
            "DEVICE": "device",
            "DTYPE": "dtype",
            "PRESET": "preset",
            "FIGURES_DIR": "out",
            "IRM_LENS_RUNS": "cache",
        }
        changes: dict[str, Any] = {key: get(var) for var, key in plain.items() if get(var)}
        for name, key in (("SEEDS", "seeds"), ("EMOTIONS", "emotions")):
            raw = get(name)
            if raw:
                parts = tuple(p.strip() for p in raw.replace(" ", ",").split(",") if p.strip())
                if key == "seeds":
                    try:
                        changes[key] = tuple(int(p) for p in parts)
                    except ValueError:
                        raise FiguresConfigError(
                            f"SEEDS={raw!r}: give whole numbers separated by commas, e.g. 42,420."
                        ) from None
                else:
                    changes[key] = parts
        return dataclasses.replace(base, **changes)

    @classmethod
    def smoke(cls) -> FiguresConfig:
        """``FAST=1``: the whole pipeline on the tiny random host in about a minute."""
        return cls(
            host=TINY,
            seeds=(42,),
            preset="smoke",
            heldout=2,
            paper_max_length=40,
            heldout_tokens=8,
            eval_rows=4,
            eval_tokens=8,
            ablation_rows=3,
            null_irms=3,
            out="build/figures-fast",
            fast=True,
        )

    @property
    def runs_dir(self) -> Path:
        return Path(self.cache) if self.cache else cache_dir() / "runs"

    @property
    def out_path(self) -> Path:
        return Path(self.out)

    @property
    def host_label(self) -> str:
        return self.host or BUILTIN_HOSTS[0]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def digest(value: object) -> str:
    """The one hash of the run cache: 12 hex digits of the SHA-256 of ``value`` as sorted JSON.
    Run directories (``RunSpec.key``) and results kept in them (``cache_key``) are named by it."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def cache_key(*parts: object) -> str:
    """Names an analysis result kept in the run cache: the run set's version plus ``parts``.
    Change a part when the result's meaning changes."""
    return digest([RUNSET_VERSION, *parts])


def cached_table(path: Path, compute: Callable[[], pd.DataFrame], **read: Any) -> pd.DataFrame:
    """The table an earlier invocation wrote at ``path``, else ``compute()``, written there
    atomically (a stopped run leaves no half-written file). ``read``: ``pd.read_csv`` options."""
    if path.exists():
        return pd.read_csv(path, **read)
    table = compute()
    write_csv_atomic(path, table)
    return table
