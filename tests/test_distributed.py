"""Training across processes (torchrun, gloo on CPU) and sweeps shared by several workers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file

from irm_lens.cli import main as cli_main
from irm_lens.training.distributed import DistributedError, World, shard_rows
from irm_lens.training.sweep import matrix, parse_shard, run_name, run_sweep
from irm_lens.training.train import train
from tests._procs import children, kill_tree, run, torchrun_cli

SMOKE = ["--preset", "smoke", "--host", "tiny-random-llama", "--device", "cpu"]
"""The smoke preset on the tiny host, on the CPU."""
# Uneven shares (3 rows over 2 ranks), gradient accumulation, the L1 penalty and an epoch
# boundary (16 rows / 6 per step) all in six steps.
OPTS = [
    *SMOKE,
    "--batch-size",
    "3",
    "--grad-accum",
    "2",
    "--l1",
    "0.001",
    "--eval-every",
    "2",
    "--epochs",
    "50",
]


def _env() -> dict[str, str]:
    # Gloo on the loopback device: the host name may resolve to an address the sandbox cannot reach.
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", GLOO_SOCKET_IFNAME="lo")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _run(cmd: list[str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return run(cmd, env=_env(), timeout=timeout)


def _max_diff(a: Path, b: Path) -> float:
    x, y = load_file(str(a)), load_file(str(b))
    assert sorted(x) == sorted(y)
    return max(float((x[k].double() - y[k].double()).abs().max()) for k in x)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """One-process runs of 6 and 60 steps, trained by the same CLI command."""
    out = {}
    for steps in (6, 60):
        run = tmp_path_factory.mktemp("one") / "run"
        assert cli_main(["train", str(run), *OPTS, "--max-steps", str(steps)]) == 0
        out[steps] = run
    return out


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--parallel", "fsdp", "--checkpoint-host"]])
def test_two_processes_train_the_same_irm_as_one(reference, tmp_path, extra):
    run = tmp_path / "run"
    cmd = torchrun_cli(2, "train", str(run), *OPTS, "--max-steps", "6", *extra)
    done = _run(cmd)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("done: 6 steps") == 1  # rank 0 alone reports
    one = reference[6]
    assert _max_diff(one / "irm.safetensors", run / "irm.safetensors") <= 1e-5
    # the resumable state is in the one-process format (also under FSDP): resumable anywhere
    assert _max_diff(one / "last.safetensors", run / "last.safetensors") <= 1e-5
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in one.iterdir())
    ours, theirs = (json.loads((r / "summary.json").read_text()) for r in (run, one))
    assert ours["best_step"] == theirs["best_step"]
    assert ours["best_val"] == pytest.approx(theirs["best_val"], abs=1e-5)


def _rank_of(pid: int) -> int | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in environ:
        if item.startswith(b"RANK="):
            return int(item[5:])
    return None


def _saved_step(path: Path) -> int:
    try:
        with safe_open(str(path), framework="pt") as fh:
            return int(json.loads((fh.metadata() or {})["progress"])["step"])
    except Exception:  # not written yet, or being replaced
        return -1


@pytest.mark.slow
def test_a_killed_rank_stops_the_job_and_the_run_resumes_in_one_process(reference, tmp_path):
    run = tmp_path / "run"
    cmd = torchrun_cli(2, "train", str(run), *OPTS, "--max-steps", "60")
    log = (tmp_path / "torchrun.log").open("w")
    job = subprocess.Popen(cmd, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    ranks: dict[int | None, int] = {}
    try:
        deadline = time.monotonic() + 240
        while _saved_step(run / "last.safetensors") < 4:
            assert job.poll() is None and time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.02)
        ranks.update({_rank_of(pid): pid for pid in children(job.pid)})
        os.kill(ranks[1], signal.SIGKILL)
        job.wait(timeout=120)
    finally:
        if job.poll() is None:
            kill_tree(job)
        for pid in ranks.values():  # a rank the launcher left behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        log.close()
    assert job.returncode != 0
    stopped_at = _saved_step(run / "last.safetensors")
    assert 4 <= stopped_at < 60 and not (run / "summary.json").exists()
    # resumed by one process (another number of processes than wrote it)
    assert cli_main(["train", str(run), "--resume"]) == 0
    assert json.loads((run / "summary.json").read_text())["steps"] == 60
    assert _max_diff(reference[60] / "irm.safetensors", run / "irm.safetensors") <= 1e-5


def test_rows_are_shared_round_robin_and_an_empty_share_weighs_nothing():
    assert shard_rows(["a", "b", "c"], World(0, 2)) == (["a", "c"], 1.0)
    assert shard_rows(["a", "b", "c"], World(1, 2)) == (["b"], 1.0)
    assert shard_rows(["a"], World(1, 2)) == (["a"], 0.0)  # runs, but adds nothing


def test_ddp_or_fsdp_without_torchrun_is_refused(tiny_host, tmp_path):
    from irm_lens.training.config import preset

    config = preset("smoke", host="tiny-random-llama", device="cpu", max_steps=1)
    for mode in ("ddp", "fsdp"):
        with pytest.raises(DistributedError, match="torchrun"):
            train(config, tmp_path / mode, host=tiny_host, progress=False, parallel=mode)
        assert not (tmp_path / mode).exists()  # refused before anything was written


def test_parse_shard():
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "1", "a/b", "0/0"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def _configs(**kw):
    return matrix(
        emotions=["anger", "joy", "sadness"],
        layer_sets=["q1"],
        preset_name="smoke",
        host="tiny-random-llama",
        device="cpu",
        max_steps=2,
        **kw,
    )


def test_two_shards_train_disjoint_runs_that_complete_the_sweep(tiny_host, tmp_path):
    configs = _configs()
    first = run_sweep(configs, tmp_path, host=tiny_host, progress=False, shard=(0, 2))
    second = run_sweep(configs, tmp_path, host=tiny_host, progress=False, shard=(1, 2))
    assert set(first["status"]) == set(second["status"]) == {"trained"}
    names_a, names_b = set(first["name"]), set(second["name"])
    assert not names_a & names_b
    assert names_a | names_b == {run_name(c) for c in configs}
    assert (tmp_path / "sweep-shard0of2.csv").exists() and (
        tmp_path / "sweep-shard1of2.csv"
    ).exists()
    whole = run_sweep(configs, tmp_path, host=tiny_host, progress=False)
    assert whole["status"].tolist() == ["done"] * 3 and whole["steps"].tolist() == [2] * 3


HOLDER = textwrap.dedent(
    """
    import sys, time
    from irm_lens.training.runlock import run_lock
    with run_lock(sys.argv[1], "test holder"):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


