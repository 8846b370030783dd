"""The statistics on planted data find what was planted, and find nothing in pure noise."""

from __future__ import annotations

import torch

from irm_lens.measures import dominant_indices, index_rank, striation, topk_timing

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


def test_one_call_analyses_a_run_of_planted_prompts():
    """``analyze_recordings`` (behind ``irm-lens analyze`` and ``make figures``) finds the planted
    index in every table and pools the prompts in their order."""
    from types import SimpleNamespace

    import pandas as pd
    import pytest

    from irm_lens.measures.recorded import TABLES, analyze_recordings, paper_heatmap, pooled

    prompts = []
    for i, n_prompt in enumerate((6, 12)):
        outputs = _noise(10 + i)
        outputs[:, :, PLANTED] += 6.0
        kinds = ["prompt"] * n_prompt + ["generated"] * (N_TOKENS - n_prompt)
        prompts.append(
            SimpleNamespace(
                outputs=outputs, kinds=kinds, name=f"p{i}", layers=list(range(N_LAYERS))
            )
        )
    tables = analyze_recordings(prompts, k=100, n_permutations=50)
    assert tuple(tables) == TABLES
    assert int(tables["dominant_indices"]["index"].iloc[0]) == PLANTED
    assert tables["striation"]["index_share"].iloc[0] > 0.5
    assert tables["topk_timing"]["prompt"].unique().tolist() == ["p0", "p1"]
    assert tables["topk_timing"].groupby("prompt")["count"].sum().tolist() == [100, 100]
    heat = paper_heatmap(prompts)  # prompt tokens + first 10 generated, per prompt
    top = heat.loc[heat["value"].idxmax()]
    assert int(top["index"]) == PLANTED and len(heat) == N_LAYERS * D_MODEL
    expected = torch.cat([prompts[0].outputs[:16], prompts[1].outputs[:22]]).mean(0)
    got = torch.tensor(heat.sort_values(["layer", "index"])["value"].to_numpy()).view(N_LAYERS, -1)
    assert torch.allclose(got.double(), expected.double(), atol=1e-5)
    assert pooled(prompts).shape == (2 * N_TOKENS, N_LAYERS, D_MODEL)
    only = analyze_recordings(prompts, tables=("striation", "heatmap"), n_permutations=50)
    assert tuple(only) == ("heatmap", "striation")  # in TABLES order, nothing else computed
    pd.testing.assert_frame_equal(only["striation"], tables["striation"])
    with pytest.raises(ValueError, match="empty"):
        analyze_recordings([])
    with pytest.raises(ValueError, match="unknown"):
        analyze_recordings(prompts, tables=("heatmaps",))
