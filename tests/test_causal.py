"""Propagation and logit effects of one residual index, on planted and tiny hosts."""

from __future__ import annotations

import pytest
import torch

from irm_lens import IRM, encode, load_host
from irm_lens.errors import LayerRangeError
from irm_lens.interventions.causal import (
    direct_logit_effect,
    irm_index_propagation,
    norm_mediated_effect,
    propagation,
)


@pytest.fixture(scope="module")
def own_host():
    """A private tiny host whose weights the tests may edit."""
    return load_host("tiny-random-llama", device="cpu", seed=3)


def _tokens(host):
    return torch.tensor([encode(host.tokenizer, "What is the capital of France?").ids])


def test_propagation_carries_the_perturbation_along_the_skip_path(tiny_host):
    table = propagation(tiny_host, _tokens(tiny_host), index=5, layer=1, delta=1.0, n_random=3)
    target = table[table["kind"] == "target"].set_index("layer")
    assert list(target.index) == [1, 2, 3]
    assert set(table["kind"]) == {"target", "random"} and table["index"].nunique() == 4
    # the random host's MLPs barely react: most of delta stays at index 5 through the last layer
    assert target["persistence"].between(0.8, 1.2).all()
    assert (target["leak"] < 0.2).all()
    # linear regime: a push 10x smaller moves the index by the same amount per unit
    assert (target["persistence_small"] / target["persistence"]).between(0.9, 1.1).all()


def test_irm_output_at_one_index_is_carried_forward(tiny_host):
    irm = IRM.for_host(tiny_host, layers=(0, 2), seed=1)  # paper init: small, linear-regime outputs
    table = irm_index_propagation(tiny_host, irm, _tokens(tiny_host), index=9).set_index("layer")
    assert table.loc[1, "injected_rms"] == pytest.approx(table.loc[0, "injected_rms"])
    assert table.loc[2, "injected_rms"] > 0
    assert table["carried"].between(0.8, 1.2).all()


def test_direct_logit_effect_finds_a_planted_token(own_host):
    with torch.no_grad():
        own_host.W_U[11, 42] = 50.0
        own_host.W_U[11, 7] = -50.0
        own_host.ln_final.weight[11] = 1.0
    table = direct_logit_effect(own_host, 11, top=3)
    promoted = table[table["direction"] == "promoted"]
    suppressed = table[table["direction"] == "suppressed"]
    assert promoted["token_id"].iloc[0] == 42 and promoted["effect"].iloc[0] == pytest.approx(50.0)
    assert suppressed["token_id"].iloc[0] == 7 and suppressed["effect"].iloc[0] == pytest.approx(
        -50.0
    )


def test_norm_mediated_effect_acts_as_a_temperature(own_host):
    with torch.no_grad():
        own_host.ln_final.weight[20] = 0.0  # index 20 has no direct effect on the logits
    tokens = _tokens(own_host)
    table = norm_mediated_effect(own_host, tokens, index=20, scales=(1.0, 8.0, 64.0))
    clean = own_host(tokens).float().log_softmax(-1)
    clean_entropy = float(-(clean.exp() * clean).sum(-1).mean())
    assert table["entropy"].iloc[0] == pytest.approx(clean_entropy, rel=1e-5)
    assert table["rms"].is_monotonic_increasing
    assert table["entropy"].is_monotonic_increasing  # a larger RMS flattens every logit
    assert table["top1_prob"].is_monotonic_decreasing


def test_bad_index_and_layer(tiny_host):
    with pytest.raises(ValueError, match=r"residual indices are 0\.\.63"):
        direct_logit_effect(tiny_host, 64)
    with pytest.raises(LayerRangeError, match=r"0\.\.3"):
        propagation(tiny_host, _tokens(tiny_host), index=0, layer=4)


def test_index_logit_attribution_by_hand(tiny_host):
    from irm_lens.inject import resid_post_hook
    from irm_lens.interventions.causal import index_logit_attribution

    tokens = _tokens(tiny_host)
    table = index_logit_attribution(tiny_host, tokens, index=4)
    logits, cache = tiny_host.run_with_cache(tokens)
    x = cache[resid_post_hook(tiny_host.cfg.n_layers - 1)][0]
    rms = (x.pow(2).mean(-1) + tiny_host.cfg.eps).sqrt()
    predicted = logits[0].argmax(-1)
    by_hand = x[:, 4] / rms * tiny_host.ln_final.weight[4] * tiny_host.W_U[4, predicted]
    assert table["contribution"].tolist() == pytest.approx(by_hand.tolist(), rel=1e-4, abs=1e-6)
    assert len(table) == tokens.shape[1]
    # centred: the index's contribution to the predicted token minus its mean over the vocab
    row = tiny_host.W_U[4]
    centred = x[:, 4] / rms * tiny_host.ln_final.weight[4] * (row[predicted] - row.mean())
    assert table["centred_contribution"].tolist() == pytest.approx(
        centred.tolist(), rel=1e-4, abs=1e-6
    )
    top = logits[0].max(-1).values - logits[0].mean(-1)
    assert table["centred_share"].tolist() == pytest.approx(
        (centred / top).tolist(), rel=1e-3, abs=1e-6
    )


def test_one_call_entry_points(tiny_host):
    from irm_lens.interventions import host_profile, logit_attribution

    tokens = _tokens(tiny_host)
    effects = logit_attribution(tiny_host, tokens, index=2, top=3, scales=(1.0, 2.0))
    assert set(effects) == {"direct", "per_position", "norm"} and len(effects["norm"]) == 2
    profile = host_profile(tiny_host, ["Why is the sky blue?"])
    assert set(profile) == {"residual", "massive", "gains"} and len(profile["gains"]) == 64
