"""Sweeps: a matrix of training runs, run one after another, skipping finished ones.

The matrix is emotions x layer sets x L1 (off/on) x seeds x losses. ``paper_matrix`` reproduces
the paper's 24 analysed runs: anger, sadness, neutral on each of six layer sets (quarters, every
4th, all; scaled to the host) without L1, plus the same emotions on the first quarter and on all
layers with the L1 penalty (alpha 1e-4).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from transformer_lens.model_bridge import TransformerBridge

from irm_lens.config import TrainConfig, preset
from irm_lens.files import write_csv_atomic
from irm_lens.host import load_host
from irm_lens.train import train

PAPER_EMOTIONS = ("anger", "sadness", "neutral")
PAPER_LAYER_SETS = ("q1", "q2", "q3", "q4", "every4", "all")
PAPER_L1 = 1e-4


def run_name(config: TrainConfig) -> str:
    """A directory name that identifies a run within a sweep."""
    l1 = f"l1-{config.l1_alpha:g}" if config.l1_alpha > 0 else "l1-off"
    return f"{config.emotion}_{config.layers}_{l1}_seed{config.seed}_{config.loss}"


def matrix(
    *,
    emotions: Sequence[str],
    layer_sets: Sequence[str],
    l1: Sequence[float] = (0.0,),
    seeds: Sequence[int] = (42,),
    losses: Sequence[str] = ("next-token",),
    preset_name: str = "quick",
    **overrides: Any,
) -> list[TrainConfig]:
    """Every combination of the given values, as training configs of one preset."""
    return [
        preset(preset_name, emotion=e, layers=ly, l1_alpha=a, seed=s, loss=lo, **overrides)
        for e, ly, a, s, lo in itertools.product(emotions, layer_sets, l1, seeds, losses)
    ]


def paper_matrix(preset_name: str = "paper", **overrides: Any) -> list[TrainConfig]:
    """The paper's 24 runs: 3 emotions x 6 layer sets, plus 3 emotions x {q1, all} with L1."""
    base = matrix(emotions=PAPER_EMOTIONS, layer_sets=PAPER_LAYER_SETS,
                  preset_name=preset_name, **overrides)  # fmt: skip
    regularised = matrix(emotions=PAPER_EMOTIONS, layer_sets=("q1", "all"), l1=(PAPER_L1,),
                         preset_name=preset_name, **overrides)  # fmt: skip
    return base + regularised


def run_status(run_dir: Path, config: TrainConfig) -> str:
    """``done``, ``partial`` (resumable), ``new``, or ``conflict`` (a different run is there)."""
    config_path = run_dir / "config.json"
    if not config_path.exists():
        return "new"
    if TrainConfig.load(config_path) != config:
        return "conflict"
    return "done" if (run_dir / "summary.json").exists() else "partial"


def run_sweep(
    configs: Sequence[TrainConfig],
    out_dir: str | Path,
    *,
    host: TransformerBridge | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Train every config into ``out_dir/<run_name>``; skip finished runs, resume partial ones.

    Returns:
        One row per run: ``name, status, steps, best_val, stopped`` (also written to
        ``out_dir/sweep.csv``). A run whose directory holds a different config is skipped with
        status ``conflict`` and never overwritten.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hosts = {(c.host, c.device, c.dtype) for c in configs}
    if host is None and configs:
        if len(hosts) != 1:
            raise ValueError(
                f"A sweep runs on one host; these configs name {sorted(map(str, hosts))}."
            )
        name, device, dtype = hosts.pop()
        host = load_host(name, device=device, dtype=dtype)
    rows = []
    for index, config in enumerate(configs, start=1):
        name = run_name(config)
        run_dir = out / name
        status = run_status(run_dir, config)
        row: dict[str, Any] = {"name": name, "status": status}
        if status in ("new", "partial"):
            if progress:
                print(f"[{index}/{len(configs)}] {name} ({status})", flush=True)
            result = train(
                config, run_dir, resume=status == "partial", host=host, progress=progress
            )
            row["status"] = "interrupted" if result.stopped == "interrupted" else "trained"
            if result.stopped == "interrupted":
                rows.append({**row, "steps": result.steps})
                break
        if (run_dir / "summary.json").exists():
            summary = json.loads((run_dir / "summary.json").read_text())
            row.update({k: summary[k] for k in ("steps", "best_val", "stopped")})
        rows.append(row)
    table = pd.DataFrame(rows, columns=["name", "status", "steps", "best_val", "stopped"])
    write_csv_atomic(out / "sweep.csv", table)
    return table


def describe(configs: Sequence[TrainConfig]) -> str:
    """A short table of the runs a sweep would train."""
    fields = ["emotion", "layers", "l1_alpha", "seed", "loss"]
    frame = pd.DataFrame([{k: dataclasses.asdict(c)[k] for k in fields} for c in configs])
    return frame.to_string(index=False)
