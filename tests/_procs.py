"""Child processes that cannot stall the suite.

``run`` keeps a child's output in files, not pipes, and on a timeout kills the child and every
process below it: torchrun starts each rank in a session of its own, so a rank can outlive its
launcher and would hold a pipe (and ``communicate``) open forever.

``call`` and ``start`` run a Python function (``irm-lens``'s ``main``, ``make figures``'s
``cli``) in a process of its own forked from a forkserver that has imported torch and
TransformerLens once: a real process (its own pid, files, limits and exit code, killable at any
moment) without the ~8 s each new interpreter spends importing them.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pytest


def children(parent: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                kids.append(int(entry.name))
    return kids


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        found += kids
        todo += kids
    return found


IRM_LENS = str(Path(sys.executable).with_name("irm-lens"))
"""The ``irm-lens`` console script beside this interpreter."""


def torchrun(n: int, *args: str) -> list[str]:
    """The command that starts ``args`` on ``n`` ranks of this machine (``torch.distributed.run
    --standalone``); ``args`` begin with what each rank runs: ``-m <module>`` or
    ``--no-python <program>``."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(n),
        *args,
    ]


def torchrun_cli(n: int, *args: str) -> list[str]:
    """The command that runs ``irm-lens <args>`` on ``n`` ranks of this machine."""
    return torchrun(n, "--no-python", IRM_LENS, *args)


def kill_tree(job: subprocess.Popen) -> None:
    """SIGKILL the job and everything below it (children first, then the job)."""
    for pid in [*descendants(job.pid), job.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    job.wait(timeout=30)


def run(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    timeout: float,
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(cmd, capture_output=True, text=True)`` whose timeout always returns: on
    a hang the whole process tree is killed and the test fails with what it printed."""
    with tempfile.TemporaryDirectory() as tmp:
        out_path, err_path = Path(tmp, "out"), Path(tmp, "err")
        with out_path.open("w") as out, err_path.open("w") as err:
            job = subprocess.Popen(list(cmd), env=env, cwd=cwd, stdout=out, stderr=err, text=True)
            try:
                job.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_tree(job)
                pytest.fail(
                    f"hung for {timeout} s: {' '.join(cmd)}\n--- stdout ---\n"
                    f"{out_path.read_text()[-3000:]}\n--- stderr ---\n"
                    f"{err_path.read_text()[-6000:]}"
                )
        return subprocess.CompletedProcess(
            list(cmd), job.returncode, out_path.read_text(), err_path.read_text()
        )


# A clean, single-threaded process with the heavy imports done: every child forks from it.
_FORKS = multiprocessing.get_context("forkserver")
_FORKS.set_forkserver_preload(["torch", "irm_lens.cli.main", "analyses._common"])
CLI = "irm_lens.cli.main:main"
FIGURES = "analyses.__main__:cli"


def _child(
    target: str,
    args: tuple[Any, ...],
    env: Mapping[str, str],
    cwd: str | None,
    outputs: tuple[Connection | None, Connection | None],
    preexec: Callable[[], None] | None,
) -> None:
    """In the forked child: the environment, working directory and stdout/stderr (pipes, or
    /dev/null for None) a new process would have, then ``target(*args)``, whose return value is
    the exit code."""
    os.environ.clear()
    os.environ.update(env)
    if cwd is not None:
        os.chdir(cwd)
    for fd, conn in zip((1, 2), outputs, strict=True):
        os.dup2(os.open(os.devnull, os.O_WRONLY) if conn is None else conn.fileno(), fd)
    if preexec is not None:
        preexec()
    import torch

    torch.set_num_threads(int(env.get("OMP_NUM_THREADS", "1")))
    module, name = target.split(":")
    # multiprocessing reads SystemExit as the exit code (a traceback and 1 for an exception),
    # and runs the finalizers a normal exit would
    sys.exit(getattr(importlib.import_module(module), name)(*args))


def start(
    target: str,
    *args: Any,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    preexec: Callable[[], None] | None = None,
    outputs: tuple[Connection | None, Connection | None] = (None, None),
) -> BaseProcess:
    """Start ``target`` ("module:function") with ``args`` in a forked process; ``env``
    (default: this one's) is its whole environment, ``preexec`` runs in it first (limits),
    ``outputs`` are the write ends of its stdout and stderr (None: discarded)."""
    env = dict(os.environ if env is None else env)
    folder = None if cwd is None else str(cwd)
    job = _FORKS.Process(target=_child, args=(target, args, env, folder, outputs, preexec))
    job.start()
    return job


def kill(job: BaseProcess) -> None:
    """SIGKILL a started job and everything below it."""
    assert job.pid is not None
    for pid in [*descendants(job.pid), job.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    job.join(timeout=30)


class _Drain(threading.Thread):
    """Reads a pipe to its end (a process that leaves a child holding it cannot stall us: the
    caller stops waiting, and this daemon thread is dropped)."""

    def __init__(self, conn: Connection) -> None:
        super().__init__(daemon=True)
        self.conn, self.chunks = conn, list[bytes]()
        self.start()

    def run(self) -> None:
        with self.conn:
            while chunk := os.read(self.conn.fileno(), 1 << 16):
                self.chunks.append(chunk)

    def text(self) -> str:
        self.join(timeout=10)
        return b"".join(self.chunks).decode(errors="replace")


def call(
    target: str,
    *args: Any,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    preexec: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``start`` and wait: what ``subprocess.run(capture_output=True, text=True)`` returns, and
    on a hang the job is killed and the test fails with what it printed."""
    pipes = [_FORKS.Pipe(duplex=False) for _ in range(2)]
    job = start(
        target, *args, env=env, cwd=cwd, preexec=preexec, outputs=(pipes[0][1], pipes[1][1])
    )
    for _, write in pipes:
        write.close()  # the child holds its own copies
    out, err = (_Drain(read) for read, _ in pipes)
    job.join(timeout=timeout)
    if job.exitcode is None:
        kill(job)
        pytest.fail(
            f"hung for {timeout} s: {target}{args}\n--- stdout ---\n{out.text()[-3000:]}"
            f"\n--- stderr ---\n{err.text()[-6000:]}"
        )
    return subprocess.CompletedProcess([target, *args], job.exitcode, out.text(), err.text())
