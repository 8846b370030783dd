"""Child processes that cannot stall the suite.

``run`` keeps a child's output in files, not pipes, and on a timeout kills the child and every
process below it: torchrun starts each rank in a session of its own, so a rank can outlive its
launcher and would hold a pipe (and ``communicate``) open forever.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

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
