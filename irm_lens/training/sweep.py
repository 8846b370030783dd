"""Sweeps: a matrix of training runs, skipping finished ones, shared by any number of workers.

The matrix is emotions x layer sets x L1 (off/on) x seeds x losses. ``paper_matrix`` reproduces
the paper's 24 analysed runs: anger, sadness, neutral on each of six layer sets (quarters, every
4th, all; scaled to the host) without L1, plus the same emotions on the first quarter and on all
layers with the L1 penalty (alpha 1e-4).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from transformer_lens.model_bridge import TransformerBridge

from irm_lens.files import write_csv_atomic
from irm_lens.host import load_host
from irm_lens.rundir import RunDir
from irm_lens.training.config import TrainConfig, preset
from irm_lens.training.distributed import launched, rank_device
from irm_lens.training.runlock import claim_each
from irm_lens.training.runs import run_status, run_summary
from irm_lens.training.train import train

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
    base = matrix(
        emotions=PAPER_EMOTIONS, layer_sets=PAPER_LAYER_SETS, preset_name=preset_name, **overrides
    )
    regularised = matrix(
        emotions=PAPER_EMOTIONS,
        layer_sets=("q1", "all"),
        l1=(PAPER_L1,),
        preset_name=preset_name,
        **overrides,
    )
    return base + regularised


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (a SLURM array task's share: runs i, i + n, ...) as ``(i, n)``, checked."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: give it as i/n, e.g. 0/4 (zero-based).") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {text!r}: need 0 <= i < n (e.g. $SLURM_ARRAY_TASK_ID/4).")
    return i, n


def run_sweep(
    configs: Sequence[TrainConfig],
    out_dir: str | Path,
    *,
    host: TransformerBridge | None = None,
    progress: bool = True,
    shard: tuple[int, int] = (0, 1),
    wait: bool = True,
    poll_s: float = 5.0,
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Train every config into ``out_dir/<run_name>``; skip finished runs, resume partial ones,
    and extend finished ones a config gives a larger ``max_steps`` (``extension_problem``).

    Any number of workers may run the same sweep at once: the ranks of a ``torchrun`` job
    (each trains whole runs on its own device) and the tasks of a cluster array (``shard=(i,
    n)`` takes runs ``i, i + n, ...``). A run is trained by the worker that takes its lock; the
    others pass it by and, with ``wait``, come back until it is finished, taking over a run
    whose worker was killed (it resumes from the last checkpoint). ``log`` receives a line per
    run this worker trains (the CLI passes ``print``).

    Returns:
        One row per run of this shard: ``name, status, steps, best_val, stopped``; status is
        ``trained`` (here), ``done`` (before), ``interrupted``, ``conflict`` (the directory holds
        another config; never overwritten), ``locked`` (another worker holds it; without
        ``wait``) or ``new`` / ``partial`` / ``shorter`` (not reached). Rank 0 (of one shard)
        writes it to ``out_dir/sweep.csv`` (``sweep-shard<i>of<n>.csv`` for a shard).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    world = launched()
    index, count = shard
    mine = [c for k, c in enumerate(configs) if k % count == index]
    hosts = {(c.host, c.device, c.dtype) for c in mine}
    if host is None and len(hosts) > 1:
        raise ValueError(f"A sweep runs on one host; these configs name {sorted(map(str, hosts))}.")
    loaded: list[TransformerBridge] = [] if host is None else [host]

    def get_host() -> TransformerBridge:
        if not loaded:
            name, device, dtype = next(iter(hosts))
            loaded.append(load_host(name, device=rank_device(device, world), dtype=dtype))
        return loaded[0]

    dirs = [out / run_name(c) for c in mine]
    outcome: dict[int, str] = {}

    def work(k: int) -> None:
        if "interrupted" in outcome.values():
            return
        status = run_status(dirs[k], mine[k])
        if status not in ("new", "partial", "shorter"):
            return
        if log is not None:
            who = f"rank {world.rank}: " if world.parallel else ""
            log(f"{who}[{k + 1}/{len(mine)}] {dirs[k].name} ({status})")
        result = train(
            mine[k],
            dirs[k],
            resume=status != "new",
            host=get_host(),
            progress=progress and not world.parallel,
            parallel="none",
        )
        outcome[k] = "interrupted" if result.stopped == "interrupted" else "trained"

    held = claim_each(dirs, "sweep", work, first=world.rank, wait=wait, poll_s=poll_s)
    rows = []
    for k, (config, run_dir) in enumerate(zip(mine, dirs, strict=True)):
        status = outcome.get(k) or ("locked" if k in held else run_status(run_dir, config))
        row: dict[str, Any] = {"name": run_dir.name, "status": status}
        if RunDir(run_dir).summary.exists():
            row.update(run_summary(run_dir))
        rows.append(row)
    table = pd.DataFrame(rows, columns=["name", "status", "steps", "best_val", "stopped"])
    if world.is_main:
        name = "sweep.csv" if count == 1 else f"sweep-shard{index}of{count}.csv"
        write_csv_atomic(out / name, table)
    return table


def describe(configs: Sequence[TrainConfig]) -> str:
    """A short table of the runs a sweep would train."""
    fields = ["emotion", "layers", "l1_alpha", "seed", "loss"]
    frame = pd.DataFrame([{k: dataclasses.asdict(c)[k] for k in fields} for c in configs])
    return frame.to_string(index=False)
