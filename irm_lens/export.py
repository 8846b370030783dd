"""Writing plotly figures to disk: interactive HTML always, static PNG through kaleido.

The HTML embeds plotly.js, so it opens offline.

kaleido renders PNGs with a Chromium-family browser. ``make install`` installs Debian's
``chromium`` when none is present; ``BROWSER_PATH`` points kaleido at another one. Without a
browser, PNG export raises ``ExportError`` with what to do, after the HTML has been written.
The first PNG of a process starts one browser (kaleido's sync server) that every later PNG
reuses until the process exits: about 4x less time per figure than a browser per figure
(``benchmarks/bench_export.py``), the same pixels.
"""

from __future__ import annotations

import atexit
import os
import shutil
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from irm_lens.errors import IrmLensError
from irm_lens.files import atomic_path, write_text_atomic

_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


class ExportError(IrmLensError, RuntimeError):
    """A figure that could not be written in a requested format."""


_server = {"running": False}


def keep_browser(keep: bool = True) -> None:
    """Start (``keep``) or stop kaleido's browser server for this process. ``save_figure`` starts
    it on the first PNG; it is stopped at exit. Stop it before forking a process that renders."""
    import kaleido

    if keep and not _server["running"]:
        kaleido.start_sync_server(plotlyjs=pio.defaults.plotlyjs or None, silence_warnings=True)
        if not _server.get("registered"):
            atexit.register(keep_browser, False)
            _server["registered"] = True
    elif not keep and _server["running"]:
        kaleido.stop_sync_server(silence_warnings=True)
    _server["running"] = keep


PNG_TIMEOUT_S = 180.0
"""How long one PNG may take before the kept browser is given up for a fresh one."""


def _server_alive() -> bool:
    """Whether kaleido's kept-browser thread still runs: it dies when the browser fails (a
    start under heavy load, a crash), and a call to a dead server would wait forever."""
    from kaleido._sync_server import GlobalKaleidoServer

    thread = getattr(GlobalKaleidoServer(), "_thread", None)
    return thread is not None and thread.is_alive()


def _forget_server() -> None:
    """Drop a kept browser that stopped answering, so the next PNG starts a new one (its
    thread is a daemon; a stuck one is left behind, not joined)."""
    from kaleido._sync_server import GlobalKaleidoServer

    server = GlobalKaleidoServer()
    server._initialized = False  # kaleido's singleton: its close() would join a stuck thread
    _server["running"] = False


def _render(fig: go.Figure, width: int, height: int, scale: float) -> bytes:
    keep_browser()
    with warnings.catch_warnings():  # plotly passes its plotly.js path; the server has it
        warnings.filterwarnings("ignore", "The kopts argument is ignored", UserWarning)
        return fig.to_image(format="png", width=width, height=height, scale=scale)


def _to_png(fig: go.Figure, width: int, height: int, scale: float) -> bytes:
    """The figure as PNG bytes through the kept browser, watched: a browser that dies or stops
    answering is replaced by a fresh one once, then the error is raised."""
    for attempt in (1, 2):
        result: dict[str, Any] = {}

        def work(result: dict[str, Any] = result) -> None:
            try:
                result["png"] = _render(fig, width, height, scale)
            except BaseException as exc:  # re-raised in the caller's thread
                result["error"] = exc

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        deadline = time.monotonic() + PNG_TIMEOUT_S
        while worker.is_alive() and time.monotonic() < deadline:
            worker.join(0.5)
            if worker.is_alive() and _server["running"] and not _server_alive():
                break  # the browser's thread died: this call would wait forever
        if "png" in result:
            return bytes(result["png"])
        if "error" in result and attempt == 2:
            raise result["error"]
        _forget_server()
    raise TimeoutError(f"no PNG from the browser within {PNG_TIMEOUT_S:.0f} s, twice")


def figure_png(fig: go.Figure, width: int = 1000, height: int = 500, scale: float = 1.0) -> bytes:
    """The figure as PNG bytes, rendered by the headless browser ``save_figure`` uses (for a
    static copy beside an interactive one, e.g. in a notebook: GitHub draws no Plotly)."""
    require_browser("HTML only")
    return _to_png(fig, width, height, scale)


def find_browser() -> str | None:
    """The browser kaleido will use: ``$BROWSER_PATH`` if set, else the first on ``PATH``."""
    override = os.environ.get("BROWSER_PATH")
    if override:
        return override if os.access(override, os.X_OK) else None
    for name in _BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def require_browser(option: str = "--no-png") -> None:
    """Refuse PNG output before any work when no browser can render it (``option`` skips PNGs)."""
    if find_browser() is None:
        raise ExportError(
            "PNG export needs a Chromium-family browser for kaleido, and none was found (looked "
            f"for $BROWSER_PATH and {', '.join(_BROWSERS)} on PATH). Install one (`apt-get "
            f"install chromium`, or `make browser`), set BROWSER_PATH, or pass {option} for "
            "interactive HTML only."
        )


def save_figure(
    fig: go.Figure,
    directory: str | os.PathLike[str],
    stem: str = "figure",
    *,
    png: bool = True,
    width: int = 1100,
    height: int = 650,
    scale: float = 2.0,
    shared_plotlyjs: bool = False,
) -> dict[str, Path]:
    """Write ``fig`` as ``<stem>.html`` (and ``<stem>.png``) in ``directory``, atomically.

    Args:
        shared_plotlyjs: reference one ``plotly.min.js`` beside the HTML (written once) instead
            of embedding its ~4.8 MB in every file: for directories of many HTML figures.

    Returns:
        ``{"html": path, "png": path}`` for the files written.

    Raises:
        ExportError: PNG requested but no browser is available (the HTML is still written).
    """
    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"Cannot create the figure directory {out}: {exc}.") from exc
    html_path = out / f"{stem}.html"
    if shared_plotlyjs:
        library = out / "plotly.min.js"
        if not library.exists():
            write_text_atomic(library, get_plotlyjs())
        html = fig.to_html(include_plotlyjs="directory", full_html=True)
    else:
        html = fig.to_html(include_plotlyjs=True, full_html=True)
    write_text_atomic(html_path, html)
    written = {"html": html_path}
    if not png:
        return written
    browser = find_browser()
    if browser is None:
        raise ExportError(
            f"PNG export of {out / (stem + '.png')} needs a Chromium-family browser for kaleido, "
            "and none was found (looked for $BROWSER_PATH and "
            f"{', '.join(_BROWSERS)} on PATH). Install one (`apt-get install chromium`, or "
            f"`make browser`) or set BROWSER_PATH. The interactive HTML was written: {html_path}."
        )
    os.environ.setdefault("BROWSER_PATH", browser)
    png_path = out / f"{stem}.png"
    try:
        data = _to_png(fig, width, height, scale)
    except Exception as exc:  # kaleido/choreographer raise many types; report them all the same way
        raise ExportError(
            f"kaleido could not render {png_path} with {browser}: {type(exc).__name__}: {exc}. "
            f"The interactive HTML was written: {html_path}."
        ) from exc
    with atomic_path(png_path) as tmp:
        tmp.write_bytes(data)
    written["png"] = png_path
    return written
