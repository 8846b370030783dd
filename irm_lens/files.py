"""Atomic file writes: a reader never sees a half-written file."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd


def _umask_mode() -> int:
    """Permissions of a new file under the current umask (read, then restored)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was. The file gets
    the permissions a plain ``open`` would give it (the umask's), or keeps those of the file it
    replaces, not ``mkstemp``'s owner-only 0600.

    Example:
        >>> with atomic_path("out.json") as tmp:  # doctest: +SKIP
        ...     tmp.write_text("{}")
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
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
