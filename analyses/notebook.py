"""Run ``analyses/explore.ipynb`` in place on a trained run, so that it is committed with the
outputs a reader should see (``make notebook RUN=<run directory>``).

The kernel is this Python (a kernelspec written to a temporary Jupyter path, found before any
other); the notebook runs from the run's parent directory with ``IRM_LENS_RUN`` set to the run's
name, so no machine path is printed; ``IRM_LENS_HOST`` is unset (the embedded host), or
``HOST`` when given.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from irm_lens.files import write_text_atomic
from irm_lens.rundir import RunDir

NOTEBOOK = Path(__file__).with_name("explore.ipynb")


def sources_sha256(nb: nbformat.NotebookNode) -> str:
    """A hash of every cell's type and source: outputs stored under one hash belong to the
    sources that hash (``tests/test_notebook.py`` checks the committed notebook by it)."""
    text = json.dumps([[c.cell_type, c.source] for c in nb.cells])
    return hashlib.sha256(text.encode()).hexdigest()


def execute(run_dir: Path, host: str | None = None, notebook: Path = NOTEBOOK) -> float:
    """Execute ``notebook`` on the run in ``run_dir`` and write it back with its outputs;
    returns the seconds it took. Raises ``nbclient``'s CellExecutionError if a cell fails (the
    file is then left as it was)."""
    if not RunDir(run_dir).irm.exists():
        raise SystemExit(f"{run_dir}: no trained IRM there (irm.safetensors); train it first.")
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "kernels" / "python3"
        spec.mkdir(parents=True)
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        kernel = {"argv": argv, "display_name": "Python 3", "language": "python"}
        (spec / "kernel.json").write_text(json.dumps(kernel))
        env = {"JUPYTER_PATH": tmp, "JUPYTER_RUNTIME_DIR": tmp, "IRM_LENS_RUN": run_dir.name}
        saved = {k: os.environ.get(k) for k in [*env, "IRM_LENS_HOST"]}
        os.environ.update(env)
        os.environ.pop("IRM_LENS_HOST", None)
        if host:
            os.environ["IRM_LENS_HOST"] = host
        try:
            nb = nbformat.read(notebook, as_version=4)
            start = time.perf_counter()
            where = {"metadata": {"path": str(run_dir.resolve().parent)}}
            NotebookClient(nb, timeout=900, kernel_name="python3", resources=where).execute()
            seconds = time.perf_counter() - start
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["irm_lens"] = {
        "sources_sha256": sources_sha256(nb),
        "run": run_dir.name,
        "host": host or "embedded",
    }
    write_text_atomic(notebook, nbformat.writes(nb) + "\n")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analyses.notebook", description=__doc__)
    parser.add_argument("run", type=Path, help="a trained run directory (irm-lens train)")
    parser.add_argument("--host", default=None, help="the host (default: the embedded one)")
    args = parser.parse_args(argv)
    seconds = execute(args.run, args.host)
    print(f"executed {NOTEBOOK} on {args.run} in {seconds:.0f} s (outputs written in place)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
