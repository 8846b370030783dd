"""Benchmark: one PNG through a browser started for it vs through the kept browser.

``irm_lens.export.save_figure`` keeps one browser per process (kaleido's sync server) after the
first PNG. Timed here, in one run on the same figure (a 30 x 576 heat map, the
embedded host's Fig. 2 size, at the pipeline's 1100 x 650 x 2): ``fig.to_image`` with no server
running (plotly starts and stops a browser per call) against ``save_figure`` with the server
kept. Target: the kept browser at least 2x faster per figure.

    .venv/bin/python -m benchmarks.bench_export [--repeats 5]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from benchmarks._setup import int_options
from benchmarks._timing import interleaved_medians
from irm_lens.export import find_browser, keep_browser, save_figure


def main() -> None:
    args = int_options(__doc__, repeats=5)
    if find_browser() is None:
        raise SystemExit("bench_export: no Chromium-family browser; run `make browser`.")
    z = np.random.default_rng(0).standard_normal((30, 576))
    fig = go.Figure(go.Heatmap(z=z, colorscale="RdBu", zmid=0))
    with tempfile.TemporaryDirectory() as tmp:

        def fresh() -> None:
            keep_browser(False)
            fig.to_image(format="png", width=1100, height=650, scale=2.0)

        def kept() -> None:
            keep_browser(True)
            save_figure(fig, Path(tmp), "kept", width=1100, height=650, scale=2.0)

        # interleaving stops and restarts the server, so time `kept` on its own run of calls
        medians = interleaved_medians({"browser per PNG": fresh}, repeats=args.repeats)
        keep_browser(True)
        save_figure(fig, Path(tmp), "warm", width=1100, height=650, scale=2.0)
        medians |= interleaved_medians({"kept browser": kept}, repeats=args.repeats, warmup=0)
    keep_browser(False)
    for name, seconds in medians.items():
        print(f"{name:>16}: {seconds:.2f} s per PNG (median of {args.repeats})")
    ratio = medians["browser per PNG"] / medians["kept browser"]
    print(f"kept browser: {ratio:.1f}x faster per PNG (target >= 2x)")


if __name__ == "__main__":
    main()
