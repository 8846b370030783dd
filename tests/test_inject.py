"""Injection through hook points: equivalence with an inline decoder, and its invariants."""

from __future__ import annotations

import pytest
import torch

from irm_lens import IRM, attach, encode
from irm_lens.host import load_hf
from irm_lens.inject import active_hook_names, resid_mid_hook, write_hook, zero_index
from irm_lens.reference import injected_logits


def _tokens(host, questions=("What is the capital of France?",)):
    rows = [encode(host.tokenizer, q).ids for q in questions]
    return torch.tensor(rows)


def _logits_four_ways(host, hf_model, irm, tokens):
    """The host's logits with ``irm`` attached, then the inline reference decoder's on
    ``hf_model``: with the IRM, without it, and with the original code's grouping of the sum
    (the delta added after the residual add, ``(resid + attn) + delta``)."""
    with torch.no_grad():
        with attach(host, irm):
            ours = host(tokens)
        ref = injected_logits(hf_model, irm, tokens)
        plain = injected_logits(hf_model, None, tokens)
        paper_grouping = injected_logits(hf_model, irm, tokens, delta_into_attn=False)
    return ours, ref, plain, paper_grouping


@pytest.fixture(scope="module")
def tiny_hf():
    model, _ = load_hf("tiny-random-llama")
    return model


@pytest.mark.parametrize("layers", [None, (0,), (1, 3), (3, 2)])
def test_attach_equals_inline_reference(tiny_host, tiny_hf, layers):
    irm = IRM.for_host(tiny_host, layers=layers, seed=2, init="torch")
    ours, ref, plain, paper_grouping = _logits_four_ways(
        tiny_host, tiny_hf, irm, _tokens(tiny_host)
    )
    assert (ref - plain).abs().max() > 1e-2  # the IRM matters, so the comparison means something
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours, paper_grouping, rtol=0, atol=1e-5)


def test_write_reaches_residual_stream_not_only_mlp_input(tiny_host):
    """Fails if the IRM's delta landed only in the MLP input (the hook_resid_mid trap)."""
    irm = IRM.for_host(tiny_host, layers=(1,), seed=2, init="torch")
    tokens = _tokens(tiny_host)
    names = [resid_mid_hook(1), "blocks.1.hook_resid_post", "blocks.0.hook_resid_post"]
    with torch.no_grad():
        _, clean = tiny_host.run_with_cache(tokens, names_filter=names)
        with attach(tiny_host, irm) as inj:
            _, hooked = tiny_host.run_with_cache(tokens, names_filter=names)
            delta = inj.last[0]
    # resid_mid(1) moved by exactly the IRM's slice for layer 1...
    torch.testing.assert_close(hooked[resid_mid_hook(1)] - clean[resid_mid_hook(1)], delta)
    # ...and the change survives the MLP's residual add into resid_post(1).
    moved = hooked["blocks.1.hook_resid_post"] - clean["blocks.1.hook_resid_post"]
    assert (moved - delta).abs().max() < 0.5 * delta.abs().max()
    torch.testing.assert_close(
        hooked["blocks.0.hook_resid_post"], clean["blocks.0.hook_resid_post"]
    )


def test_editing_resid_mid_does_not_reach_residual(tiny_host):
    """Documents the trap the design avoids: an edit at hook_resid_mid is not a residual write."""
    tokens = _tokens(tiny_host)

    def add_five(x, hook):
        return x + 5.0

    with torch.no_grad():
        _, clean = tiny_host.run_with_cache(tokens, names_filter=["blocks.1.hook_resid_post"])
        with tiny_host.hooks(fwd_hooks=[(resid_mid_hook(1), add_five)]):
            _, edited = tiny_host.run_with_cache(tokens, names_filter=["blocks.1.hook_resid_post"])
        with tiny_host.hooks(fwd_hooks=[(write_hook(1), add_five)]):
            _, written = tiny_host.run_with_cache(tokens, names_filter=["blocks.1.hook_resid_post"])
    key = "blocks.1.hook_resid_post"
    assert (edited[key] - clean[key] - 5.0).abs().min() > 1.0  # not carried as +5
    torch.testing.assert_close(
        written[key] - clean[key], torch.full_like(clean[key], 5.0), atol=1.0, rtol=0
    )


def test_zero_irm_is_identity(tiny_host):
    irm = IRM.for_host(tiny_host, seed=0)
    for p in irm.parameters():
        torch.nn.init.zeros_(p)
    tokens = _tokens(tiny_host)
    with torch.no_grad():
        clean = tiny_host(tokens)
        with attach(tiny_host, irm):
            hooked = tiny_host(tokens)
    torch.testing.assert_close(hooked, clean, rtol=0, atol=0)


