"""Atomic file writes: a reader never sees a half-written file."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from irm_lens.errors import OutputPathError


def _umask_mode() -> int:
    """Permissions of a new file under the current umask (read, then restored)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was; temporaries
    of writers killed before they could remove theirs are removed first. The file gets
    the permissions a plain ``open`` would give it (the umask's), or keeps those of the file it
    replaces, not ``mkstemp``'s owner-only 0600.

    Example:
        >>> with atomic_path("out.json") as tmp:  # doctest: +SKIP
        ...     tmp.write_text("{}")
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _clean_orphans(target)
    prefix = f".{target.name}.tmp-{os.getpid()}-"  # the pid tells orphans from live writes
    fd, tmp_name = tempfile.mkstemp(prefix=prefix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else _umask_mode()
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_csv_atomic(path: str | os.PathLike[str], frame: pd.DataFrame) -> None:
    """Write ``frame`` as CSV atomically, every text field quoted.

    pandas' default quoting leaves a lone carriage return unquoted, and tokens such as ``"\\r"``
    then split a row in two on reading; quoting all text keeps token columns round-tripping.
    """
    write_text_atomic(path, frame.to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC))


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes (provenance of recordings: which IRM file made them)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_orphans(target: Path, name: str | None = None) -> None:
    """Remove temporaries of ``target`` (of every file in the folder ``target`` when ``name``
    is ``"*"``) left by writers that died (``kill -9``, power loss); their names carry the pid."""
    folder, name = (target, name) if name is not None else (target.parent, target.name)
    for kind in ("tmp", "old"):
        for orphan in folder.glob(f".{name}.{kind}-*"):
            try:
                pid = int(orphan.name.rsplit("-", 2)[-2])
            except (ValueError, IndexError):
                continue
            if pid == os.getpid() or _pid_alive(pid):
                continue
            if orphan.is_dir():
                shutil.rmtree(orphan, ignore_errors=True)
            else:
                orphan.unlink(missing_ok=True)


# safetensors' save_file writes through a ".tmpXXXXXX" file beside its target (no pid in it).
_LIBRARY_TEMPORARY = re.compile(r"\.tmp[A-Za-z0-9_]{6}")


def clean_temporaries(folder: Path) -> None:
    """Remove every temporary that killed writers left in ``folder``: ours (by dead pid) and
    safetensors' ``.tmpXXXXXX`` files. The latter carry no pid, so call this only while holding
    ``folder``'s writer lock (``irm_lens.training.runlock``), when no one else can be saving
    there."""
    _clean_orphans(folder, "*")
    for orphan in folder.glob(".tmp*"):
        if orphan.is_file() and _LIBRARY_TEMPORARY.fullmatch(orphan.name):
            orphan.unlink(missing_ok=True)


RESULT_SUFFIXES = frozenset({".csv", ".png", ".html", ".js"})


@contextlib.contextmanager
def atomic_dir(
    path: str | os.PathLike[str], *, replaceable: frozenset[str] | None = None
) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; on success swap it in for ``path``.

    For results of several files (a recording): a reader sees the old directory or the new
    one, never a mix (in the instant between the two renames it sees none). On any exception
    the temporary directory is removed and ``path`` is left as it was. Orphans of killed
    writers are removed first. With ``replaceable`` (file suffixes, e.g. ``RESULT_SUFFIXES``),
    an existing ``path`` holding any other kind of file is refused, not replaced: an output
    directory pointed at a run directory by mistake is never swapped away.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise OutputPathError(
            f"{target} exists and is a file, not a directory; choose another output path."
        )
    if replaceable is not None and target.exists():
        foreign = sorted(
            str(p.relative_to(target))
            for p in target.rglob("*")
            if p.is_file() and p.suffix not in replaceable
        )
        if foreign:
            raise OutputPathError(
                f"{target} holds files that are not results ({', '.join(foreign[:3])}"
                f"{', ...' if len(foreign) > 3 else ''}); it would be replaced whole. Choose a "
                "new or empty output directory."
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    _clean_orphans(target)
    tag = f"{os.getpid()}-{os.urandom(3).hex()}"
    tmp = target.parent / f".{target.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        yield tmp
        old = target.parent / f".{target.name}.old-{tag}"
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
