"""Lenses: LM-head decoding with hand-checkable planted cases, clamping, bad input."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from irm_lens import encode, load_host
from irm_lens.anatomy import AnatomyError
from irm_lens.inject import mlp_post_hook
from irm_lens.lenses import (
    LensError,
    activation_x_gradient,
    clamp_effect,
    clamp_neuron,
    composition_scores,
    concept_neurons,
    decode_directions,
    decode_index,
    decode_neurons,
    decoding_matrix,
    head_svd,
    index_in_head_subspaces,
    log_prob_attribution,
    query_neurons,
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
    ids, values, names, low_ids, low_values = top_tokens_all(
        tiny_host, top=3, chunk=100, suppressed=True
    )
    n_neurons = tiny_host.cfg.n_layers * tiny_host.cfg.d_mlp
    assert len(names) == len(ids) == n_neurons + tiny_host.cfg.d_model
    layer, neuron = 3, 40
    row = names.index(f"L{layer}N{neuron}")
    single = decode_neurons(tiny_host, layer, [neuron], top=3)
    promoted = single[single["direction"] == "promoted"].sort_values("rank")
    assert ids[row].tolist() == promoted["token_id"].tolist()
    torch.testing.assert_close(values[row], torch.tensor(promoted["score"].tolist()))
    lowest = single[single["direction"] == "suppressed"].sort_values("rank")
    assert low_ids[row].tolist() == lowest["token_id"].tolist()
    torch.testing.assert_close(low_values[row], torch.tensor(lowest["score"].tolist()))
    r7 = names.index("R7")
    assert ids[r7].tolist() == decode_index(tiny_host, 7, top=3).head(3)["token_id"].tolist()
    assert top_tokens_all(tiny_host, top=3).suppressed_ids is None  # only when asked for


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
        clamp_neuron(tiny_host, 4, 0, 1.0),
    ):
        pass


def test_host_without_final_norm_gain_is_refused():
    host = load_host("tiny-random-llama", device="cpu")  # a private copy: it gets mutated
    host.ln_final = None
    with pytest.raises(AnatomyError, match="no separate final norm"):
        decoding_matrix(host)


def _prompt(host, text="What is the capital of France?"):
    return torch.tensor([encode(host.tokenizer, text, mode="plain").prompt_ids])


def test_planted_value_neuron_ranks_first(tiny_host):
    tokens = _prompt(tiny_host)
    layer, neuron, token = 2, 17, 200
    _, cache = tiny_host.run_with_cache(tokens, names_filter=[mlp_post_hook(layer)])
    act = float(cache[mlp_post_hook(layer)][0, -1, neuron])
    matrix = decoding_matrix(tiny_host)
    weight = tiny_host.blocks[layer].mlp.out.weight
    original = weight[:, neuron].clone()
    try:
        with torch.no_grad():
            weight[:, neuron] = (5.0 / act) * matrix[:, token] / matrix[:, token].norm()
        table = log_prob_attribution(tiny_host, tokens)
        direct = log_prob_attribution(tiny_host, tokens, base="final")
        axg = activation_x_gradient(tiny_host, tokens)
    finally:
        with torch.no_grad():
            weight[:, neuron] = original
    assert table.attrs["predicted"] == token
    first = table.iloc[0]
    assert (first["kind"], first["layer"], first["unit"]) == ("neuron", layer, neuron)
    assert first["importance"] > 1.0
    assert (direct.iloc[0]["layer"], direct.iloc[0]["unit"]) == (layer, neuron)
    assert (axg.iloc[0]["layer"], axg.iloc[0]["unit"]) == (layer, neuron)


def test_final_base_is_the_direct_effect_of_a_last_layer_neuron(tiny_host):
    # Nothing but the final norm follows the last MLP, so taking a last-layer neuron's
    # contribution out of the final residual is exactly zeroing that neuron in a real forward.
    tokens = _prompt(tiny_host)
    table = log_prob_attribution(tiny_host, tokens, base="final")
    assert table.attrs["base"] == "final"
    last, predicted = tiny_host.cfg.n_layers - 1, table.attrs["predicted"]
    with torch.no_grad():
        full = tiny_host(tokens)[0, -1].double().log_softmax(-1)[predicted]
    strongest = table[(table["kind"] == "neuron") & (table["layer"] == last)].head(2)
    for row in strongest.itertuples():
        with torch.no_grad(), clamp_neuron(tiny_host, last, int(row.unit), 0.0):
            ablated = tiny_host(tokens)[0, -1].double().log_softmax(-1)[predicted]
        assert float(full - ablated) == pytest.approx(row.importance, rel=1e-3, abs=1e-5)
    assert abs(strongest["importance"].iloc[0]) > 1e-4  # a real effect, not two zeros
    with pytest.raises(LensError, match="base must be 'layer' or 'final'"):
        log_prob_attribution(tiny_host, tokens, base="middle")


def test_activation_x_gradient_matches_finite_differences(tiny_host):
    tokens = _prompt(tiny_host)
    table = activation_x_gradient(tiny_host, tokens).set_index(["layer", "unit"])
    layer, neuron, eps = 3, 5, 1e-2
    act = float(table.loc[(layer, neuron), "activation"])

    def log_p(value):
        with torch.no_grad(), clamp_neuron(tiny_host, layer, neuron, value):
            return tiny_host(tokens)[0, -1].double().log_softmax(-1)

    plain = tiny_host(tokens)[0, -1].log_softmax(-1)
    predicted = int(plain.argmax())
    grad = (log_p(act + eps)[predicted] - log_p(act - eps)[predicted]) / (2 * eps)
    assert float(table.loc[(layer, neuron), "axg"]) == pytest.approx(
        act * float(grad), rel=2e-2, abs=1e-6
    )


def test_query_neurons_come_from_lower_layers(tiny_host):
    tokens = _prompt(tiny_host)
    values = log_prob_attribution(tiny_host, tokens)
    queries = query_neurons(tiny_host, tokens, values, n_values=5, top=10)
    top_layer = int(values[values["kind"] == "neuron"].head(5)["layer"].max())
    assert len(queries) == 10 and (queries["layer"] < top_layer).all()
    assert queries["query_score"].is_monotonic_decreasing


def test_prompt_longer_than_the_context_is_refused(tiny_host):
    tokens = torch.zeros(1, tiny_host.cfg.n_ctx + 1, dtype=torch.long)
    with pytest.raises(LensError, match="context is"):
        log_prob_attribution(tiny_host, tokens)


def test_head_svd_matches_the_explicit_circuit(tiny_host):
    table = head_svd(tiny_host, "OV")
    layer, head = 1, 3
    gain = tiny_host.blocks[layer].ln1.weight.detach()
    kv = head // (tiny_host.cfg.n_heads // tiny_host.W_V.shape[1])
    ov = (gain[:, None] * tiny_host.W_V[layer, kv].detach()) @ tiny_host.W_O[layer, head].detach()
    expected = torch.linalg.svdvals(ov)[: tiny_host.cfg.d_head]
    got = table[(table["layer"] == layer) & (table["head"] == head)].sort_values("rank")
    torch.testing.assert_close(
        torch.tensor(got["singular_value"].tolist()), expected, rtol=1e-4, atol=1e-6
    )
    assert got["share"].sum() == pytest.approx(1.0)


def test_composition_score_by_hand(tiny_host):
    table = composition_scores(tiny_host, "V")
    row = table[
        (table.layer_a == 0) & (table.head_a == 1) & (table.layer_b == 2) & (table.head_b == 2)
    ]
    group = tiny_host.cfg.n_heads // tiny_host.W_V.shape[1]
    g0, g2 = (tiny_host.blocks[i].ln1.weight.detach() for i in (0, 2))
    ov = (g0[:, None] * tiny_host.W_V[0, 1 // group].detach()) @ tiny_host.W_O[0, 1].detach()
    reader = g2[:, None] * tiny_host.W_V[2, 2 // group].detach()
    expected = (ov @ reader).norm() / (ov.norm() * reader.norm())
    assert float(row["score"].iloc[0]) == pytest.approx(float(expected), rel=1e-4)
    assert (table["layer_a"] < table["layer_b"]).all()


def test_planted_index_in_a_head_write_subspace(tiny_host):
    layer, head, index = 1, 2, 11
    o_proj = tiny_host.blocks[layer].attn.o.weight  # [d_model, n_heads * d_head]
    d_head = tiny_host.cfg.d_head
    original = o_proj.clone()
    try:
        with torch.no_grad():
            o_proj[:, head * d_head : (head + 1) * d_head] = 0
            o_proj[index, head * d_head] = 1.0  # row 0 of this head's W_O is e_index
        assert float(tiny_host.W_O[layer, head, 0, index]) == 1.0
        table = index_in_head_subspaces(tiny_host, index)
    finally:
        with torch.no_grad():
            o_proj.copy_(original)
    row = table[(table["layer"] == layer) & (table["head"] == head)].iloc[0]
    assert row["write"] == pytest.approx(1.0, abs=1e-5)
    assert table["chance"].iloc[0] == pytest.approx(d_head / tiny_host.cfg.d_model)
    with pytest.raises(LensError, match="index 64 is out of range"):
        index_in_head_subspaces(tiny_host, 64)


def test_lens_command_line(tiny_host, tmp_path, capsys):
    from irm_lens.cli import main

    host = ["--host", "tiny-random-llama", "--device", "cpu", "--no-png"]
    assert main(["lens", "decode", "--index", "3", "--out", str(tmp_path / "d"), *host]) == 0
    decoded = pd.read_csv(tmp_path / "d" / "decode.csv")
    assert (
        set(decoded["direction"]) == {"promoted", "suppressed"}
        and (tmp_path / "d" / "figure.html").exists()
    )
    args = ["lens", "decode", "--layer", "1", "--neuron", "4", "--clamp-prompt", "Why?"]
    assert main([*args, "--out", str(tmp_path / "c"), *host]) == 0
    clamp = pd.read_csv(tmp_path / "c" / "clamp.csv")
    assert clamp["clamp"].isna().sum() == 5  # one unclamped row per decoded token (top 5)
    args = ["lens", "attribute", "--prompt", "What is the capital of France?"]
    assert main([*args, "--out", str(tmp_path / "a"), *host]) == 0
    assert {"values.csv", "activation_x_gradient.csv", "queries.csv"} <= {
        p.name for p in (tmp_path / "a").iterdir()
    }
    assert main(["lens", "channels", "--index", "5", "--out", str(tmp_path / "h"), *host]) == 0
    assert len(pd.read_csv(tmp_path / "h" / "subspaces.csv")) == 4 * tiny_host.cfg.n_heads
    capsys.readouterr()
    args = ["lens", "decode", "--all", "--top", "2", "--out", str(tmp_path / "w")]
    assert main([*args, *host]) == 0
    whole = pd.read_csv(tmp_path / "w" / "decode_all.csv", keep_default_na=False)
    n_units = tiny_host.cfg.n_layers * tiny_host.cfg.d_mlp + tiny_host.cfg.d_model
    assert len(whole) == n_units * 2 * 2 and whole["unit"].nunique() == n_units
    single = decode_neurons(tiny_host, 2, [7], top=2).sort_values(["direction", "rank"])
    mine = whole[whole["unit"] == "L2N7"].sort_values(["direction", "rank"])
    assert mine["token_id"].tolist() == single["token_id"].tolist()
    capsys.readouterr()
    assert main(["lens", "decode", "--index", "1", "--layer", "1", *host]) == 2
    assert "give --index I" in capsys.readouterr().err
    assert main(["lens", "decode", "--all", "--index", "1", *host]) == 2
    assert "--all decodes every unit" in capsys.readouterr().err
    assert main(["lens", "decode", "--layer", "9", *host]) == 2
    assert "layer 9 is out of range" in capsys.readouterr().err


def test_concept_neurons_finds_a_planted_concept_and_clamping_raises_it(tiny_host):
    words = [" today", " wonderful", " angry", " sad"]
    token_ids = [tiny_host.tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]
    assert all(len(t) == 1 for t in token_ids), token_ids
    concept = {t[0] for t in token_ids}
    layer, neuron = 3, 21
    matrix = decoding_matrix(tiny_host)
    columns = matrix[:, sorted(concept)]
    weight = tiny_host.blocks[layer].mlp.out.weight
    original = weight[:, neuron].clone()
    tokens = _prompt(tiny_host)
    try:
        with torch.no_grad():
            weight[:, neuron] = 3.0 * (columns / columns.norm(dim=0)).sum(-1)
        found = concept_neurons(tiny_host, lambda w: w in words, top=4, min_hits=4)
        effect = clamp_effect(tiny_host, layer, neuron, tokens, values=(0.0, 20.0), top=4)
    finally:
        with torch.no_grad():
            weight[:, neuron] = original
    assert (found.iloc[0]["layer"], found.iloc[0]["neuron"]) == (layer, neuron)
    assert set(found.iloc[0]["tokens"].split(" | ")) == set(words)
    mass = effect.groupby("clamp", dropna=False)["prob"].sum()
    unclamped = float(effect.loc[effect["clamp"].isna(), "prob"].sum())
    # the final RMS norm caps what one direction can do on this 64-wide host: ~x1.9 here
    assert mass.loc[20.0] > 1.5 * mass.loc[0.0] and mass.loc[20.0] > 1.5 * unclamped
