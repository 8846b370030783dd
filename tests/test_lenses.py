"""Lenses: LM-head decoding with hand-checkable planted cases, clamping, bad input."""

from __future__ import annotations

import pytest
import torch

from irm_lens import encode
from irm_lens.inject import mlp_post_hook
from irm_lens.lenses import (
    LensError,
    clamp_neuron,
    decode_directions,
    decode_index,
    decode_neurons,
    decoding_matrix,
    top_tokens_all,
)


def test_decoding_matrix_is_gain_times_unembedding(tiny_host):
    gain = tiny_host.ln_final.weight.detach()
    expected = gain[:, None] * tiny_host.W_U.detach()
    torch.testing.assert_close(decoding_matrix(tiny_host), expected)


def test_planted_neuron_decodes_to_its_token_first(tiny_host):
    layer, neuron, token = 2, 17, 123
    # output weights = the token's unembedding column, divided by the gain: decodes to |W_U[:,t]|^2
    matrix = decoding_matrix(tiny_host)
    w_out = tiny_host.W_out  # stacked view over the layers' down-projections
    original = w_out[layer, neuron].clone()
    direction = matrix[:, token] / matrix[:, token].norm()
    try:
        with torch.no_grad():
            tiny_host.blocks[layer].mlp.out.weight[:, neuron] = 50 * direction
        table = decode_neurons(tiny_host, layer, [neuron], top=3)
    finally:
        with torch.no_grad():
            tiny_host.blocks[layer].mlp.out.weight[:, neuron] = original
    promoted = table[table["direction"] == "promoted"].sort_values("rank")
    assert int(promoted.iloc[0]["token_id"]) == token
    assert promoted.iloc[0]["unit"] == f"L{layer}N{neuron}"
    assert promoted.iloc[0]["score"] == pytest.approx(50 * float(matrix[:, token].norm()), rel=1e-4)


def test_decode_index_and_directions_agree(tiny_host):
    one_hot = torch.zeros(1, tiny_host.cfg.d_model)
    one_hot[0, 5] = 1.0
    a = decode_index(tiny_host, 5, top=4)
    b = decode_directions(tiny_host, one_hot, names=[5], top=4)
    assert a["token_id"].tolist() == b["token_id"].tolist()
    scores = decoding_matrix(tiny_host)[5]
    assert a.iloc[0]["score"] == pytest.approx(float(scores.max()))
    suppressed = a[a["direction"] == "suppressed"].sort_values("rank")
    assert suppressed.iloc[0]["score"] == pytest.approx(float(scores.min()))


def test_top_tokens_all_matches_per_layer_decoding(tiny_host):
    ids, values, names = top_tokens_all(tiny_host, top=3, chunk=100)
    n_neurons = tiny_host.cfg.n_layers * tiny_host.cfg.d_mlp
    assert len(names) == len(ids) == n_neurons + tiny_host.cfg.d_model
    layer, neuron = 3, 40
    row = names.index(f"L{layer}N{neuron}")
    single = decode_neurons(tiny_host, layer, [neuron], top=3)
    promoted = single[single["direction"] == "promoted"].sort_values("rank")
    assert ids[row].tolist() == promoted["token_id"].tolist()
    torch.testing.assert_close(values[row], torch.tensor(promoted["score"].tolist()))
    r7 = names.index("R7")
    assert ids[r7].tolist() == decode_index(tiny_host, 7, top=3).head(3)["token_id"].tolist()


def test_clamping_a_neuron_writes_value_times_its_output_weights(tiny_host):
    tokens = torch.tensor([encode(tiny_host.tokenizer, "What is the capital of France?").ids])
    layer, neuron, value = 1, 9, 7.5
    names = [mlp_post_hook(layer), f"blocks.{layer}.hook_mlp_out"]
    with torch.no_grad():
        _, plain = tiny_host.run_with_cache(tokens, names_filter=names)
        with clamp_neuron(tiny_host, layer, neuron, value):
            _, clamped = tiny_host.run_with_cache(tokens, names_filter=names)
    assert torch.all(clamped[names[0]][..., neuron] == value)
    change = clamped[names[1]] - plain[names[1]]
    act = plain[names[0]][..., neuron]
    expected = (value - act)[..., None] * tiny_host.W_out[layer, neuron]
    torch.testing.assert_close(change, expected, rtol=1e-4, atol=1e-5)


def test_bad_input(tiny_host):
    with pytest.raises(LensError, match="layer 9 is out of range"):
        decode_neurons(tiny_host, 9)
    with pytest.raises(LensError, match=r"neurons \[999\] are out of range"):
        decode_neurons(tiny_host, 0, [999])
    with pytest.raises(LensError, match="index -1 is out of range"):
        decode_index(tiny_host, -1)
    with pytest.raises(LensError, match="directions must be"):
        decode_directions(tiny_host, torch.zeros(2, 3))
    with (
        pytest.raises(LensError, match="layer 4 is out of range"),
        clamp_neuron(tiny_host, 4, 0, 1),
    ):
        pass
