"""An interactive atlas of recorded IRM outputs: one token's ``[layer, residual index]`` map.

A single heat map trace shows one token of one prompt. Every prompt has a slider over its tokens
whose steps swap that token's values in (``restyle``); all sliders are in the layout, one visible.
A dropdown over the prompts (``update``) shows the prompt's slider and its first token, with the
prompt's symmetric colour range. Values travel as base64 float32 typed arrays (plotly.js decodes
them in ``restyle`` too): about 7 bytes a value in the HTML (plotly writes each "/" as a
6-character escape), each value once (a prompt's first token twice). Only a subset of residual
indices is shown (a real host has hundreds to thousands), named by their real numbers on a
category x axis. Writing the figure is ``irm_lens.export.save_figure``'s job.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go
import torch

from irm_lens.plotting.base import TableError

if TYPE_CHECKING:
    from irm_lens.record import Recording

DIVERGING = "RdBu_r"
_HOVER = (
    "token %{meta}<br>injected layer %{y}<br>residual index %{x}<br>"
    "IRM output %{z:.4g}<extra></extra>"
)


def _typed(z: np.ndarray) -> dict[str, str]:
    """plotly.js typed-array spec of a 2-D float32 array (what plotly.py writes for numpy data)."""
    data = np.ascontiguousarray(z, dtype="<f4")
    return {
        "dtype": "f4",
        "bdata": base64.b64encode(data.tobytes()).decode("ascii"),
        "shape": ",".join(str(n) for n in data.shape),
    }


def _text(text: str) -> str:
    """``text`` as plotly displays it literally: labels are pseudo-HTML, and slider and menu
    labels drop ``%{...}``."""
    return html.escape(text, quote=False).replace("%{", "%&#123;")


def _label(position: int, token: str) -> str:
    return _text(f"{position} {token!r}")


def _choose(
    recordings: Sequence[Recording], indices: int | Sequence[int], highlight: Sequence[int]
) -> tuple[list[int], str]:
    """The residual indices to show (sorted) and a phrase saying how they were chosen."""
    d_model = recordings[0].outputs.shape[-1]
    listed = [] if isinstance(indices, int) else list(indices)
    for name, values in (("highlight", highlight), ("indices", listed)):
        bad = [int(i) for i in values if not 0 <= int(i) < d_model]
        if bad:
            raise TableError(f"{name} {bad} out of range: residual indices run 0..{d_model - 1}.")
    extra = sorted({int(i) for i in highlight})
    if isinstance(indices, int):
        if indices < 1:
            raise TableError(f"indices must be >= 1 (how many residual indices), got {indices}.")
        pooled = torch.cat([r.outputs.float() for r in recordings]).abs().mean(dim=(0, 1))
        top = torch.topk(pooled, min(indices, d_model)).indices.tolist()
        chosen = sorted(set(top) | set(extra))
        how = f"{min(indices, d_model)} largest mean |output|"
    else:
        chosen = sorted({int(i) for i in listed} | set(extra))
        if not chosen:
            raise TableError("indices is an empty sequence; give at least one residual index.")
        how = "chosen"
    if extra:
        how += f", highlighted {', '.join(map(str, extra))}"
    return chosen, f"{len(chosen)} of {d_model} residual indices ({how})"


def _check(recordings: Sequence[Recording], max_tokens: int | None) -> None:
    if not recordings:
        raise TableError("recordings is empty: there is nothing to plot.")
    layers, d_model = recordings[0].layers, recordings[0].outputs.shape[-1]
    for r in recordings:
        if r.layers != layers:
            raise TableError(
                f"recordings have different layers: {recordings[0].name!r} {list(layers)}, "
                f"{r.name!r} {list(r.layers)}; plot recordings of one IRM together."
            )
        shape = (len(r.tokens), len(layers), d_model)
        if tuple(r.outputs.shape) != shape or not r.tokens:
            raise TableError(
                f"recording {r.name!r} has outputs {tuple(r.outputs.shape)} for "
                f"{len(r.tokens)} tokens and layers {list(layers)}; expected {shape}, tokens > 0."
            )
    if max_tokens is not None and max_tokens < 1:
        raise TableError(f"max_tokens must be >= 1 or None, got {max_tokens}.")


def _prompt_slider(
    rec: Recording, n: int, columns: torch.Tensor, *, first: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One prompt's first frame (restyle arguments) and its token slider (first n tokens)."""
    z = rec.outputs[:n][:, :, columns].float().numpy().astype(np.float32)
    top = float(np.abs(z).max()) or 1.0  # an all-zero prompt still needs a colour range
    restyles: list[dict[str, Any]] = [
        {"z": [_typed(z[k])], "meta": [f"{_label(k, rec.tokens[k])} ({rec.kinds[k]})"]}
        for k in range(n)
    ]
    steps = [
        {"method": "restyle", "label": _label(k, rec.tokens[k]), "args": [restyles[k], [0]]}
        for k in range(n)
    ]
    slider = {
        "visible": first,
        "active": 0,
        "steps": steps,
        "currentvalue": {"prefix": f"{rec.name} token ", "font": {"size": 14}},
        "font": {"size": 10},  # plotly thins step labels that would overlap
        "pad": {"t": 40},
        "len": 1.0,
        "x": 0.0,
    }
    return {**restyles[0], "zmin": [-top], "zmax": [top]}, slider