def test_a_second_worker_passes_or_waits_for_a_locked_run(tiny_host, tmp_path):
    configs = _configs()
    busy = tmp_path / run_name(configs[1])
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(busy), "4"],
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        passed = run_sweep(configs, tmp_path, host=tiny_host, progress=False, wait=False)
        assert passed["status"].tolist() == ["trained", "locked", "trained"]
        assert not (busy / "config.json").exists()  # never touched while held
        started = time.monotonic()
        waited = run_sweep(configs, tmp_path, host=tiny_host, progress=False, poll_s=0.2)
        assert holder.wait(timeout=60) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
    assert waited["status"].tolist() == ["done", "trained", "done"]
    assert time.monotonic() - started > 0.5  # it waited for the holder to let go
    metrics = (busy / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 1 + 2  # trained once: two steps


def test_a_killed_workers_run_is_resumed_by_the_next(tiny_host, tmp_path):
    configs = _configs()
    victim = tmp_path / run_name(configs[0])

    def die(step: int) -> None:
        raise KeyboardInterrupt  # stands for a kill: the state of step 1 is on disk

    config = _configs(eval_every=1)[0]
    configs = [config, *configs[1:]]
    with pytest.raises(KeyboardInterrupt):
        train(config, victim, host=tiny_host, progress=False, on_step=lambda s: s == 2 and die(s))
    assert _saved_step(victim / "last.safetensors") == 1
    table = run_sweep(configs, tmp_path, host=tiny_host, progress=False)
    assert table["status"].tolist() == ["trained"] * 3
    assert json.loads((victim / "summary.json").read_text())["steps"] == 2


@pytest.mark.slow
def test_torchrun_ranks_share_a_sweep(tmp_path):
    out = tmp_path / "sweep"
    args = [
        "sweep",
        str(out),
        "--emotions",
        "anger,joy,sadness",
        "--layer-sets",
        "q1",
        *SMOKE,
    ]
    done = _run(torchrun_cli(2, *args))
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout
    names = [d.name for d in out.iterdir() if d.is_dir()]
    assert len(names) == 3
    for name in names:  # each run trained exactly once, by one of the ranks
        assert log.count(f"{name} (new)") == 1
        assert json.loads((out / name / "summary.json").read_text())["steps"] == 4
    # the workers name themselves (which rank takes which run depends on their start-up times)
    assert log.count("rank ") >= 3
    table = (out / "sweep.csv").read_text()
    assert table.count("trained") + table.count("done") == 3
