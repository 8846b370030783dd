"""Benchmark: training one IRM in one process vs two gloo processes (DDP, FSDP) on this CPU,
and ``irm-lens plan``'s estimate against the peak resident memory of real training.

(a) Wall time of the same ``irm-lens train`` (embedded host, quick preset, ``--max-steps``)
in one process with 2 threads and under ``torchrun --nproc-per-node 2`` with 1 thread each,
interleaved, medians over repeats; ratio to one process. No target: on 2 cores the two ranks
share what one process had, and the ratio shows what the communication and the second copy of
the host cost.
(b) Peak RSS of each rank (``ru_maxrss``, printed by a wrapper around the command) against the
plan's per-rank total plus a process's baseline (torch, transformers, TransformerLens and
irm_lens imported, no host): the estimate's error on a real host.

    .venv/bin/python -m benchmarks.bench_distributed [--steps 6] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IRM_LENS = str(Path(sys.executable).with_name("irm-lens"))
PEAK = """
import resource, runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"PEAK_GIB {peak:.3f}", file=sys.stderr)
"""
BASELINE = """
import resource, torch, transformers, transformer_lens, irm_lens.cli
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
"""


def _run(procs: int, mode: str, steps: int, out: Path) -> tuple[float, list[float]]:
    args = [
        IRM_LENS,
        "train",
        str(out),
        "--emotion",
        "anger",
        "--max-steps",
        str(steps),
        "--eval-every",
        str(steps),
        "--device",
        "cpu",
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if procs == 1:
        env["OMP_NUM_THREADS"] = "2"
        cmd = [sys.executable, "-c", PEAK, *args]
    else:
        env["OMP_NUM_THREADS"] = "1"
        args += ["--parallel", mode]
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(procs),
            "--no-python",
            sys.executable,
            "-c",
            PEAK,
            *args,
        ]
    began = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    peaks = [float(line.split()[-1]) for line in done.stderr.splitlines() if "PEAK_GIB" in line]
    return seconds, peaks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from irm_lens.training.config import preset
    from irm_lens.training.plan import PlanInputs, host_shape, rank_bytes

    shape = host_shape(None)
    config = preset("quick")
    inputs = PlanInputs(shape, shape.n_layers, config.batch_size, config.max_len)
    baseline = float(
        subprocess.run(
            [sys.executable, "-c", BASELINE], capture_output=True, text=True, check=True
        ).stdout
    )
    setups = [("one", 1, "none"), ("ddp", 2, "ddp"), ("fsdp", 2, "fsdp")]
    times: dict[str, list[float]] = {name: [] for name, _, _ in setups}
    peaks: dict[str, list[float]] = {name: [] for name, _, _ in setups}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for name, procs, mode in setups:
                seconds, peak = _run(procs, mode, args.steps, Path(tmp) / f"{name}{r}")
                times[name].append(seconds)
                peaks[name].append(max(peak))
    one = statistics.median(times["one"])
    rows = {}
    for name, procs, _ in setups:
        estimate = sum(rank_bytes(inputs, name, procs).values()) / 2**30 + baseline
        rows[name] = {
            "wall_s_median": round(statistics.median(times[name]), 1),
            "ratio_to_one": round(statistics.median(times[name]) / one, 2),
            "peak_rss_gib_median": round(statistics.median(peaks[name]), 2),
            "plan_plus_baseline_gib": round(estimate, 2),
            "plan_over_peak": round(estimate / statistics.median(peaks[name]), 2),
        }
    print(json.dumps({"steps": args.steps, "baseline_gib": round(baseline, 2), **rows}, indent=2))


if __name__ == "__main__":
    main()
