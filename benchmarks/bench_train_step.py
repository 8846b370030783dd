"""Benchmark (b): an IRM training step through ``attach`` vs through inline injection.

Embedded host, fp32, CPU, batch 8 x 64 tokens, IRM on all layers (width 3 x d_model, paper
init). One step = forward + next-token cross-entropy + backward + Adam. The reference injects
inline in a loop over the raw HF modules (``irm_lens.reference``), with no hooks at all.
Target: attach / inline <= 1.10.

    .venv/bin/python benchmarks/bench_train_step.py [--repeats 5]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks._setup import int_options, random_tokens
from benchmarks._timing import interleaved_medians
from irm_lens import IRM, attach
from irm_lens.host import load_hf, load_host
from irm_lens.reference import injected_logits


def _loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())


def main() -> None:
    args = int_options(__doc__, repeats=5, batch=8, pos=64)
    host = load_host(device="cpu")
    hf_model, _ = load_hf(None)
    hf_model.requires_grad_(False)
    irm_a = IRM.for_host(host, seed=0)
    irm_b = IRM.for_host(host, seed=0)
    opt_a = torch.optim.Adam(irm_a.parameters(), lr=1e-4)
    opt_b = torch.optim.Adam(irm_b.parameters(), lr=1e-4)
    tokens = random_tokens(host, args.batch, args.pos)

    def step_attach() -> None:
        opt_a.zero_grad(set_to_none=True)
        with attach(host, irm_a):
            loss = _loss(host(tokens), tokens)
        loss.backward()
        opt_a.step()

    def step_inline() -> None:
        opt_b.zero_grad(set_to_none=True)
        loss = _loss(injected_logits(hf_model, irm_b, tokens), tokens)
        loss.backward()
        opt_b.step()

    medians = interleaved_medians(
        {"attach": step_attach, "inline": step_inline}, repeats=args.repeats
    )
    print(f"IRM parameters: {irm_a.n_params():,}; host layers: {host.cfg.n_layers}")
    print(f"batch {args.batch} x {args.pos} tokens, {args.repeats} interleaved repeats (medians)")
    for name, sec in medians.items():
        print(f"  {name:<7} {sec:.3f} s/step")
    print(f"attach / inline = {medians['attach'] / medians['inline']:.3f}  (target <= 1.10)")


if __name__ == "__main__":
    main()
