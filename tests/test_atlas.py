"""The per-run atlas: structure from real recordings, clear errors, a headless-browser render."""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import re
import subprocess

import numpy as np
import pytest
import torch

from irm_lens import IRM
from irm_lens.export import find_browser, save_figure
from irm_lens.plotting import TableError, atlas_figure
from irm_lens.record import GenerationSettings, record

PROMPTS = ["What is the capital of France?", "How many apples can fit in a basket?"]


@pytest.fixture(scope="module")
def recs(tiny_host):
    irm = IRM.for_host(tiny_host, seed=1, init="torch")
    settings = GenerationSettings(max_new_tokens=6)
    return record(tiny_host, irm, PROMPTS, mode="plain", settings=settings, progress=False)


def _decode(spec: dict) -> np.ndarray:
    shape = [int(n) for n in spec["shape"].split(",")]
    return np.frombuffer(base64.b64decode(spec["bdata"]), dtype="<f4").reshape(shape)


def test_structure(recs):
    pooled = torch.cat([r.outputs for r in recs]).abs().mean(dim=(0, 1))
    top8 = set(torch.topk(pooled, 8).indices.tolist())
    extra = int(torch.argmin(pooled))  # surely not among the top 8
    chosen = sorted(top8 | {extra})
    fig = atlas_figure(recs, run="demo", indices=8, highlight=[extra], max_tokens=10)

    assert list(fig.data[0].x) == chosen and fig.layout.xaxis.type == "category"
    assert list(fig.data[0].y) == list(recs[0].layers)
    assert [b.label.split(":")[0] for b in fig.layout.updatemenus[0].buttons] == ["p0", "p1"]
    steps = fig.layout.sliders[0].steps
    assert len(steps) == min(len(recs[0].tokens), 10) == 10
    assert steps[3].label.startswith("3 ")
    for k in (0, 3, 9):
        expected = recs[0].outputs[k][:, chosen].numpy()
        np.testing.assert_allclose(_decode(steps[k].args[0]["z"][0]), expected, rtol=1e-6)
    np.testing.assert_allclose(_decode(fig.data[0].z), recs[0].outputs[0][:, chosen], rtol=1e-6)
    # One slider per prompt, the first shown; the second prompt's button shows its own slider
    # (at token 0, with that token's values) and its colour range.
    assert [s.visible for s in fig.layout.sliders] == [True, False]
    assert len(fig.layout.sliders[1].steps) == min(len(recs[1].tokens), 10)
    start, layout = fig.layout.updatemenus[0].buttons[1].args
    assert layout == {
        "sliders[0].visible": False,
        "sliders[1].visible": True,
        "sliders[1].active": 0,
    }
    np.testing.assert_allclose(_decode(start["z"][0]), recs[1].outputs[0][:, chosen], rtol=1e-6)
    top = float(recs[1].outputs[:10][:, :, chosen].abs().max())
    assert start["zmax"] == [pytest.approx(top)] and start["zmin"] == [pytest.approx(-top)]
    hover = fig.data[0].hovertemplate
    assert all(word in hover for word in ("layer", "index", "%{z", "%{meta}"))
    assert fig.layout.title.text.startswith("demo: IRM output per token: 9 of 64 residual")
    assert "first 10 tokens" in fig.layout.title.text
    assert "all tokens" in atlas_figure(recs, run="x", max_tokens=None).layout.title.text
    # what the title says is highlighted is outlined on the map and named above it
    (box,) = fig.layout.shapes
    column = chosen.index(extra)
    assert (box.x0, box.x1, box.yref) == (column - 0.5, column + 0.5, "paper")
    assert [a.text for a in fig.layout.annotations] == [f"<b>{extra}</b>"]
    assert f"highlighted {extra}" in fig.layout.title.text


