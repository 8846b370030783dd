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
    # the IRM by name in the cache, and as a component of its own that still sums to the logit
    assert "the IRM's own hook points in the cache" in printed and "hook_irm_out" in printed
    total = _number(r"direct effects on the logit of .* sum to NUM;", printed)
    logit = _number(r"; the logit is NUM", printed)
    assert abs(total - logit) <= 1e-3 * max(1.0, abs(logit))

    top = int(_number(r"IRM's top residual index: NUM", printed))
    assert 0 <= top < 64
    kl = _number(rf"KL\(IRM \|\| IRM with index {top} zeroed\), next token: NUM nats", printed)
    assert math.isfinite(kl) and kl >= 0  # float64: no negative rounding noise
    loss = _number(rf"prompt loss with residual index {top} zeroed: NUM nats/token", printed)
    assert math.isfinite(loss) and loss > 0

    assert "application/vnd.plotly.v1+json" in mimes  # the layer-by-layer figure
    assert "image/png" in mimes or "(no static copy:" in printed  # its static copy
    assert "carried" in results and "injected_rms" in results  # irm_index_propagation
    assert "promoted" in results and "suppressed" in results  # direct_logit_effect
    assert "top1_prob" in results  # norm_mediated_effect


def test_committed_notebook_shows_a_trained_run() -> None:
    """Committed with the outputs of one top-to-bottom run on a trained IRM of the embedded host
    (``make notebook RUN=...``), for the sources it holds now, and no machine path in them."""
    from analyses.notebook import sources_sha256

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.kernelspec.name == "python3"
    stamp = nb.metadata.get("irm_lens", {})
    assert stamp.get("sources_sha256") == sources_sha256(nb), (
        "the notebook's sources changed since its outputs were made: run make notebook RUN=..."
    )
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    printed, results, mimes = _outputs(nb)
    assert "n_layers=30  d_model=576" in printed  # the embedded host
    assert f"IRM: trained, loaded from {stamp['run']}" in printed and "prompts: chat" in printed
    assert "blocks.0.hook_irm_out" in printed
    total = _number(r"direct effects on the logit of .* sum to NUM;", printed)
    assert abs(total - _number(r"; the logit is NUM", printed)) < 1e-2
    assert "application/vnd.plotly.v1+json" in mimes and "top1_prob" in results
    pngs = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(pngs) == 2  # each figure's static copy, which GitHub draws
    for text in (printed, results):
        assert not re.search(r"(/root/|/home/|/tmp/|\\.cache)", text), "a machine path"
