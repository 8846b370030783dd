"""``kill -9`` at seeded random moments of train, record and the ``make figures`` run-set stages,
each followed by a rerun: the files must end as an uninterrupted run's.

Every process here runs with one OpenMP thread, references included, so that results are
bit-comparable across processes."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from irm_lens.training.runlock import LOCK_NAME

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
S = ["--host", "tiny-random-llama", "--preset", "smoke", "--device", "cpu"]
TRAIN = [*S, "--epochs", "10", "--max-steps", "12", "--eval-every", "3"]
# Timing columns and files: they differ between any two runs.
VOLATILE_FILES = {LOCK_NAME, "stages.json"}


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "irm_lens.cli", *args],
        cwd=ROOT,
        env=env or ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _kill_at(
    argv: list[str], folder: Path, delay: float, env: dict[str, str] | None = None
) -> None:
    """Start ``argv``, wait until it holds ``folder``'s writer lock, ``delay`` s more, SIGKILL."""
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env or ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    lock = folder / LOCK_NAME
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if lock.exists() and str(proc.pid) in lock.read_text():
            break
        time.sleep(0.01)
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


def _without_timing(text: str) -> list[dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO(text)))
    for row in rows:
        row.pop("tokens_per_s", None)
    return rows


def _safetensors(path: Path) -> tuple[dict[str, str], dict[str, bytes]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
        tensors = {k: fh.get_tensor(k).numpy().tobytes() for k in fh.keys()}  # noqa: SIM118
    return meta, tensors


def _contents(folder: Path) -> dict[str, object]:
    """Every file under ``folder`` (timing removed), for comparing two runs' results."""
    found: dict[str, object] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name in VOLATILE_FILES:
            continue
        rel = str(path.relative_to(folder))
        if path.name == "metrics.csv":
            found[rel] = _without_timing(path.read_text())
        elif path.name == "last.safetensors":  # its header carries the metrics, timing too
            found[rel] = "present"
        elif path.suffix == ".safetensors":  # header key order is not fixed: compare content
            found[rel] = _safetensors(path)
        elif path.name == "recording.json":  # irm_sha256: bytes of a file whose header varies
            info = json.loads(path.read_text().replace(str(folder.parent.parent), "RUN"))
            info.pop("irm_sha256", None)
            found[rel] = info
        else:
            found[rel] = path.read_bytes().replace(str(folder).encode(), b"RUN")
    return found


def test_train_killed_anywhere_then_resumed_ends_as_an_uninterrupted_run(tmp_path):
    reference = tmp_path / "reference"
    assert _cli("train", str(reference), *TRAIN).returncode == 0
    expected = _contents(reference)
    rng = random.Random(16)
    for attempt in range(3):
        run = tmp_path / f"killed{attempt}"
        _kill_at(
            [sys.executable, "-m", "irm_lens.cli", "train", str(run), *TRAIN],
            run,
            rng.uniform(0.0, 1.5),
        )
        again = (
            ["train", str(run), "--resume"]
            if (run / "config.json").exists()
            else ["train", str(run), *TRAIN]
        )
        done = _cli(*again)
        assert done.returncode == 0, done.stderr
        assert _contents(run) == expected, f"attempt {attempt}"
        assert not [p for p in run.iterdir() if p.name.startswith(".tmp") or ".tmp-" in p.name]


def test_record_killed_anywhere_then_rerun_ends_as_an_uninterrupted_recording(tmp_path):
    run = tmp_path / "run"
    assert _cli("train", str(run), *S, "--max-steps", "2").returncode == 0
    record = ["record", str(run), "--max-new-tokens", "24", "--batch-size", "1", "--overwrite"]
    assert _cli(*record).returncode == 0
    target = run / "recordings" / "paper"
    expected = _contents(target)
    rng = random.Random(61)
    for attempt in range(2):
        _kill_at([sys.executable, "-m", "irm_lens.cli", *record], run, rng.uniform(0.0, 2.0))
        # Killed at any moment: the old recording is there whole (never a mix) or, at worst,
        # between two renames, absent; never a half-written directory.
        if target.exists():
            assert _contents(target) == expected, f"attempt {attempt} (before the rerun)"
        assert _cli(*record).returncode == 0
        assert _contents(target) == expected, f"attempt {attempt}"
        assert not [p for p in target.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_run_set_killed_then_rerun_ends_as_an_uninterrupted_run_set(tmp_path):
    delay = random.Random(5).uniform(0.5, 5.0)  # within the first of three runs' stages

    def figures_env(name: str) -> dict[str, str]:
        return {
            **ENV,
            "FAST": "1",
            "EMOTIONS": "anger",
            "SEEDS": "7",
            "IRM_LENS_RUNS": str(tmp_path / name / "runs"),
            "FIGURES_DIR": str(tmp_path / name / "figures"),
        }

    # The run set alone (Context.runs: train, record, evaluate every run), no figures: the
    # subject here is the cache, and a figure's browser has nothing to do with it.
    code = (
        "from analyses._common import Context\n"
        "from analyses._runset import FiguresConfig\n"
        "Context(FiguresConfig.from_env(), progress=False).runs\n"
    )

    def ensure(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=figures_env(name),
            capture_output=True,
            text=True,
            timeout=600,
        )

    assert ensure("reference").returncode == 0
    reference = tmp_path / "reference" / "runs"
    expected = {run.name: _contents(run) for run in sorted(reference.iterdir())}
    argv = [sys.executable, "-c", code]
    runs = tmp_path / "killed" / "runs"
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=figures_env("killed"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while proc.poll() is None and not any(runs.glob(f"*/{LOCK_NAME}")):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    done = ensure("killed")
    assert done.returncode == 0, done.stderr
    assert {run.name: _contents(run) for run in sorted(runs.iterdir())} == expected