def test_scale_zero_and_edit(tiny_host, irm):
    tokens = _tokens(tiny_host)
    with torch.no_grad():
        clean = tiny_host(tokens)
        with attach(tiny_host, irm, scale=0.0):
            off = tiny_host(tokens)
        with attach(tiny_host, irm, edit=zero_index(5)) as inj:
            tiny_host(tokens)
            assert torch.all(inj.last[..., 5] == 0)
            assert inj.last[..., 4].abs().sum() > 0
    torch.testing.assert_close(off, clean, rtol=0, atol=0)


def test_no_hooks_remain_even_when_body_raises(tiny_host, irm):
    assert active_hook_names(tiny_host) == []
    with attach(tiny_host, irm):
        assert write_hook(0) in active_hook_names(tiny_host)
    assert active_hook_names(tiny_host) == []
    with pytest.raises(KeyError), attach(tiny_host, irm):
        raise KeyError("boom")
    assert active_hook_names(tiny_host) == []


def test_gradients_reach_irm_and_not_host(tiny_host, irm):
    tokens = _tokens(tiny_host)
    with attach(tiny_host, irm) as inj:
        loss = tiny_host(tokens, return_type="loss") + 1e-3 * inj.last.abs().mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in irm.parameters())
    assert all(p.grad is None for p in tiny_host.parameters())
    irm.zero_grad()


def test_padded_batch_matches_unpadded(tiny_host, irm):
    questions = ["What is the capital of France?", "Why?"]
    single = [torch.tensor([encode(tiny_host.tokenizer, q).ids]) for q in questions]
    width = max(t.shape[1] for t in single)
    pad = tiny_host.tokenizer.pad_token_id
    batch = torch.full((2, width), pad)
    mask = torch.zeros(2, width, dtype=torch.long)
    for i, t in enumerate(single):  # right padding
        batch[i, : t.shape[1]] = t[0]
        mask[i, : t.shape[1]] = 1
    with torch.no_grad(), attach(tiny_host, irm):
        batched = tiny_host(batch, attention_mask=mask)
        for i, t in enumerate(single):
            alone = tiny_host(t)
            torch.testing.assert_close(batched[i, : t.shape[1]], alone[0], atol=1e-5, rtol=0)


def test_generate_cached_equals_uncached(tiny_host, irm):
    tokens = _tokens(tiny_host)
    kwargs = dict(max_new_tokens=8, do_sample=False, stop_at_eos=False, verbose=False)
    with torch.no_grad(), attach(tiny_host, irm, keep_history=True) as inj:
        cached = tiny_host.generate(tokens, use_past_kv_cache=True, **kwargs)
        n_cached = len(inj.history)
        uncached = tiny_host.generate(tokens, use_past_kv_cache=False, **kwargs)
    clean = tiny_host.generate(tokens, use_past_kv_cache=True, **kwargs)
    assert torch.equal(cached, uncached)
    assert not torch.equal(cached, clean)  # the IRM changed what was generated
    # Under the KV cache: one prefill over the prompt, then one forward per new token.
    assert inj.history[0].shape[2] == tokens.shape[1]
    assert all(h.shape[2] == 1 for h in inj.history[1:n_cached])
    assert n_cached == 8  # the prefill gives token 1, one forward each gives tokens 2..8


def test_run_with_cache_sees_injected_stream(tiny_host, irm):
    tokens = _tokens(tiny_host)
    with torch.no_grad(), attach(tiny_host, irm) as inj:
        logits, cache = tiny_host.run_with_cache(tokens)
        direct = tiny_host(tokens)
    torch.testing.assert_close(logits, direct)
    resid0 = cache["blocks.0.hook_resid_pre"] + cache["blocks.0.hook_attn_out"] - inj.last[0]
    torch.testing.assert_close(inj.last, irm(resid0))


@pytest.mark.embedded
def test_attach_equals_inline_reference_on_embedded_host(embedded_host):
    # A fresh dequantization of the GGUF: also checks the cached copy the bridge was built from.
    hf_model, _ = load_hf(None, use_cache=False)
    cached, _ = load_hf(None)
    fresh_weights = hf_model.state_dict()
    for name, value in cached.state_dict().items():
        assert torch.equal(value, fresh_weights[name]), name
    irm = IRM.for_host(embedded_host, seed=5, init="torch")
    tokens = _tokens(embedded_host, ["What do Elon Musk and Mark Zuckerberg have in common?"])
    ours, ref, plain, paper_grouping = _logits_four_ways(embedded_host, hf_model, irm, tokens)
    assert (ref - plain).abs().max() > 1e-2
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    # The original code's grouping ((resid + attn) + delta) differs only by fp32 rounding,
    # which the massive activation in dim 507 (~1e4) makes visible at ~1e-4 in the logits.
    torch.testing.assert_close(ours, paper_grouping, rtol=0, atol=5e-4)


