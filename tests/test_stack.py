"""The lock (``requirements.lock``) and ``irm_lens/stack.py``, which writes and checks it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

from irm_lens import stack

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / stack.LOCK_NAME


def _stack(*args: str) -> subprocess.CompletedProcess[str]:
    # Run as the Makefile does: a script, importing nothing of irm_lens.
    return subprocess.run(
        [sys.executable, str(ROOT / "irm_lens" / "stack.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_lock_pins_the_core_stack_and_satisfies_pyproject():
    pins = stack.read_lock(LOCK)
    assert {"torch", "transformers", "transformer-lens", "pip", "setuptools"} <= set(pins)
    assert "irm-lens" not in pins
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["dev"]
    for line in declared:
        req = Requirement(line)
        name = stack.normalize(req.name)
        if name == "irm-lens":
            continue
        assert name in pins, f"{name} is a dependency but not in {LOCK.name}"
        assert req.specifier.contains(pins[name], prereleases=True), (name, pins[name])


def test_find_lock_is_the_checkout_lock():
    assert stack.find_lock() == LOCK


def test_read_lock_names_the_bad_line(tmp_path):
    bad = tmp_path / "requirements.lock"
    bad.write_text("# header\ntorch==2.13.0+cpu\nnumpy>=2\n")
    with pytest.raises(SystemExit, match=r"requirements.lock:3: 'numpy>=2'.*make lock"):
        stack.read_lock(bad)


def test_drift_lists_moved_missing_and_extra_packages():
    locked = {"a": "1", "b": "2", "c": "3"}
    have = {"a": "1", "b": "2.1", "d": "4"}
    assert stack.drift(locked, have) == [("b", "2", "2.1"), ("c", "3", "-"), ("d", "-", "4")]


def test_freeze_then_verify_passes_and_a_moved_pin_fails(tmp_path):
    lock = tmp_path / "requirements.lock"
    made = _stack("freeze", str(lock))
    assert made.returncode == 0, made.stderr
    assert _stack("verify", str(lock)).returncode == 0
    pins = stack.read_lock(lock)
    assert pins == {n: v for n, v in stack.installed().items() if n != "irm-lens"}
    text = lock.read_text().replace(f"transformers=={pins['transformers']}", "transformers==5.0.0")
    lock.write_text(text)
    moved = _stack("verify", str(lock))
    assert moved.returncode == 1
    assert f"transformers  5.0.0 -> {pins['transformers']}" in moved.stderr
    assert "make lock" in moved.stderr
    assert _stack("verify", str(lock), "--skip", "transformers").returncode == 0
    diff = _stack("diff", str(lock))
    assert diff.returncode == 0 and "transformers" in diff.stdout


def test_verify_without_a_lock_says_how_to_make_one(tmp_path):
    missing = _stack("verify", str(tmp_path / "nope.lock"))
    assert missing.returncode == 2 and "make lock" in missing.stderr


def test_describe_names_the_installed_versions():
    text = stack.describe()
    for name, version in stack.versions().items():
        assert f"{name} {version}" in text and version != "not installed"
