"""Is an IRM a fixed steering vector? Its outputs split into a constant part plus the rest.

An IRM reads the residual stream and writes one vector per injected layer at every token. If
what it writes barely depends on what it reads, a per-layer constant (a steering vector) does
the same job. ``constant_part`` is the mean output per layer over every token of every prompt;
``constant_share`` the fraction of the outputs' sum of squares it explains; ``steering_rule``
compares that share of trained IRMs with untrained ones. Outputs come as one
``[token, inject, d_model]`` tensor per prompt (prompts differ in length).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from irm_lens.analysis.mechanism import Verdict

STEERING = 0.8  # a steering vector: the constant explains at least this share
MOSTLY = 0.5
MIN_RUNS = 2
STEERING_VERDICTS = (
    "steering vector",
    "mostly constant",
    "as constant as untrained",
    "input-dependent",
    "not tested",
)


def _pooled(outputs: Sequence[Tensor]) -> Tensor:
    if not outputs:
        raise ValueError("needs the outputs of at least one prompt.")
    return torch.cat([o.double() for o in outputs], dim=0)


def constant_part(
    outputs: Sequence[Tensor],
) -> Float[Tensor, "inject d_model"]:
    """The mean output per injected layer over every token of every prompt."""
    return _pooled(outputs).mean(dim=0)


def constant_share(outputs: Sequence[Tensor]) -> float:
    """The fraction of the outputs' sum of squares the constant part explains: 1 when the IRM
    writes the same vectors at every token, 0 when its mean is zero."""
    pooled = _pooled(outputs)
    total = float(pooled.pow(2).sum())
    if total == 0:
        return float("nan")
    rest = float((pooled - pooled.mean(dim=0)).pow(2).sum())
    return 1.0 - rest / total


def constant_top(outputs: Sequence[Tensor]) -> int:
    """The residual index where the constant part is largest (|vector| summed over layers)."""
    return int(constant_part(outputs).abs().sum(dim=0).argmax())


def _median_ci(values: Sequence[float], seed: int = 0) -> tuple[float, float, float]:
    v = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    draws = np.median(v[rng.integers(0, len(v), (2000, len(v)))], axis=1)
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(np.median(v)), float(low), float(high)


def steering_rule(trained: Sequence[float], null: Sequence[float]) -> Verdict:
    """Is the trained IRMs' output a fixed steering vector? ``trained``: each aligned IRM's
    ``constant_share``; ``null``: the untrained IRMs' (an untrained MLP's biases give it a
    constant part too). With the median's 95 % CI above the null's largest share: *steering
    vector* when the CI is at least ``STEERING``, *mostly constant* when the median is at least
    ``MOSTLY``. *as constant as untrained* when the median is at least ``MOSTLY`` but the CI
    reaches the null (the constancy is the architecture's, not training's); *input-dependent*
    when the median is below ``MOSTLY``; *not tested* with fewer than ``MIN_RUNS`` runs."""
    values = [v for v in trained if np.isfinite(v)]
    null_max = max((v for v in null if np.isfinite(v)), default=float("nan"))
    if len(values) < MIN_RUNS:
        return Verdict("not tested", f"needs {MIN_RUNS} aligned IRMs; got {len(values)}", {})
    median, low, high = _median_ci(values)
    effects = {"median": median, "low": low, "high": high, "null max": null_max}
    text = (
        f"The constant part explains {median:.2f} [{low:.2f}, {high:.2f}] of the outputs' sum "
        f"of squares over {len(values)} aligned IRMs (untrained IRMs: at most {null_max:.2f})"
    )
    if median < MOSTLY:
        return Verdict("input-dependent", text, effects)
    if np.isfinite(null_max) and low <= null_max:
        return Verdict("as constant as untrained", text, effects)
    return Verdict("steering vector" if low >= STEERING else "mostly constant", text, effects)