def test_bad_input(recs):
    with pytest.raises(TableError, match="recordings is empty"):
        atlas_figure([], run="r")
    other = dataclasses.replace(recs[1], layers=(9, 8, 7, 6))
    with pytest.raises(TableError, match="different layers"):
        atlas_figure([recs[0], other], run="r")
    with pytest.raises(TableError, match=r"highlight \[64\] out of range.*0\.\.63"):
        atlas_figure(recs, run="r", highlight=[64])
    with pytest.raises(TableError, match="indices must be >= 1"):
        atlas_figure(recs, run="r", indices=0)
    with pytest.raises(TableError, match=r"indices \[-1\] out of range"):
        atlas_figure(recs, run="r", indices=[3, -1])


# After Plotly drew the figure: take slider step K, then the second prompt's dropdown entry, hover
# a cell, and report what happened as attributes of <body> for --dump-dom.
_PROBE = """<script>
setTimeout(async () => {
  const out = {};
  try {
    const gd = document.querySelector('.plotly-graph-div');
    const step = gd.layout.sliders[0].steps[%d];
    await Plotly[step.method](gd, ...step.args);
    out.z = Array.from(gd._fullData[0].z, row => Array.from(row));
    Plotly.Fx.hover(gd, {xval: 2, yval: 1});  // category positions: 3rd index, 2nd layer
    out.hover = (document.querySelector('.hovertext') || {}).textContent || '';
    const button = gd.layout.updatemenus[0].buttons[1];
    await Plotly[button.method](gd, ...button.args);
    out.steps = gd._fullLayout.sliders.filter(s => s.visible).map(s => s.steps.length);
  } catch (e) { window.__errors.push('probe: ' + e); }
  for (const c of ['main-svg', 'slider-group', 'updatemenu-container', 'heatmaplayer'])
    out[c] = document.querySelectorAll('.' + c).length;
  out.errors = window.__errors;
  document.body.setAttribute('data-probe', JSON.stringify(out));
}, 500);
</script>"""
_TRAP = """<script>window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message)));
window.addEventListener('unhandledrejection', e => window.__errors.push(String(e.reason)));
const _err = console.error;
console.error = (...a) => { window.__errors.push(a.join(' ')); _err(...a); };
</script>"""


def test_renders_in_headless_browser(recs, tmp_path):
    browser = find_browser()
    if browser is None:
        pytest.skip("no Chromium/Chrome found (set BROWSER_PATH) for the headless render check")
    fig = atlas_figure(recs, run="demo", indices=12, max_tokens=None)
    page = save_figure(fig, tmp_path, "atlas", png=False)["html"]
    k = len(recs[0].tokens) - 1  # the last token: generation never fed it back
    text = page.read_text().replace("<head>", "<head>" + _TRAP, 1)
    probed = tmp_path / "probed.html"
    probed.write_text(text.replace("</body>", _PROBE % k + "</body>", 1))
    flags = "--no-sandbox --disable-gpu --disable-dev-shm-usage --disable-background-networking"
    flags += " --no-first-run --virtual-time-budget=10000 --headless --dump-dom"
    command = [browser, *flags.split(), probed.as_uri()]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False).stdout
    found = re.search(r"data-probe=\"([^\"]*)\"", dom)
    assert found, f"the probe never ran; DOM starts {dom[:300]!r}"
    out = json.loads(html.unescape(found.group(1)))
    assert out["errors"] == []
    assert out["main-svg"] >= 2 and out["heatmaplayer"] == 1
    assert out["slider-group"] == 1 and out["updatemenu-container"] == 1
    chosen = list(fig.data[0].x)
    np.testing.assert_allclose(out["z"], recs[0].outputs[k][:, chosen].numpy(), rtol=1e-6)
    layer, index = recs[0].layers[1], chosen[2]
    assert f"layer {layer}" in out["hover"] and f"index {index}" in out["hover"]
    assert out["hover"].startswith(f"token {k} ")
    assert out["steps"] == [len(recs[1].tokens)]  # the dropdown showed the second prompt's slider
