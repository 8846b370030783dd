"""Analysis functions on hand-built tensors, checked against numbers worked out by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from jaxtyping import TypeCheckError

from irm_lens.measures import (
    dominance_consistency,
    dominant_indices,
    heatmap,
    index_rank,
    layer_topk,
    sparsity_by_layer,
    striation,
    token_map,
    token_mask,
    topk_timing,
)

KINDS = ["prompt", "prompt", "generated", "generated"]
LAYERS = [3, 7]


@pytest.fixture()
def outputs() -> torch.Tensor:
    """[4 tokens, 2 inject slots (layers 3, 7), 3 residual indices]."""
    return torch.tensor(
        [
            [[1.0, -2.0, 0.0], [0.5, 0.0, 0.0]],
            [[3.0, 0.0, 0.0], [0.0, -4.0, 0.0]],
            [[0.0, 0.0, 5.0], [0.0, 0.0, 0.0]],
            [[0.0, 0.0, 0.0], [-6.0, 0.0, 5e-5]],
        ]
    )


def _column(frame: pd.DataFrame, name: str) -> list:
    return frame[name].tolist()


# maps


def test_token_mask_sets() -> None:
    kinds = ["prompt", "generated", "prompt", "generated", "generated"]
    assert token_mask(kinds, "paper", 1).tolist() == [True, True, True, False, False]
    assert token_mask(kinds, "paper", 2).tolist() == [True, True, True, True, False]
    assert token_mask(kinds, "paper", 0).tolist() == [True, False, True, False, False]
    assert token_mask(kinds, "prompt").tolist() == [True, False, True, False, False]
    assert token_mask(kinds, "generated").tolist() == [False, True, False, True, True]
    assert token_mask(kinds, "all").tolist() == [True] * 5


def test_heatmap_paper_token_set(outputs: torch.Tensor) -> None:
    frame = heatmap(outputs, KINDS, LAYERS, n_generated=1)  # tokens 0, 1, 2
    assert list(frame.columns) == ["layer", "index", "value", "stat", "n_tokens"]
    assert _column(frame, "layer") == [3, 3, 3, 7, 7, 7]
    assert _column(frame, "index") == [0, 1, 2, 0, 1, 2]
    expected = [4 / 3, -2 / 3, 5 / 3, 1 / 6, -4 / 3, 0.0]
    assert _column(frame, "value") == pytest.approx(expected)
    assert set(frame["stat"]) == {"mean"}
    assert set(frame["n_tokens"]) == {3}


def test_heatmap_absolute_and_all_tokens(outputs: torch.Tensor) -> None:
    frame = heatmap(outputs, KINDS, LAYERS, n_generated=1, absolute=True)
    assert _column(frame, "value") == pytest.approx([4 / 3, 2 / 3, 5 / 3, 1 / 6, 4 / 3, 0.0])
    assert set(frame["stat"]) == {"mean_abs"}
    # Default n_generated=10 keeps both generated tokens: all 4 tokens.
    full = heatmap(outputs, KINDS, LAYERS)
    assert set(full["n_tokens"]) == {4}
    assert full["value"].iloc[3] == pytest.approx(-1.375)  # layer 7, index 0: (0.5 - 6) / 4
    assert set(heatmap(outputs, KINDS, LAYERS, token_set="prompt")["n_tokens"]) == {2}


def test_token_map(outputs: torch.Tensor) -> None:
    frame = token_map(outputs, LAYERS, 3)
    assert list(frame.columns) == ["layer", "index", "value"]
    assert _column(frame, "value") == pytest.approx([0.0, 0.0, 0.0, -6.0, 0.0, 5e-5])
    with pytest.raises(ValueError, match=r"token=4 .*0\.\.3"):
        token_map(outputs, LAYERS, 4)


def test_bad_inputs_name_the_argument(outputs: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="kinds has 3 entries but outputs has 4 tokens"):
        heatmap(outputs, KINDS[:3], LAYERS)
    with pytest.raises(ValueError, match="token_set='paper_ish' is unknown"):
        heatmap(outputs, KINDS, LAYERS, token_set="paper_ish")
    with pytest.raises(ValueError, match="selects none of the 4 recorded tokens"):
        heatmap(outputs, ["prompt"] * 4, LAYERS, token_set="generated")
    with pytest.raises(ValueError, match="kinds contains \\['answer'\\]"):
        topk_timing(outputs, ["prompt", "answer", "prompt", "prompt"])
    with pytest.raises(ValueError, match="layers has 1 entries but outputs has 2 inject slots"):
        layer_topk(outputs, [3])
    with pytest.raises(ValueError, match="duplicates"):
        sparsity_by_layer(outputs, [3, 3])
    with pytest.raises(ValueError, match="n_generated must be >= 0"):
        token_mask(KINDS, "paper", -1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        topk_timing(outputs, KINDS, k=0)


# timing


def test_topk_timing_counts_by_hand(outputs: torch.Tensor) -> None:
    # |values| in order: 6 (token 3), 5 (token 2), 4 (token 1), 3 (token 1), 2 (token 0).
    frame = topk_timing(outputs, KINDS, k=5)
    assert list(frame.columns) == ["token", "kind", "count", "k_used"]
    assert _column(frame, "token") == [0, 1, 2, 3]
    assert _column(frame, "kind") == KINDS
    assert _column(frame, "count") == [1, 2, 1, 1]
    assert set(frame["k_used"]) == {5}
    assert _column(topk_timing(outputs, KINDS, k=3), "count") == [0, 1, 1, 1]


def test_topk_timing_k_larger_than_numel(outputs: torch.Tensor) -> None:
    frame = topk_timing(outputs, KINDS, k=1000)
    assert set(frame["k_used"]) == {24}
    assert _column(frame, "count") == [6, 6, 6, 6]


def test_layer_topk_by_hand(outputs: torch.Tensor) -> None:
    # 6 (layer 7), 5 (layer 3), 4 (layer 7), 3 (layer 3), 2 (layer 3).
    frame = layer_topk(outputs, LAYERS, k=5)
    assert list(frame.columns) == ["layer", "count", "k_used"]
    assert _column(frame, "layer") == [3, 7]
    assert _column(frame, "count") == [3, 2]
    assert _column(layer_topk(outputs, LAYERS, k=3), "count") == [1, 2]
    assert set(layer_topk(outputs, LAYERS, k=100)["k_used"]) == {24}


def test_sparsity_by_layer(outputs: torch.Tensor) -> None:
    frame = sparsity_by_layer(outputs, LAYERS, threshold=1e-4)
    assert list(frame.columns) == ["layer", "sparsity", "threshold"]
    # Layer 3: 8 of 12 values are zero. Layer 7: 8 zeros plus 5e-5, 9 of 12.
    assert _column(frame, "sparsity") == pytest.approx([8 / 12, 9 / 12])
    assert set(frame["threshold"]) == {1e-4}
    tighter = sparsity_by_layer(outputs, LAYERS, threshold=1e-5)
    assert _column(tighter, "sparsity") == pytest.approx([8 / 12, 8 / 12])


# striation


def _striated() -> torch.Tensor:
    profile = torch.tensor([1.0, 5.0, 2.0, 8.0, 3.0, 7.0, 4.0, 6.0])
    rows = profile.expand(3, 8)
    return torch.stack([rows, -rows])  # [2 tokens, 3 layers, 8 indices], |v| = profile


def test_striation_perfect_columns() -> None:
    stats = striation(_striated(), [0, 1, 2], n_permutations=200, seed=0)
    assert stats["index_share"] == pytest.approx(1.0)
    assert stats["layer_share"] == pytest.approx(0.0, abs=1e-12)
    assert stats["resid_share"] == pytest.approx(0.0, abs=1e-12)
    assert stats["cross_layer_corr"] == pytest.approx(1.0)
    assert stats["p_value"] == pytest.approx(1 / 201)
    assert stats["null_index_share_mean"] < 0.5
    assert stats["n_permutations"] == 200.0


def test_striation_layer_only() -> None:
    m = torch.tensor([[1.0] * 5, [3.0] * 5, [6.0] * 5])
    stats = striation(m[None], [0, 1, 2], n_permutations=20)
    assert stats["layer_share"] == pytest.approx(1.0)
    assert stats["index_share"] == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(stats["cross_layer_corr"])  # every profile is constant
    assert stats["p_value"] == pytest.approx(1.0)


def test_striation_shares_by_hand() -> None:
    # Mean |v| over the 2 tokens is M = [[1, 2, 3], [3, 4, 8]] (the signed mean is not).
    outputs = torch.tensor(
        [
            [[2.0, 4.0, 3.0], [3.0, 4.0, 8.0]],
            [[0.0, 0.0, -3.0], [-3.0, -4.0, -8.0]],
        ]
    )
    # g = 3.5; layer effects -1.5, 1.5; index effects -1.5, -0.5, 2;
    # SS_layer = 3 * 4.5 = 13.5, SS_index = 2 * 6.5 = 13, SS_resid = 3, SS_total = 29.5.
    stats = striation(
        outputs, [5, 9], n_permutations=10, baseline=torch.tensor([[[1.0, 2, 3]] * 2])
    )
    assert stats["index_share"] == pytest.approx(26 / 59)
    assert stats["layer_share"] == pytest.approx(27 / 59)
    assert stats["resid_share"] == pytest.approx(6 / 59)
    # Profiles centred: [-1, 0, 1] and [-2, -1, 3]: r = 5 / sqrt(2 * 14).
    assert stats["cross_layer_corr"] == pytest.approx(5 / math.sqrt(28))
    assert stats["baseline_index_share"] == pytest.approx(1.0)
    assert stats["baseline_cross_layer_corr"] == pytest.approx(1.0)
    # The signed mean map S = [[1, 2, 0], [0, 0, 0]]: g = 0.5, layer effects +-0.5, index effects
    # 0, 0.5, -0.5; SS_layer = 1.5, SS_index = 1, SS_total = 3.5.
    assert stats["signed_index_share"] == pytest.approx(2 / 7)
    assert stats["signed_layer_share"] == pytest.approx(3 / 7)
    assert set(stats) == {
        "index_share",
        "layer_share",
        "resid_share",
        "cross_layer_corr",
        "signed_index_share",
        "signed_layer_share",
        "p_value",
        "null_index_share_mean",
        "n_permutations",
        "baseline_index_share",
        "baseline_cross_layer_corr",
    }
    again = striation(outputs, [5, 9], n_permutations=10)
    assert again["p_value"] == stats["p_value"]  # same seed, same null draws
    assert "baseline_index_share" not in again


def test_striation_bad_inputs() -> None:
    with pytest.raises(ValueError, match="n_permutations must be >= 0"):
        striation(_striated(), [0, 1, 2], n_permutations=-1)
    with pytest.raises((ValueError, TypeCheckError)):
        striation(_striated(), [0, 1, 2], baseline=torch.ones(2, 3, 7))
    stats = striation(_striated(), [0, 1, 2], n_permutations=0)
    assert math.isnan(stats["p_value"])


# dominance


@pytest.fixture()
def dom_outputs() -> torch.Tensor:
    """[2 tokens, 2 layers, 4 indices]; sum |v| per index: 2, 4, 8, 4 (total 18)."""
    return torch.tensor(
        [
            [[1.0, 0.0, 4.0, -2.0], [0.0, 0.0, -4.0, 1.0]],
            [[1.0, 2.0, 0.0, 0.0], [0.0, -2.0, 0.0, 1.0]],
        ]
    )


def test_dominant_indices_by_hand(dom_outputs: torch.Tensor) -> None:
    table = dominant_indices(dom_outputs)
    assert list(table.columns) == ["index", "mean_abs", "share", "rank"]
    assert _column(table, "index") == [2, 1, 3, 0]  # indices 1 and 3 tie: lower index first
    assert _column(table, "rank") == [1, 2, 3, 4]
    assert _column(table, "mean_abs") == pytest.approx([2.0, 1.0, 1.0, 0.5])
    assert _column(table, "share") == pytest.approx([8 / 18, 4 / 18, 4 / 18, 2 / 18])
    top = dominant_indices(dom_outputs, top=2)
    assert _column(top, "index") == [2, 1]


def test_index_rank(dom_outputs: torch.Tensor) -> None:
    table = dominant_indices(dom_outputs)
    assert index_rank(table, 2) == 1
    assert index_rank(table, 3) == 3
    with pytest.raises(ValueError, match=r"index 4 is out of range.*0\.\.3"):
        index_rank(table, 4)
    with pytest.raises(ValueError, match="top=None"):
        index_rank(dominant_indices(dom_outputs, top=2), 0)


def _table(order: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"index": order, "rank": list(range(1, len(order) + 1))})


def test_dominance_consistency_by_hand() -> None:
    tables = {"a": _table([2, 1, 3, 0]), "b": _table([2, 3, 0, 1]), "c": _table([1, 2, 0, 3])}
    freq, overlap = dominance_consistency(tables, k=2)  # top-2 sets {1,2}, {2,3}, {1,2}
    assert list(freq.columns) == [
        "index",
        "top1_count",
        "topk_count",
        "n_runs",
        "top1_freq",
        "topk_freq",
    ]
    assert _column(freq, "index") == [2, 1, 3]
    assert _column(freq, "top1_count") == [2, 1, 0]
    assert _column(freq, "topk_count") == [3, 2, 1]
    assert set(freq["n_runs"]) == {3}
    assert _column(freq, "top1_freq") == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert _column(freq, "topk_freq") == pytest.approx([1.0, 2 / 3, 1 / 3])
    assert list(overlap.columns) == ["run_a", "run_b", "jaccard"]
    assert list(zip(overlap["run_a"], overlap["run_b"], strict=True)) == [
        ("a", "b"),
        ("a", "c"),
        ("b", "c"),
    ]
    assert _column(overlap, "jaccard") == pytest.approx([1 / 3, 1.0, 1 / 3])
    with pytest.raises(ValueError, match="has 4 rows but k=5"):
        dominance_consistency(tables, k=5)
    with pytest.raises(ValueError, match="tables is empty"):
        dominance_consistency({}, k=2)


def _original_names(n_prompt: int, n_tokens: int) -> list[str]:
    """The CSV names the original's ``tensor_logger.write_csv`` gives tokens 0..n-1."""
    names = []
    for token_number in range(1, n_tokens + 1):
        if n_prompt <= token_number:
            names.append(f"generated_token_{token_number - n_prompt + 1}.csv")
        else:
            names.append(f"prompt_token_{token_number}.csv")
    return names


@pytest.mark.parametrize(("n_prompt", "n_tokens"), [(3, 6), (9, 25), (1, 4), (12, 12)])
def test_file_order_is_the_originals_natural_sort(n_prompt, n_tokens):
    import re

    from irm_lens.measures.timing import file_order

    names = _original_names(n_prompt, n_tokens)
    natural = sorted(names, key=lambda n: (n.split("_")[0], int(re.findall(r"\d+", n)[0])))
    expected = [natural.index(name) for name in names]  # where each token lands on the x-axis
    assert file_order(n_prompt, n_tokens).tolist() == expected
    if n_prompt > 1 and n_tokens > n_prompt:  # BOS comes after every generated token
        assert file_order(n_prompt, n_tokens)[0] == n_tokens - n_prompt + 1


def test_file_order_checks_its_arguments():
    from irm_lens.measures.timing import file_order

    with pytest.raises(ValueError, match="n_prompt"):
        file_order(0, 5)
