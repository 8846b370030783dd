"""The statistics on planted data find what was planted, and find nothing in pure noise."""

from __future__ import annotations

import torch

from irm_lens.analysis import dominant_indices, index_rank, striation, topk_timing

N_TOKENS, N_LAYERS, D_MODEL, PLANTED = 40, 8, 96, 37


def _noise(seed: int) -> torch.Tensor:
    return torch.randn(N_TOKENS, N_LAYERS, D_MODEL, generator=torch.Generator().manual_seed(seed))


def test_planted_striation_and_early_timing_are_found():
    outputs = _noise(0)
    outputs[:, :, PLANTED] += 6.0  # one index large at every layer: a vertical striation
    outputs[:3] *= 4.0  # the first tokens carry the largest values
    kinds = ["prompt"] * 10 + ["generated"] * (N_TOKENS - 10)
    stats = striation(outputs, list(range(N_LAYERS)), n_permutations=200, seed=1)
    assert stats["index_share"] > 0.5 and stats["p_value"] < 0.01
    assert index_rank(dominant_indices(outputs), PLANTED) == 1
    timing = topk_timing(outputs, kinds, k=200)
    assert timing["count"].iloc[:3].sum() > 0.9 * 200


def test_pure_noise_shows_no_striation():
    p_values = [
        striation(_noise(seed), list(range(N_LAYERS)), n_permutations=200, seed=seed)["p_value"]
        for seed in range(5)
    ]
    assert min(p_values) > 0.01  # none significant
    assert sum(p > 0.05 for p in p_values) >= 4
