"""GPU checks (skipped without CUDA): device placement, bf16 hosts, cached generation on GPU."""

from __future__ import annotations

import pytest
import torch

from irm_lens import IRM, attach, encode, load_host
from irm_lens.host import load_hf
from irm_lens.reference import injected_logits

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def cuda_host():
    return load_host("tiny-random-llama", device="cuda")


def _tokens(host, device="cuda"):
    return torch.tensor(
        [encode(host.tokenizer, "What is the capital of France?").ids], device=device
    )


def test_equivalence_on_gpu(cuda_host):
    hf_model, _ = load_hf("tiny-random-llama")
    hf_model = hf_model.to("cuda")
    irm = IRM.for_host(cuda_host, seed=2, init="torch")
    assert next(irm.parameters()).device.type == "cuda"
    tokens = _tokens(cuda_host)
    with torch.no_grad():
        with attach(cuda_host, irm):
            ours = cuda_host(tokens)
        ref = injected_logits(hf_model, irm, tokens)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-4)


def test_bf16_host_with_fp32_irm_generates_cached_equals_uncached():
    host = load_host("tiny-random-llama", device="cuda", dtype="bfloat16")
    assert host.W_E.dtype == torch.bfloat16
    irm = IRM.for_host(host, seed=1, init="torch")  # stays fp32, as in the paper
    tokens = _tokens(host)
    kwargs = dict(max_new_tokens=8, do_sample=False, stop_at_eos=False, verbose=False)
    with torch.no_grad(), attach(host, irm) as inj:
        cached = host.generate(tokens, use_past_kv_cache=True, **kwargs)
        uncached = host.generate(tokens, use_past_kv_cache=False, **kwargs)
        assert inj.last.dtype == torch.float32
    # bf16 rounding can flip a near-tie; require agreement on the first tokens at least
    assert torch.equal(cached[:, : tokens.shape[1] + 3], uncached[:, : tokens.shape[1] + 3])


def test_training_step_on_gpu(cuda_host, tmp_path):
    irm = IRM.for_host(cuda_host, seed=0)
    opt = torch.optim.Adam(irm.parameters(), lr=1e-3)
    tokens = _tokens(cuda_host)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        with attach(cuda_host, irm):
            loss = cuda_host(tokens, return_type="loss")
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(p.grad is None for p in cuda_host.parameters())
    path = irm.save(tmp_path / "irm.safetensors")
    cpu_irm = IRM.load(path, device="cpu")
    assert next(cpu_irm.parameters()).device.type == "cpu"
