"""The child-process helper of the suite: a hung child and everything it started are killed."""

from __future__ import annotations

import os
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


def speak(code: int) -> int:
    """A target for the forked helpers: what a command prints, its environment and its code."""
    print("out", os.environ.get("PROCS_PROBE"), os.getpid())
    print("err", file=sys.stderr)
    return code


def sleep_long() -> int:
    time.sleep(120)
    return 0


def test_a_forked_call_is_a_process_of_its_own_with_its_output_env_and_code():
    done = _procs.call(f"{__name__}:speak", 3, env={"PROCS_PROBE": "yes"}, timeout=120)
    word, probe, pid = done.stdout.split()
    assert (done.returncode, word, probe, done.stderr) == (3, "out", "yes", "err\n")
    assert int(pid) != os.getpid()
    assert "PROCS_PROBE" not in os.environ  # the environment was the child's alone


def test_a_forked_job_is_killed_and_a_hung_call_fails_the_test():
    job = _procs.start(f"{__name__}:sleep_long")
    time.sleep(0.5)
    assert job.is_alive()
    _procs.kill(job)
    assert job.exitcode == -9
    with pytest.raises(pytest.fail.Exception, match="hung for 2 s"):
        _procs.call(f"{__name__}:sleep_long", timeout=2)