def atlas_figure(
    recordings: Sequence[Recording],
    *,
    run: str,
    indices: int | Sequence[int] = 96,
    highlight: Sequence[int] = (),
    max_tokens: int | None = 64,
) -> go.Figure:
    """Interactive per-token heat map of recorded IRM outputs, with a token slider and a prompt
    dropdown.

    Args:
        recordings: ``irm_lens.record.record`` (or ``load_recordings``) output; one IRM.
        run: the run's name, for the title.
        indices: an int N shows the N residual indices with the largest mean |output| over all
            tokens, layers and recordings (every token, not only the shown ones); a sequence
            shows exactly those indices. Either way the ``highlight`` indices are added.
        highlight: residual indices always shown (e.g. known massive dimensions).
        max_tokens: show the first ``max_tokens`` tokens of each prompt (None: all).

    Returns:
        A ``go.Figure``: y = injected host layer, x = residual index (category labels), colour =
        signed output on a diverging scale symmetric around 0 per prompt; hover names the
        token, layer, index and value.

    Raises:
        TableError: no recordings, recordings of different layers or shapes, an index outside
            ``0..d_model-1``, ``indices < 1`` or ``max_tokens < 1``.
    """
    _check(recordings, max_tokens)
    chosen, shown = _choose(recordings, indices, highlight)
    layers = list(recordings[0].layers)
    sliders: list[dict[str, Any]] = []
    starts: list[dict[str, Any]] = []
    labels: list[str] = []
    truncated = False
    for rec in recordings:
        n = len(rec.tokens) if max_tokens is None else min(len(rec.tokens), max_tokens)
        truncated |= n < len(rec.tokens)
        start, slider = _prompt_slider(rec, n, torch.tensor(chosen), first=not sliders)
        starts.append(start)
        sliders.append(slider)
        prompt = rec.prompt if len(rec.prompt) <= 40 else rec.prompt[:40] + "…"
        labels.append(_text(f"{rec.name}: {prompt}"))
    # Every prompt's slider is in the layout once; a dropdown entry shows its own at token 0.
    buttons = []
    for p, (start, label) in enumerate(zip(starts, labels, strict=True)):
        shown_sliders = {f"sliders[{q}].visible": q == p for q in range(len(sliders))}
        layout = {**shown_sliders, f"sliders[{p}].active": 0}
        buttons.append({"method": "update", "label": label, "args": [start, layout]})
    first = {key: value[0] for key, value in starts[0].items()}  # the z spec plotly.py keeps
    trace = go.Heatmap(
        x=chosen,
        y=layers,
        colorscale=DIVERGING,
        colorbar={"title": {"text": "IRM output"}},
        hovertemplate=_HOVER,
        **first,
    )
    tokens = f"first {max_tokens} tokens" if truncated else "all tokens"
    menu = {"buttons": buttons, "active": 0, "direction": "down"}
    menu.update(x=0.0, xanchor="left", y=1.02, yanchor="bottom")
    fig = go.Figure(trace)
    fig.update_layout(
        title={"text": f"{run}: IRM output per token: {shown}, {tokens}", "y": 0.97},
        template="plotly_white",
        height=max(520, 16 * len(layers) + 330),
        margin={"t": 130},
        sliders=sliders,
        updatemenus=[menu],
    )
    fig.update_xaxes(title_text="residual index", type="category")
    fig.update_yaxes(title_text="injected layer", type="category")
    for index in sorted({int(i) for i in highlight}):  # outlined, and named above the map
        column = chosen.index(index)
        fig.add_shape(
            type="rect",
            xref="x",
            yref="paper",
            x0=column - 0.5,
            x1=column + 0.5,
            y0=0,
            y1=1,
            line={"color": "black", "width": 2},
            fillcolor="rgba(0,0,0,0)",
        )
        fig.add_annotation(
            x=column,
            y=1.0,
            xref="x",
            yref="paper",
            text=f"<b>{index}</b>",
            showarrow=False,
            yanchor="bottom",
        )
    return fig
