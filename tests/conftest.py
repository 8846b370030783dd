"""Shared fixtures: hosts are loaded once per session (the embedded one takes ~20 s)."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# `make test` runs two pytest-xdist workers: they share the cores, one OpenMP thread each (and
# so do the processes a test starts), so torch threads never starve each other.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_THREADS = max(1, min(2, os.cpu_count() or 1) // _WORKERS)
if _WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(_THREADS)
torch.set_num_threads(_THREADS)


# The modules that take longest (minutes: whole pipelines, kill -9 loops, the embedded host),
# first: `make test` hands whole modules to its workers in collection order
# (--dist loadscope --no-loadscope-reorder), so the long ones start at once and the many short
# ones fill in around them instead of one long module starting last.
_LONGEST_FIRST = (
    "test_figures.py",
    "test_kill.py",
    "test_distributed.py",
    "test_inject.py",
    "test_index_profile.py",
    "test_rotate.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order kept within


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Keep derived files (the tiny host's tokenizer) out of the user's home during tests.
    os.environ.setdefault("IRM_LENS_CACHE", str(tmp_path_factory.mktemp("irm_lens_cache")))


@pytest.fixture(scope="session")
def tiny_host(_cache_dir: None):
    from irm_lens import load_host

    return load_host("tiny-random-llama", device="cpu")


@pytest.fixture(scope="session")
def embedded_host(_cache_dir: None):
    from irm_lens import load_host

    return load_host(device="cpu")


@pytest.fixture()
def irm(tiny_host):
    """An IRM on the tiny host with outputs large enough to change predictions."""
    from irm_lens import IRM

    return IRM.for_host(tiny_host, seed=1, init="torch")


@pytest.fixture(scope="session")
def trained_run(tiny_host, tmp_path_factory: pytest.TempPathFactory):
    """One smoke IRM on the tiny host (one step of anger), trained once per session. Read it in
    place; take ``run_dir`` to change it."""
    from irm_lens.training.config import preset
    from irm_lens.training.train import train

    run = tmp_path_factory.mktemp("trained") / "run"
    config = preset("smoke", host="tiny-random-llama", device="cpu", max_steps=1)
    train(config, run, host=tiny_host, progress=False)
    return run


@pytest.fixture()
def run_dir(trained_run, tmp_path):
    """A copy of ``trained_run`` this test may write into (recordings, ablations, retraining)."""
    return shutil.copytree(trained_run, tmp_path / "run")
