"""``kill -9`` at seeded random moments of train, record and the ``make figures`` run-set stages,
each followed by a rerun: the files must end as an uninterrupted run's.

Each command runs in a process of its own (forked from a server that has imported torch once,
``tests._procs``), killed with SIGKILL. Every process here runs with one OpenMP thread,
references included, so that results are bit-comparable across processes."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import subprocess
import time
from pathlib import Path

import pytest

from irm_lens.training.runlock import LOCK_NAME
from tests import _procs

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
S = ["--host", "tiny-random-llama", "--preset", "smoke", "--device", "cpu"]
TRAIN = [*S, "--epochs", "10", "--max-steps", "12", "--eval-every", "3"]
# Timing columns and files: they differ between any two runs.
VOLATILE_FILES = {LOCK_NAME, "stages.json"}


def run_set() -> int:
    """The run set alone (``Context.runs``: train, record, evaluate every run), no figures: the
    subject here is the cache, and a figure's browser has nothing to do with it."""
    from analyses._common import Context
    from analyses._runset import FiguresConfig

    Context(FiguresConfig.from_env(), progress=False).runs  # noqa: B018 (builds the runs)
    return 0


RUN_SET = f"{__name__}:run_set"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return _procs.call(_procs.CLI, list(args), cwd=ROOT, env=ENV, timeout=600)


def _kill_at(args: list[str], folder: Path, delay: float) -> None:
    """Start ``irm-lens args``, wait until it holds ``folder``'s writer lock, ``delay`` s more,
    SIGKILL."""
    proc = _procs.start(_procs.CLI, args, cwd=ROOT, env=ENV)
    lock = folder / LOCK_NAME
    deadline = time.monotonic() + 120
    while proc.is_alive() and time.monotonic() < deadline:
        if lock.exists() and str(proc.pid) in lock.read_text():
            break
        time.sleep(0.01)
    time.sleep(delay)
    _procs.kill(proc)


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
        _kill_at(["train", str(run), *TRAIN], run, rng.uniform(0.0, 1.5))
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
        _kill_at(record, run, rng.uniform(0.0, 2.0))
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

    def ensure(name: str) -> subprocess.CompletedProcess[str]:
        return _procs.call(RUN_SET, cwd=ROOT, env=figures_env(name), timeout=600)

    assert ensure("reference").returncode == 0
    reference = tmp_path / "reference" / "runs"
    expected = {run.name: _contents(run) for run in sorted(reference.iterdir())}
    runs = tmp_path / "killed" / "runs"
    proc = _procs.start(RUN_SET, cwd=ROOT, env=figures_env("killed"))
    deadline = time.monotonic() + 120
    while proc.is_alive() and not any(runs.glob(f"*/{LOCK_NAME}")):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(delay)
    _procs.kill(proc)
    done = ensure("killed")
    assert done.returncode == 0, done.stderr
    assert {run.name: _contents(run) for run in sorted(runs.iterdir())} == expected
