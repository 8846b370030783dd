"""The child-process helper of the suite: a hung child and everything it started are killed."""

from __future__ import annotations

import sys
import time

import pytest

from tests import _procs

# A child that starts a grandchild in a session of its own (as torchrun starts its ranks), which
# inherits the output files and would outlive a kill of the child alone.
PARENT = """
import subprocess, sys, time
kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                       start_new_session=True)
print(kid.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_hung_child_fails_the_test_and_takes_its_session_leaders_with_it():
    started = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match="hung for 3 s") as failed:
        _procs.run([sys.executable, "-c", PARENT], timeout=3)
    assert time.monotonic() - started < 30
    grandchild = int(str(failed.value).split("--- stdout ---\n")[1].split()[0])
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(grandchild)


def test_a_finished_child_returns_its_output_and_code():
    done = _procs.run(
        [
            sys.executable,
            "-c",
            "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)",
        ],
        timeout=60,
    )
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
