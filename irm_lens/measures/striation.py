"""Vertical striations: do large IRM outputs line up by residual index across layers?

The statistic works on ``M = mean over tokens of |outputs|`` (``[inject, d_model]``), decomposed
two-way without replication: ``M = g + a_layer + b_index + r`` (and reports the same shares of
the signed mean map, which the paper's Fig. 2 draws). A striated map has most of its
variance in the index effects ``b`` and layer profiles that correlate with each other.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from jaxtyping import Float
from torch import Tensor

from irm_lens.measures.maps import Recorded, check_layers, check_outputs


def _mean_abs(outputs: Tensor) -> np.ndarray:
    return outputs.detach().abs().double().mean(dim=0).cpu().numpy()


def _sums_of_squares(m: np.ndarray) -> tuple[float, float, float, float]:
    """``(SS_index, SS_layer, SS_resid, SS_total)`` of ``m: [inject, d_model]``."""
    n_inject, d_model = m.shape
    g = m.mean()
    a = m.mean(axis=1) - g
    b = m.mean(axis=0) - g
    r = m - g - a[:, None] - b[None, :]
    ss_index = float(n_inject * np.sum(b**2))
    ss_layer = float(d_model * np.sum(a**2))
    ss_resid = float(np.sum(r**2))
    ss_total = float(np.sum((m - g) ** 2))
    return ss_index, ss_layer, ss_resid, ss_total


def _shares(m: np.ndarray) -> tuple[float, float, float]:
    ss_index, ss_layer, ss_resid, ss_total = _sums_of_squares(m)
    if ss_total == 0.0:  # a constant map has no variance to share out
        return float("nan"), float("nan"), float("nan")
    return ss_index / ss_total, ss_layer / ss_total, ss_resid / ss_total


def _cross_layer_corr(m: np.ndarray) -> float:
    """Mean Pearson correlation of index profiles over pairs of layers (constant rows skipped)."""
    centred = m - m.mean(axis=1, keepdims=True)
    norms = np.sqrt(np.sum(centred**2, axis=1))
    corrs = [
        float(centred[i] @ centred[j] / (norms[i] * norms[j]))
        for i, j in itertools.combinations(range(m.shape[0]), 2)
        if norms[i] > 0 and norms[j] > 0
    ]
    return float(np.mean(corrs)) if corrs else float("nan")


def striation(
    outputs: Recorded,
    layers: Sequence[int],
    *,
    n_permutations: int = 200,
    seed: int = 0,
    baseline: Float[Tensor, "base_token inject d_model"] | None = None,
) -> dict[str, float]:
    """Share of the mean ``|output|`` map explained by residual index, with a permutation test.

    Args:
        outputs: ``[token, inject, d_model]`` recorded IRM outputs of one prompt.
        layers: host layer of each inject slot (at least two for ``cross_layer_corr``).
        n_permutations: null draws; each shuffles the index order independently within every
            layer of ``M``, which keeps each layer's values but breaks alignment across layers.
        seed: seed of the ``numpy.random.Generator`` drawing the permutations.
        baseline: outputs of a reference IRM (e.g. untrained, same seed) with the same
            ``inject`` and ``d_model``; its shares are reported beside.

    Returns:
        A dict of floats:
        ``index_share``, ``layer_share``, ``resid_share``: sums of squares of the index effects,
        layer effects and residual of ``M``, each over the total (they add to 1; NaN for a
        constant ``M``);
        ``signed_index_share``, ``signed_layer_share``: the same shares of the signed mean map
        (the paper's Fig. 2 heatmaps);
        ``cross_layer_corr``: mean Pearson correlation of ``M[l]`` over pairs of distinct layers
        (pairs with a constant profile skipped; NaN with fewer than 2 layers);
        ``p_value``: ``(1 + #null index_share >= observed) / (1 + n_permutations)``;
        ``null_index_share_mean``: mean null index_share;
        ``n_permutations``: the number of null draws (NaN p-value and null mean when 0);
        with ``baseline``: ``baseline_index_share`` and ``baseline_cross_layer_corr``.
    """
    check_layers(outputs, layers)
    if n_permutations < 0:
        raise ValueError(f"n_permutations must be >= 0, got {n_permutations}.")
    m = _mean_abs(outputs)
    index_share, layer_share, resid_share = _shares(m)
    signed_index, signed_layer, _ = _shares(outputs.detach().double().mean(dim=0).cpu().numpy())

    rng = np.random.default_rng(seed)
    null = np.array([_shares(rng.permuted(m, axis=1))[0] for _ in range(n_permutations)])
    if n_permutations and not np.isnan(index_share):
        # A draw equal to the observation up to rounding counts as reaching it (conservative).
        reached = int(np.sum(null >= index_share - 1e-12 * max(1.0, abs(index_share))))
        p_value = (1 + reached) / (1 + n_permutations)
        null_mean = float(np.mean(null))
    else:
        p_value, null_mean = float("nan"), float("nan")

    result = {
        "index_share": index_share,
        "layer_share": layer_share,
        "resid_share": resid_share,
        "cross_layer_corr": _cross_layer_corr(m),
        "signed_index_share": signed_index,
        "signed_layer_share": signed_layer,
        "p_value": float(p_value),
        "null_index_share_mean": null_mean,
        "n_permutations": float(n_permutations),
    }
    if baseline is not None:
        check_outputs(baseline, "baseline")
        if baseline.shape[1:] != outputs.shape[1:]:
            raise ValueError(
                f"baseline has [inject, d_model] = {list(baseline.shape[1:])} but outputs has "
                f"{list(outputs.shape[1:])}: record the baseline IRM on the same host and layers."
            )
        m_base = _mean_abs(baseline)
        result["baseline_index_share"] = _shares(m_base)[0]
        result["baseline_cross_layer_corr"] = _cross_layer_corr(m_base)
    return result
