"""One writer per run directory.

Every verb that writes into a run directory (train, resume, overwrite, record, evaluate, ablate,
the ``make figures`` stages) holds ``RUN_DIR/.irm_lens.lock`` while it writes. The lock is an
advisory ``flock`` on that file, so the kernel drops it when its process dies: a killed writer
never leaves a stale lock behind, and the next writer simply takes it. A second writer is
refused at once with the holder named (process id, verb, start time). Within one process the
lock is re-entrant, so ``make figures`` can hold it around stages that take it again. A
directory the lock created is removed again when the writer left nothing else in it.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

from irm_lens.errors import IrmLensError
from irm_lens.files import atomic_dir, clean_temporaries

LOCK_NAME = ".irm_lens.lock"

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are then not protected against a second writer
    fcntl = None  # type: ignore[assignment]

_held: set[Path] = set()  # run directories this process holds


class RunLockedError(IrmLensError, RuntimeError):
    """Another process is writing into the run directory."""


def _take(handle: IO[str], target: Path, advice: str, verb: str) -> None:
    """Take ``handle``'s exclusive lock (the writer lock of ``target``) and stamp it (pid,
    machine, ``verb``, start time), or raise ``RunLockedError`` naming the live process that
    holds it, then ``advice``."""
    if fcntl is not None:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            raise RunLockedError(f"{target} is being written by {holder}. {advice}") from None
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    handle.seek(0)
    handle.truncate()
    stamp = {"pid": os.getpid(), "host": socket.gethostname(), "verb": verb, "started": started}
    handle.write(json.dumps(stamp))
    handle.flush()


def _holder(handle: IO[str]) -> str:
    handle.seek(0)
    try:
        info = json.loads(handle.read() or "{}")
    except (json.JSONDecodeError, UnicodeDecodeError):  # a stamp someone else wrote over
        info = {}
    if not isinstance(info, dict) or not info:
        return "another process"
    return (
        f"process {info.get('pid')} on {info.get('host')} ({info.get('verb')}, started "
        f"{info.get('started')})"
    )


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike[str], verb: str) -> Iterator[None]:
    """Hold ``run_dir``'s writer lock for the block (created with the directory if needed).

    Raises:
        RunLockedError: another live process holds it; the message names that process.
    """
    run_dir = Path(run_dir)
    key = run_dir.resolve()
    if key in _held:  # re-entrant: an outer block of this process holds it until it ends
        yield
        return
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    lock_path = run_dir / LOCK_NAME
    handle = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115 (held open)
    try:
        advice = (
            "Wait for it to finish (or stop it), then run this again; a killed writer's lock is "
            "released by itself."
        )
        _take(handle, run_dir, advice, verb)
        _held.add(key)
        clean_temporaries(run_dir)  # no other writer can be saving here now
        try:
            yield
        finally:
            _held.discard(key)
            handle.seek(0)
            handle.truncate()
            handle.flush()
    finally:
        handle.close()  # closing drops the flock
        if created:  # a writer that wrote nothing leaves nothing behind
            with contextlib.suppress(OSError):
                if [p.name for p in run_dir.iterdir()] == [LOCK_NAME]:
                    lock_path.unlink()
                    run_dir.rmdir()


@contextlib.contextmanager
def out_lock(out: str | os.PathLike[str], verb: str) -> Iterator[None]:
    """Hold the writer lock of the result directory ``out`` for the block: a flock on
    ``.<name>.irm_lens.lock`` beside it (inside would be swapped away with the directory). A
    second writer of the same ``--out`` is refused at once, naming the holder.

    Raises:
        RunLockedError: another live process is writing ``out``.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out.parent / f".{out.name}{LOCK_NAME}"
    key = lock_path.resolve()
    if key in _held:
        yield
        return
    handle = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115 (held open)
    try:
        _take(handle, out, "Wait for it to finish, or choose another --out.", verb)
        _held.add(key)
        try:
            yield
        finally:
            _held.discard(key)
            with contextlib.suppress(OSError):
                lock_path.unlink()  # while still held: a later writer makes a fresh one
    finally:
        handle.close()


@contextlib.contextmanager
def result_dir(out: str | os.PathLike[str], kind: str, verb: str) -> Iterator[Path]:
    """Write a result of several files to ``out`` as one unit: hold its writer lock
    (``out_lock``) and yield a temporary directory that replaces ``out`` when the block
    succeeds (``atomic_dir``). A folder irm_lens did not write, or a result of another kind, is
    refused on entry; call ``check_replaceable(out, kind)`` before long work as well, so the
    refusal comes first."""
    with out_lock(out, verb), atomic_dir(out, kind=kind) as tmp:
        yield tmp


def claim_each(
    run_dirs: Sequence[Path],
    verb: str,
    work: Callable[[int], None],
    *,
    first: int = 0,
    wait: bool = True,
    poll_s: float = 5.0,
) -> list[int]:
    """Call ``work(i)`` for each run directory while holding its lock; workers share a list.

    Several processes (the ranks of a torchrun job, the tasks of a cluster array) can walk the
    same runs: each run is worked on by whoever takes its lock first, and the others pass it by.
    With ``wait`` they come back to the runs they passed until each was free once, so a worker
    returns only when every run was finished by someone; a run whose worker was killed is then
    taken over (``work`` should resume what it finds). ``first`` rotates the starting run, so
    that workers start on different runs.

    Returns:
        The indices passed by because another process held them (empty when ``wait``).
    """
    pending = list(range(len(run_dirs)))
    if pending:
        shift = first % len(pending)
        pending = pending[shift:] + pending[:shift]
    while True:
        held = []
        for index in pending:
            try:
                with run_lock(run_dirs[index], verb):
                    work(index)
            except RunLockedError:
                held.append(index)
        if not held or not wait:
            return held
        time.sleep(poll_s)
        pending = held
