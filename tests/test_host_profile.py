"""Host profile: token kinds, massive activations (planted and real), norm gains."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from irm_lens import PAPER_PROMPTS
from irm_lens.inject import write_hook
from irm_lens.interventions.host_profile import (
    massive_dims,
    norm_gains,
    residual_profile,
    token_kinds,
)


def test_token_kinds():
    assert token_kinds(["<s>", "Hi", ".", "x", "\n", "."]) == [
        "first",
        "other",
        "delimiter",
        "other",
        "other",
        "other",
    ]
    assert token_kinds([]) == []


def test_massive_dims_on_a_hand_built_profile():
    profile = pd.DataFrame(
        {
            "layer": [0, 0, 0, 1, 1, 1],
            "index": [0, 1, 2, 0, 1, 2],
            "token_kind": "first",
            "mean_abs": 1.0,
            "max_abs": [1.0, 2.0, 3.0, 1.0, 500.0, 2.0],
            "n_tokens": 1,
        }
    )
    found = massive_dims(profile, ratio=100.0)
    # per-index maxima 1, 500, 3 -> median 3 -> index 1 at 166.7x, at layer 1
    assert found["index"].tolist() == [1] and found["layer"].tolist() == [1]
    assert found["ratio"].iloc[0] == pytest.approx(500 / 3)


def test_planted_massive_activation_is_found(tiny_host):
    def plant(x, hook):
        x = x.clone()
        x[:, 0, 7] += 1000.0  # first token, residual index 7, from layer 1 on
        return x

    with tiny_host.hooks(fwd_hooks=[(write_hook(1), plant)]):
        profile = residual_profile(tiny_host, list(PAPER_PROMPTS[:2]))
    found = massive_dims(profile, ratio=50.0)
    assert found["index"].tolist()[0] == 7
    assert found["token_kind"].iloc[0] == "first"
    assert set(profile["token_kind"]) <= {"first", "delimiter", "other"}
    assert len(profile) == profile["token_kind"].nunique() * 4 * 64


def test_norm_gains_by_hand(tiny_host):
    table = norm_gains(tiny_host)
    final = tiny_host.ln_final.weight.detach()
    assert table["final_gain"].tolist() == pytest.approx(final.tolist())
    smallest = int(final.abs().argmin())
    assert table.loc[table["final_gain_rank"] == 1, "index"].tolist() == [smallest]
    col = int(tiny_host.W_U.detach().norm(dim=1).argmax())
    assert table.loc[table["unembed_norm_rank"] == 1, "index"].tolist() == [col]


def test_empty_prompt_list_is_an_error(tiny_host):
    with pytest.raises(ValueError, match="at least one prompt"):
        residual_profile(tiny_host, [])


@pytest.mark.embedded
def test_embedded_host_massive_dim_507(embedded_host):
    """Reference section 7: dim 507 is SmolLM2's massive activation with the smallest final gain."""
    profile = residual_profile(embedded_host, list(PAPER_PROMPTS))
    found = massive_dims(profile, ratio=20.0)
    assert found["index"].iloc[0] == 507
    gains = norm_gains(embedded_host).set_index("index")
    assert gains.loc[507, "final_gain_rank"] == 1
    assert torch.tensor(found["max_abs"].iloc[0]) > 1e3


def test_a_planted_super_weight_is_found_and_zeroing_it_costs_perplexity(_cache_dir):
    from irm_lens import load_host
    from irm_lens.interventions.host_profile import perplexity_without, super_weights

    host = load_host("tiny-random-llama", device="cpu")  # a fresh host: weights are planted
    layer, row, col = 1, 7, 11
    mlp = host.blocks[layer].mlp.original_component
    with torch.no_grad():  # neuron col fires hard on every token; down_proj carries it to row
        mlp.gate_proj.weight[col] = host.W_E.detach().mean(0).sign() * 3.0
        mlp.up_proj.weight[col] = host.W_E.detach().mean(0).sign() * 3.0
        host.blocks[layer].mlp.out.original_component.weight[row, col] = 200.0
    prompt = "The cat sat on the mat. It was warm."
    table = super_weights(host, prompt)
    top = table.sort_values("over_median", ascending=False).iloc[0]
    assert (int(top["layer"]), int(top["row"]), int(top["col"])) == (layer, row, col)
    assert bool(top["super"]) and not table.loc[table["layer"] != layer, "super"].any()
    base, zeroed = perplexity_without(
        host, [prompt, "A dog ran home. Then it slept."], layer, row, col
    )
    assert zeroed != base
    weight = host.blocks[layer].mlp.out.original_component.weight
    assert float(weight[row, col]) == 200.0  # restored


def test_profile_anatomy_command_writes_massive_dims_and_super_weights(tmp_path, capsys):
    from irm_lens.cli.main import main

    out = tmp_path / "anatomy"
    argv = ["profile", "tiny-random-llama", "--anatomy", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    weights = pd.read_csv(out / "super_weights.csv")
    assert len(weights) == 4 and {"row", "col", "over_median", "super"} <= set(weights.columns)
    assert (out / "massive.csv").exists()
    assert "super weights (down_proj output peak" in capsys.readouterr().out
    assert main(["profile", "tiny-random-llama", "--device", "cpu"]) == 2
    assert "--index I" in capsys.readouterr().err


def test_massive_values_set_to_zero_matter_and_set_to_their_mean_do_not(_cache_dir):
    from irm_lens import load_host
    from irm_lens.interventions.host_profile import massive_ablation

    host = load_host("tiny-random-llama", device="cpu")  # a fresh host: a massive dim is planted
    bos, dim = host.tokenizer.bos_token_id, 7
    with torch.no_grad():  # the first token (BOS, plain text) carries dim 7 at 5000 everywhere
        host.W_E[bos, dim] = 5000.0
    texts = ["The cat sat on the mat. It was warm.", "A dog ran home. Then it slept."]
    table = massive_ablation(host, texts, [dim]).set_index("ablation")["perplexity"]
    n = int(massive_ablation(host, texts, [dim])["n_values"].max())
    assert n == 2 * host.cfg.n_layers  # the first token of each text, in every layer
    # the first token's state is the same in every text, so its mean is its value exactly
    assert table["mean"] == pytest.approx(table["none"], rel=1e-5)
    assert abs(table["zero"] / table["none"] - 1) > 1e-3
    assert massive_ablation(host, texts, [3])["n_values"].max() == 0  # not massive: untouched