def test_the_irm_has_hook_points_of_its_own_that_tl_caches_and_patches(tiny_host):
    from irm_lens.inject import IRM_IN_HOOK, irm_out_hook

    irm = IRM.for_host(tiny_host, layers=(0, 2), seed=2, init="torch")
    tokens = _tokens(tiny_host)
    names = [IRM_IN_HOOK, irm_out_hook(0), irm_out_hook(2)]
    with torch.no_grad():
        plain = tiny_host(tokens)
        with attach(tiny_host, irm) as inj:
            assert set(names) <= set(tiny_host.hook_dict)
            logits, cache = tiny_host.run_with_cache(tokens)
            # cached by name: what the IRM read and what it added at each layer
            for slot, layer in enumerate(irm.layers):
                torch.testing.assert_close(cache[irm_out_hook(layer)], inj.last[slot])
            read = cache["blocks.0.hook_resid_pre"] + cache["blocks.0.hook_attn_out"]
            torch.testing.assert_close(cache[IRM_IN_HOOK], read - cache[irm_out_hook(0)])
            # ablated with an ordinary TransformerLens hook: the host alone again
            zero = [
                (irm_out_hook(layer), lambda x, hook: torch.zeros_like(x)) for layer in irm.layers
            ]
            ablated = tiny_host.run_with_hooks(tokens, fwd_hooks=zero)
            # host.reset_hooks() does not silently turn the IRM off
            tiny_host.reset_hooks()
            after_reset = tiny_host(tokens)
        outside = tiny_host(tokens)
    assert (logits - plain).abs().max() > 1e-2
    torch.testing.assert_close(ablated, plain, rtol=0, atol=1e-5)
    torch.testing.assert_close(after_reset, logits, rtol=0, atol=0)
    torch.testing.assert_close(outside, plain, rtol=0, atol=0)  # detached on exit
    assert not set(names) & set(tiny_host.hook_dict) and not active_hook_names(tiny_host)


def test_decompose_resid_gives_the_irm_a_component_of_its_own(tiny_host):
    from irm_lens.inject import decompose_resid, irm_out_hook, resid_post_hook

    irm = IRM.for_host(tiny_host, layers=(0, 2), seed=2, init="torch")
    tokens = _tokens(tiny_host)
    n = tiny_host.cfg.n_layers
    with torch.no_grad(), attach(tiny_host, irm):
        _, cache = tiny_host.run_with_cache(tokens)
    plain, plain_labels = cache.decompose_resid(return_labels=True)
    parts, labels = decompose_resid(cache)
    # TransformerLens credits the IRM to attention; here it is a component of its own
    expected = []
    for label in plain_labels:
        expected.append(label)
        if label in ("0_attn_out", "2_attn_out"):
            expected.append(label.replace("attn", "irm"))
    assert labels == expected
    assert len(parts) == len(plain) + 2 and "0_irm_out" in labels and "1_irm_out" not in labels
    torch.testing.assert_close(parts[labels.index("2_irm_out")], cache[irm_out_hook(2)])
    attention = parts[labels.index("2_attn_out")] + parts[labels.index("2_irm_out")]
    torch.testing.assert_close(attention, plain[plain_labels.index("2_attn_out")])
    # the components still sum to the residual stream
    torch.testing.assert_close(parts.sum(0), cache[resid_post_hook(n - 1)], rtol=1e-4, atol=1e-4)
    # one position, up to layer 2 (the IRM's layer-2 write not yet in): the same split
    last, last_labels = decompose_resid(cache, 2, pos_slice=-1)
    assert "0_irm_out" in last_labels and "2_irm_out" not in last_labels
    assert last.shape[1:] == (tokens.shape[0], tiny_host.cfg.d_model)
    scaled, _ = decompose_resid(cache, pos_slice=-1, apply_ln=True)  # for direct attribution
    assert scaled.shape == (len(labels), tokens.shape[0], tiny_host.cfg.d_model)
    # a cache taken without an IRM: exactly TransformerLens's decomposition
    _, host_cache = tiny_host.run_with_cache(tokens)
    alone, alone_labels = decompose_resid(host_cache)
    reference, reference_labels = host_cache.decompose_resid(return_labels=True)
    assert alone_labels == reference_labels
    torch.testing.assert_close(alone, reference, rtol=0, atol=0)


def test_one_irm_at_a_time(tiny_host):
    irm = IRM.for_host(tiny_host, seed=2, init="torch")
    with (
        attach(tiny_host, irm),
        pytest.raises(RuntimeError, match="another IRM is attached"),
        attach(tiny_host, irm),
    ):
        pass
    assert not active_hook_names(tiny_host)
