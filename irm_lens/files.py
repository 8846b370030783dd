"""Atomic file writes: a reader never sees a half-written file."""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from irm_lens.errors import OutputPathError
from irm_lens.rundir import RECORDING_INFO


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
    except OSError as exc:
        raise write_error(target, exc) from exc
    finally:
        if tmp.exists():
            tmp.unlink()


_NO_ROOM = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


class WriteError(OSError):
    """A file or result directory could not be written: one line naming it and what to do
    (``hint``; by default, free space or fix the permissions)."""

    def __init__(
        self, path: str | os.PathLike[str], reason: str, code: int | None, hint: str = ""
    ) -> None:
        hint = hint or (
            "Free space (or raise the file-size limit) and run the command again"
            if code in _NO_ROOM
            else "Check the folder's permissions and free space, and run the command again"
        )
        super().__init__(
            code, f"{path}: could not write it ({reason}). {hint}; nothing was replaced."
        )
        self.path, self.reason = Path(path), reason

    def __str__(self) -> str:
        return str(self.strerror)


def write_error(path: str | os.PathLike[str], exc: Exception, hint: str = "") -> WriteError:
    """``exc`` (an ``OSError`` or safetensors' error, raised while writing ``path``, its
    temporary or a file inside it) as a ``WriteError`` naming ``path``; the reason of an inner
    ``WriteError`` is kept, and safetensors' text is read for its OS error ("os error 27")."""
    if isinstance(exc, WriteError):
        if exc.path == Path(path) and not hint:
            return exc
        return WriteError(path, exc.reason, exc.errno, hint)
    if isinstance(exc, OSError):
        return WriteError(path, exc.strerror or str(exc), exc.errno, hint)
    code = re.search(r"os error (\d+)", str(exc))
    if code is None:  # no OS error named: a full disk or a file-size limit, most likely
        return WriteError(path, f"{exc}; is the disk full?", errno.ENOSPC, hint)
    return WriteError(path, os.strerror(int(code[1])), int(code[1]), hint)


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


MARKER = ".irm_lens.json"
"""Written into every result directory irm_lens makes, with its kind: a directory is replaced
or cleared only when it carries the marker of that kind."""

RESULT_KINDS = frozenset(
    {"recording", "analysis", "ablation", "atlas", "lens", "profile", "prediction"}
)


def result_kind(path: str | os.PathLike[str]) -> str | None:
    """The kind of result irm_lens wrote in the directory ``path`` (its marker), or None.
    Results written before markers existed are recognised by their files: a recording by its
    ``recording.json``, an ablation by its ``ablation.csv`` beside figure files alone, and a
    ``lens``, ``profile`` or ``predict`` result by its own tables (``_UNMARKED``) beside figure
    files and a ``summary.json`` alone."""
    target = Path(path)
    try:
        kind = json.loads((target / MARKER).read_text(encoding="utf-8")).get("kind")
        return str(kind) if kind in RESULT_KINDS else None
    except (OSError, ValueError, AttributeError):
        pass
    files = {p.name for p in target.iterdir()} if target.is_dir() else set()
    if "ablation.csv" in files and all(Path(n).suffix in _FIGURE_FILES for n in files):
        return "ablation"
    plain = {n for n in files if Path(n).suffix in _FIGURE_FILES or n == "summary.json"}
    for kind, tables in _UNMARKED.items():
        if (
            files
            and plain == files
            and files & tables
            and {n for n in files if n.endswith(".csv")} <= tables
        ):
            return kind
    try:
        info = json.loads((target / RECORDING_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return "recording" if isinstance(info, dict) and "files" in info else None


_FIGURE_FILES = frozenset({".csv", ".png", ".html", ".js"})
_UNMARKED = {
    "prediction": frozenset({"prediction.csv"}),
    "profile": frozenset(
        {
            "gains.csv",
            "magnitude.csv",
            "massive.csv",
            "lever_rms.csv",
            "lever_entropy.csv",
            "massive_ablation.csv",
            "super_weights.csv",
        }
    ),
    "lens": frozenset(
        {
            "decode.csv",
            "clamp.csv",
            "decode_all.csv",
            "values.csv",
            "activation_x_gradient.csv",
            "queries.csv",
            "subspaces.csv",
            "ov_svd.csv",
            "composition_v.csv",
        }
    ),
}
"""The tables by which a ``lens``, ``profile`` or ``predict`` result written before markers is
recognised."""


def check_replaceable(path: str | os.PathLike[str], kind: str) -> None:
    """Refuse (``OutputPathError``) to write a result of ``kind`` at ``path`` where that would
    destroy something irm_lens did not write there: a symbolic link, a file, or a non-empty
    directory without this tool's marker of the same kind. Call it before the work."""
    target = Path(path)
    if target.is_symlink():
        raise OutputPathError(
            f"{target} is a symbolic link; irm_lens replaces only directories it made. Give "
            "the real path, or a new directory."
        )
    if not target.exists():
        return
    if not target.is_dir():
        raise OutputPathError(
            f"{target} exists and is a file, not a directory; choose another output path."
        )
    if not any(target.iterdir()):
        return
    found = result_kind(target)
    if found != kind:
        what = f"a {found} irm_lens wrote" if found else "files irm_lens did not write"
        raise OutputPathError(
            f"{target} holds {what}, not a {kind}; it would be replaced whole. Choose a new or "
            f"empty output directory (irm_lens replaces only a {kind} it wrote itself)."
        )


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], *, kind: str) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; on success swap it in for ``path``.

    For results of several files (a recording): a reader sees the old directory or the new
    one, never a mix (in the instant between the two renames it sees none). On any exception
    the temporary directory is removed and ``path`` is left as it was. Orphans of killed
    writers are removed first. ``kind`` (one of ``RESULT_KINDS``) is written as the directory's
    marker, and an existing ``path`` is replaced only when it carries the same marker
    (``check_replaceable``): a folder of the user's files, a run directory or a link is refused.
    """
    if kind not in RESULT_KINDS:
        raise ValueError(f"atomic_dir: kind must be one of {sorted(RESULT_KINDS)}, got {kind!r}.")
    target = Path(path)
    check_replaceable(target, kind)
    target.parent.mkdir(parents=True, exist_ok=True)
    _clean_orphans(target)
    tag = f"{os.getpid()}-{os.urandom(3).hex()}"
    tmp = target.parent / f".{target.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        yield tmp
        (tmp / MARKER).write_text(json.dumps({"kind": kind, "tool": "irm_lens"}), encoding="utf-8")
        old = target.parent / f".{target.name}.old-{tag}"
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise write_error(target, exc) from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def save_tensors_atomic(
    tensors: dict[str, Any], path: str | os.PathLike[str], metadata: dict[str, str]
) -> None:
    """``safetensors.torch.save_file`` through a temporary beside ``path``; a failed write (a
    full disk, a file-size limit) is an ``OSError`` that names ``path``, and leaves it as it was."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except SafetensorError as exc:
            raise write_error(path, exc) from exc
