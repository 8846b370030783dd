"""GPU checks (skipped without CUDA): device placement, bf16 hosts, cached generation on GPU."""

from __future__ import annotations

import pytest
import torch

from irm_lens import IRM, attach, encode, load_host
from irm_lens.host import load_hf
from irm_lens.reference import injected_logits
from tests import _procs

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


# --------------------------------------------------------------------- distributed and memory

TWO_GPUS = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
_GPU_OPTS = [
    "--preset",
    "smoke",
    "--host",
    "tiny-random-llama",
    "--device",
    "cuda",
    "--batch-size",
    "4",
    "--grad-accum",
    "2",
    "--max-steps",
    "6",
    "--eval-every",
    "2",
    "--epochs",
    "50",
]


def _gpu_torchrun(n, *args):
    import os

    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return _procs.run(_procs.torchrun_cli(n, *args), env=env, timeout=600)


@TWO_GPUS
@pytest.mark.parametrize("extra", [[], ["--parallel", "fsdp"], ["--dtype", "bfloat16"]])
def test_nccl_two_gpus_train_the_same_irm_as_one(tmp_path, extra):
    from safetensors.torch import load_file

    from irm_lens.cli import main as cli_main

    assert cli_main(["train", str(tmp_path / "one"), *_GPU_OPTS, *extra]) == 0
    done = _gpu_torchrun(2, "train", str(tmp_path / "two"), *_GPU_OPTS, *extra)
    assert done.returncode == 0, done.stderr[-3000:]
    a = load_file(str(tmp_path / "one" / "irm.safetensors"))
    b = load_file(str(tmp_path / "two" / "irm.safetensors"))
    tolerance = 1e-2 if "bfloat16" in extra else 1e-4  # GPU reductions are not bit-stable
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= tolerance


@pytest.mark.parametrize("checkpoint_host", [False, True])
def test_plan_estimate_against_peak_cuda_memory(tmp_path, checkpoint_host):
    """The plan's one-process total vs the peak CUDA allocation of real training steps on the
    embedded host in bf16 (prints both: the numbers for benchmarks/RESULTS.md)."""
    from irm_lens.training.config import preset
    from irm_lens.training.plan import HostShape, PlanInputs, rank_bytes
    from irm_lens.training.train import train

    host = load_host(device="cuda", dtype="bfloat16")
    config = preset("quick", device="cuda", dtype="bfloat16", max_steps=3, eval_every=3)
    torch.cuda.reset_peak_memory_stats()
    train(
        config,
        tmp_path / "run",
        host=host,
        progress=False,
        parallel="none",
        checkpoint_host=checkpoint_host,
    )
    peak = torch.cuda.max_memory_allocated()
    inputs = PlanInputs(
        HostShape.of(host),
        n_inject=host.cfg.n_layers,
        batch=config.batch_size,
        seq=config.max_len,
        dtype="bfloat16",
    )
    estimate = sum(rank_bytes(inputs, "one", checkpoint_host=checkpoint_host).values())
    print(
        f"checkpoint_host={checkpoint_host}: peak {peak / 2**30:.3f} GiB, "
        f"estimate {estimate / 2**30:.3f} GiB, ratio {estimate / peak:.2f}"
    )
    assert 0.7 <= estimate / peak <= 1.5
