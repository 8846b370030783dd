"""Benchmark (a): TransformerBridge forward (no IRM) vs the raw Hugging Face forward.

Embedded host (SmolLM2-135M-Instruct), fp32, CPU, batch 8 x 64 tokens. Target: bridge / HF
<= 1.05. The bridge runs eager attention, so the fair baseline is HF with eager attention;
HF's default (sdpa) is reported beside it.

    .venv/bin/python benchmarks/bench_forward.py [--repeats 7]
"""

from __future__ import annotations

import platform

import torch

from benchmarks._setup import int_options, random_tokens
from benchmarks._timing import interleaved_medians
from irm_lens.host import load_hf, load_host


def main() -> None:
    args = int_options(__doc__, repeats=7, batch=8, pos=64)
    host = load_host(device="cpu")
    hf_eager, _ = load_hf(None)
    hf_eager.set_attn_implementation("eager")
    hf_sdpa, _ = load_hf(None)
    hf_sdpa.set_attn_implementation("sdpa")
    tokens = random_tokens(host, args.batch, args.pos)

    with torch.no_grad():
        medians = interleaved_medians(
            {
                "bridge": lambda: host(tokens),
                "hf_eager": lambda: hf_eager(tokens).logits,
                "hf_sdpa": lambda: hf_sdpa(tokens).logits,
            },
            repeats=args.repeats,
        )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor()}")
    print(f"batch {args.batch} x {args.pos} tokens, {args.repeats} interleaved repeats (medians)")
    for name, sec in medians.items():
        print(f"  {name:<9} {sec:.3f} s")
    print(f"bridge / hf_eager = {medians['bridge'] / medians['hf_eager']:.3f}  (target <= 1.05)")
    print(f"bridge / hf_sdpa  = {medians['bridge'] / medians['hf_sdpa']:.3f}")


if __name__ == "__main__":
    main()
