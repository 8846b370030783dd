"""Sweeps: the paper's matrix, and skipping or resuming runs."""

from __future__ import annotations

import json

from irm_lens.training.sweep import matrix, paper_matrix, run_name, run_sweep


def test_paper_matrix_has_the_papers_24_runs():
    configs = paper_matrix()
    assert len(configs) == 24
    assert len({run_name(c) for c in configs}) == 24
    regularised = [c for c in configs if c.l1_alpha > 0]
    assert len(regularised) == 6 and {c.layers for c in regularised} == {"q1", "all"}
    assert {c.emotion for c in configs} == {"anger", "sadness", "neutral"}
    assert {c.layers for c in configs} == {"q1", "q2", "q3", "q4", "every4", "all"}


def test_sweep_skips_finished_and_never_overwrites(tiny_host, tmp_path):
    configs = matrix(
        emotions=["anger", "joy"],
        layer_sets=["q1"],
        preset_name="smoke",
        host="tiny-random-llama",
        device="cpu",
        max_steps=1,
    )
    first = run_sweep(configs, tmp_path, host=tiny_host, progress=False)
    assert first["status"].tolist() == ["trained", "trained"]
    stamp = (tmp_path / run_name(configs[0]) / "irm.safetensors").stat().st_mtime_ns
    # A different run squatting in the second directory is left alone.
    squat = tmp_path / run_name(configs[1]) / "config.json"
    squat.write_text(json.dumps({**json.loads(squat.read_text()), "lr": 0.5}))
    again = run_sweep(configs, tmp_path, host=tiny_host, progress=False)
    assert again["status"].tolist() == ["done", "conflict"]
    assert (tmp_path / run_name(configs[0]) / "irm.safetensors").stat().st_mtime_ns == stamp
    assert (tmp_path / "sweep.csv").exists()
