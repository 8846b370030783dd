"""The rotated-basis host computes the same function with no privileged residual coordinates."""

from __future__ import annotations

import gc

import pytest
import torch

from irm_lens.host import load_hf, load_host
from irm_lens.inject import READ_HOOK
from irm_lens.interventions.host_profile import residual_profile
from irm_lens.interventions.index_profile import massive_activations
from irm_lens.prompts import PAPER_PROMPTS
from irm_lens.rotate import random_rotation, rotate_residual_basis, split_rotated

TEXT = "The capital of France is Paris. What is the capital of Italy?"


def _tokens(host):
    return torch.tensor([host.tokenizer.encode(TEXT)])


def test_rotation_is_orthogonal_seeded_and_parsed_from_the_name():
    r = random_rotation(64, seed=3)
    assert torch.allclose(r @ r.T, torch.eye(64, dtype=torch.float64), atol=1e-12)
    assert torch.equal(r, random_rotation(64, seed=3))
    assert not torch.allclose(r, random_rotation(64, seed=4))
    assert split_rotated("tiny-random-llama+rotated") == ("tiny-random-llama", 0)
    assert split_rotated("/models/llama+rotated12") == ("/models/llama", 12)
    assert split_rotated("tiny-random-llama") == ("tiny-random-llama", None)
    assert split_rotated(None) == (None, None)


def test_rotated_tiny_host_same_logits_rotated_residual(tiny_host):
    rotated = load_host("tiny-random-llama+rotated5", device="cpu")
    r = random_rotation(tiny_host.cfg.d_model, 5).float()
    tokens = _tokens(tiny_host)
    with torch.no_grad():
        logits, cache = tiny_host.run_with_cache(tokens, names_filter=[READ_HOOK])
        logits_r, cache_r = rotated.run_with_cache(tokens, names_filter=[READ_HOOK])
    assert (logits - logits_r).abs().max() < 1e-5
    # The residual the IRM reads is the original's times R: same vector, another basis.
    assert torch.allclose(cache[READ_HOOK] @ r, cache_r[READ_HOOK], atol=1e-5)
    assert not torch.allclose(cache[READ_HOOK], cache_r[READ_HOOK], atol=1e-2)
    for block in rotated.blocks:  # every gain folded into the weights that read the norm
        assert torch.equal(block.ln1.weight, torch.ones_like(block.ln1.weight))
        assert torch.equal(block.ln2.weight, torch.ones_like(block.ln2.weight))
    assert torch.equal(rotated.ln_final.weight, torch.ones_like(rotated.ln_final.weight))
    assert rotated.cfg.model_name == "tiny-random-llama+rotated5"


def test_rotation_rejects_a_wrong_shape_and_a_non_llama_model():
    model, _ = load_hf("tiny-random-llama")
    with pytest.raises(ValueError, match=r"rotation must be \[64, 64\]"):
        rotate_residual_basis(model, torch.eye(32))
    with pytest.raises(ValueError, match="Llama-style"):
        rotate_residual_basis(torch.nn.Linear(4, 4), torch.eye(4))


@pytest.mark.embedded
def test_rotated_embedded_host_same_logits_and_no_massive_dims(embedded_host):
    exact = load_host(device="cpu", dtype=torch.float64)
    rotated = load_host("smollm2-135m-instruct+rotated", device="cpu", dtype=torch.float64)
    tokens = _tokens(embedded_host)
    with torch.no_grad():
        gap = (exact(tokens) - rotated(tokens)).abs().max().item()
    assert gap < 1e-4  # logits up to ~31; HF's RMSNorm computes in float32 even here
    del exact
    gc.collect()
    prompts = list(PAPER_PROMPTS)
    before = massive_activations(residual_profile(embedded_host, prompts))
    after = massive_activations(residual_profile(rotated, prompts))
    assert 507 in set(before["index"]) and after.empty
