"""Figure export: HTML always; PNG through kaleido and a real browser, or a clear error."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest

from irm_lens import export as _export
from irm_lens.export import ExportError, find_browser, keep_browser, save_figure


def _figure() -> go.Figure:
    fig = go.Figure(go.Heatmap(z=[[0, 1], [1, 0]], colorscale="RdBu", zmid=0))
    fig.update_layout(title="export check", xaxis_title="residual index", yaxis_title="layer")
    return fig


def test_png_and_html_rendered(tmp_path):
    if find_browser() is None:
        pytest.skip("no Chromium: run `make browser` (PNG export is then impossible here)")
    written = save_figure(_figure(), tmp_path / "fig", width=300, height=200, scale=1.0)
    png = written["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(png[16:20], "big")
    height = int.from_bytes(png[20:24], "big")
    assert (width, height) == (300, 200)
    html = written["html"].read_text()
    assert "plotly" in html.lower() and "export check" in html
    assert 'src="https://cdn.plot.ly' not in html and len(html) > 1_000_000  # embedded plotly.js
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == ["figure.html", "figure.png"]


def test_missing_browser_is_a_clear_error_and_html_survives(tmp_path, monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-such-browser"))
    with pytest.raises(ExportError, match="apt-get install chromium") as info:
        save_figure(_figure(), tmp_path / "fig")
    assert "figure.html" in str(info.value)
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == ["figure.html"]


def test_unwritable_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ExportError, match="Cannot create the figure directory"):
        save_figure(_figure(), blocker / "fig", png=False)


def test_the_kept_browser_renders_the_same_png_as_a_fresh_one(tmp_path):
    if find_browser() is None:
        pytest.skip("no Chromium: run `make browser` (PNG export is then impossible here)")
    fig = _figure()
    keep_browser(False)
    fresh = fig.to_image(format="png", width=300, height=200, scale=1.0)  # a browser per call
    first = save_figure(fig, tmp_path / "a", width=300, height=200, scale=1.0)["png"]
    assert _export._server["running"]  # the first PNG started the kept browser
    second = save_figure(fig, tmp_path / "b", width=300, height=200, scale=1.0)["png"]
    assert first.read_bytes() == second.read_bytes() == fresh
    keep_browser(False)
    assert not _export._server["running"]


def test_a_browser_that_stops_answering_is_replaced_not_waited_on(monkeypatch):
    import threading

    export = _export
    calls, forgotten = [], []
    release = threading.Event()

    def render(fig, width, height, scale):
        calls.append(1)
        if len(calls) == 1:
            release.wait(30)  # the first browser never answers
        return b"\x89PNG"

    monkeypatch.setattr(export, "_render", render)
    monkeypatch.setattr(export, "_forget_server", lambda: forgotten.append(1))
    monkeypatch.setattr(export, "PNG_TIMEOUT_S", 0.5)
    assert export._to_png(go.Figure(), 100, 100, 1.0) == b"\x89PNG"
    assert len(calls) == 2 and forgotten == [1]
    release.set()
