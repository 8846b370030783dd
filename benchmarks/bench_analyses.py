"""Benchmark: every recording-based analysis for 24 runs x 7 prompts, from saved recordings.

Recordings at the embedded host's sizes (30 injected layers x 576 indices; 7 prompts of 40
tokens each: 10 prompt + 30 generated) are written with ``save_recordings``; the timed part
loads them and computes, per run, the average heat map, top-1000 timing per prompt, the per-layer
top-100 counts, sparsity, dominant indices and striation (200 permutations), then the dominance
consistency across runs. Target: under 30 s on 2 cores.

    .venv/bin/python -m benchmarks.bench_analyses [--runs 24]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from benchmarks._setup import int_options
from irm_lens import measures
from irm_lens.record import Recording, load_recordings, save_recordings


def _fake_run(seed: int, n_prompts: int, n_layers: int, d_model: int) -> list[Recording]:
    gen = torch.Generator().manual_seed(seed)
    kinds = ["prompt"] * 10 + ["generated"] * 30
    return [
        Recording(
            name=f"p{i}",
            prompt=f"prompt {i}",
            layers=tuple(range(n_layers)),
            token_ids=list(range(40)),
            tokens=[f"t{j}" for j in range(40)],
            kinds=kinds,
            outputs=torch.randn(40, n_layers, d_model, generator=gen),
        )
        for i in range(n_prompts)
    ]


def analyze(recordings: list[Recording]) -> torch.Tensor:
    layers = recordings[0].layers
    selected = torch.cat([r.outputs[measures.token_mask(r.kinds)] for r in recordings])
    every = torch.cat([r.outputs for r in recordings])
    measures.heatmap(selected, ["prompt"] * len(selected), layers, token_set="all")
    for r in recordings:
        measures.topk_timing(r.outputs, r.kinds, k=1000)
    measures.layer_topk(every, layers)
    measures.sparsity_by_layer(every, layers)
    measures.striation(every, layers, n_permutations=200)
    return measures.dominant_indices(every)


def main() -> None:
    args = int_options(__doc__, runs=24, prompts=7)
    with tempfile.TemporaryDirectory() as tmp:
        dirs = []
        for run in range(args.runs):
            dirs.append(
                save_recordings(_fake_run(run, args.prompts, 30, 576), Path(tmp) / f"r{run}")
            )
        start = time.perf_counter()
        tables = {d.name: analyze(load_recordings(d)) for d in dirs}
        measures.dominance_consistency(tables, k=5)
        elapsed = time.perf_counter() - start
    print(f"{args.runs} runs x {args.prompts} prompts (40 tokens x 30 layers x 576 indices each)")
    print(f"all analyses from saved recordings: {elapsed:.1f} s  (target < 30 s)")


if __name__ == "__main__":
    main()
