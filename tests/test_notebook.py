"""analyses/explore.ipynb: it runs headless on the tiny host, and is committed without outputs."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "analyses" / "explore.ipynb"
_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"


def _use_this_python_as_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``python3`` kernelspec running ``sys.executable``, found before any other one.

    Jupyter searches ``JUPYTER_PATH`` first, so the notebook runs in this virtualenv whatever
    kernels the user or the system has installed; runtime files stay under ``tmp_path``.
    """
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (irm_lens tests)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))


def _outputs(nb: nbformat.NotebookNode) -> tuple[str, str, set[str]]:
    """All printed text, all ``text/plain`` results, and every output MIME type."""
    printed, results, mimes = [], [], set()
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream" and out.name == "stdout":
                printed.append(out.text)
            elif out.output_type in ("execute_result", "display_data"):
                mimes.update(out.data)
                results.append(out.data.get("text/plain", ""))
    return "".join(printed), "\n".join(results), mimes


def _number(pattern: str, text: str) -> float:
    found = re.search(pattern.replace("NUM", _NUMBER), text)
    assert found, f"no line matching {pattern!r} in the notebook's output:\n{text}"
    return float(found.group(1))


@pytest.mark.slow
def test_notebook_runs_on_the_tiny_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _use_this_python_as_kernel(tmp_path, monkeypatch)
    # The kernel inherits this environment, IRM_LENS_CACHE (set by conftest) included.
    monkeypatch.setenv("IRM_LENS_HOST", "tiny-random-llama")
    monkeypatch.delenv("IRM_LENS_RUN", raising=False)  # the untrained-IRM path
    monkeypatch.setenv("OMP_NUM_THREADS", "2")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError if any cell fails

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    printed, results, mimes = _outputs(nb)

    assert "n_layers=4  d_model=64" in printed
    assert "IRM: UNTRAINED" in printed
    assert "IRM writes: blocks.0.hook_attn_out" in printed
    assert "after the with block: none" in printed  # attach removed its hooks

    assert _number(r"max \|logit diff\| with IRM: NUM", printed) > 0
    injected = _number(r"max \|injected vector\| = NUM", printed)
    exactness = _number(
        r"residual after attention minus injected vector: max \|diff\| = NUM", printed
    )
    assert injected > 0
    assert exactness <= 1e-3 * injected + 1e-6

    top = int(_number(r"IRM's top residual index: NUM", printed))
    assert 0 <= top < 64
    kl = _number(rf"KL\(IRM \|\| IRM with index {top} zeroed\), next token: NUM nats", printed)
    assert math.isfinite(kl) and kl >= 0  # float64: no negative rounding noise
    loss = _number(rf"prompt loss with residual index {top} zeroed: NUM nats/token", printed)
    assert math.isfinite(loss) and loss > 0

    assert "application/vnd.plotly.v1+json" in mimes  # the layer-by-layer figure
    assert "carried" in results and "injected_rms" in results  # irm_index_propagation
    assert "promoted" in results and "suppressed" in results  # direct_logit_effect
    assert "top1_prob" in results  # norm_mediated_effect


def test_committed_notebook_has_no_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [], "clear the notebook's outputs before committing"
        assert cell.execution_count is None, "clear the notebook's execution counts"
