"""Benchmark: IRM training throughput vs its limit, and peak memory, on the embedded host.

The limit is the time of the work a training step cannot avoid, each part measured separately
on the same batch: (1) the host's forward + backward with a gradient flowing into an additive
perturbation at every layer's attn_out (no host parameter gradients), plus (2) the IRM's forward +
backward on the layer-0 residual. Ours is the full step through ``attach``: forward, next-token
loss, backward and the Adam step. Target: limit / ours >= 0.85. Peak memory: the process's
maximum resident set size after loading the host and two training steps (before the comparison
functions run). Target at batch 8 x 128: < 4 GiB.

    .venv/bin/python -m benchmarks.bench_train_throughput [--repeats 5]
"""

from __future__ import annotations

import resource

import torch

from benchmarks._setup import int_options
from benchmarks._timing import interleaved_medians
from irm_lens import IRM, attach, load_dataset, load_host
from irm_lens.data.batches import collate, encode_rows
from irm_lens.inject import write_hook
from irm_lens.training.losses import next_token_loss
from irm_lens.training.memory import cap_allocator_cache


def main() -> None:
    args = int_options(__doc__, repeats=5, batch=8, max_len=128)
    cap_allocator_cache()  # as irm_lens.training.train does on CPU
    host = load_host(device="cpu")
    tok = host.tokenizer
    rows = load_dataset("anger", split="train").iloc[: args.batch]
    batch = collate(encode_rows(tok, rows, "chat"), tok.pad_token_id, args.max_len, pad_to_max=True)
    irm = IRM.for_host(host, seed=0)
    opt = torch.optim.Adam(irm.parameters(), lr=1e-4, fused=True)  # as irm_lens.training.train does
    shape = (*batch.tokens.shape, host.cfg.d_model)

    def full_step() -> None:
        opt.zero_grad(set_to_none=True)
        with attach(host, irm):
            logits = host(batch.tokens, attention_mask=batch.attention_mask)
            loss = next_token_loss(logits, batch.tokens, batch.answer_mask)
        loss.backward()
        opt.step()

    def host_fwd_bwd() -> None:
        deltas = [torch.zeros(shape, requires_grad=True) for _ in range(host.cfg.n_layers)]
        hooks = [
            (write_hook(layer), lambda x, hook, d=deltas[layer]: x + d)  # noqa: ARG005 (TL passes hook=)
            for layer in range(host.cfg.n_layers)
        ]
        with host.hooks(fwd_hooks=hooks):
            logits = host(batch.tokens, attention_mask=batch.attention_mask)
            loss = next_token_loss(logits, batch.tokens, batch.answer_mask)
        loss.backward()

    resid = torch.randn(shape)
    grad_out = torch.randn(irm.n_inject, *shape)

    def irm_fwd_bwd() -> None:
        irm.zero_grad(set_to_none=True)
        irm(resid).backward(grad_out)

    # Peak memory of training alone (host load included), before the comparison functions run.
    full_step()
    full_step()
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    medians = interleaved_medians(
        {"full_step": full_step, "host_fwd_bwd": host_fwd_bwd, "irm_fwd_bwd": irm_fwd_bwd},
        repeats=args.repeats,
    )
    limit = medians["host_fwd_bwd"] + medians["irm_fwd_bwd"]
    n_tokens = batch.n_real_tokens
    print(
        f"batch {tuple(batch.tokens.shape)} ({n_tokens} real tokens), IRM {irm.n_params():,} params"
    )
    for name, sec in medians.items():
        print(f"  {name:<13} {sec:.3f} s")
    print(f"limit = host + IRM = {limit:.3f} s ({n_tokens / limit:.0f} tok/s)")
    ours = medians["full_step"]
    print(f"ours  = full step  = {ours:.3f} s ({n_tokens / ours:.0f} tok/s)")
    print(f"throughput vs limit = {limit / medians['full_step']:.3f}  (target >= 0.85)")
    print(f"peak RSS of load + 2 training steps = {peak_gib:.2f} GiB  (target < 4 GiB)")


if __name__ == "__main__":
    main()
