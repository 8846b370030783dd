"""Benchmark: LM-head decoding of every MLP neuron and every residual index of the embedded host.

SmolLM2-135M: 30 layers x 1536 neurons + 576 residual indices = 46,656 units, each scored against
all 49,152 tokens through the final norm's gain and the unembedding (about 1.3 TFLOP), top 5
tokens kept. Target: under 10 s on 2 cores. Reports the median of 3 calls after a warm-up, and
the chunk size's effect.

    .venv/bin/python -m benchmarks.bench_decode
"""

from __future__ import annotations

import torch

from benchmarks._timing import interleaved_medians
from irm_lens.host import load_host
from irm_lens.lenses import top_tokens_all


def main() -> None:
    torch.set_num_threads(2)
    host = load_host(device="cpu")
    cfg = host.cfg
    units = cfg.n_layers * cfg.d_mlp + cfg.d_model
    flop = 2 * units * cfg.d_model * cfg.d_vocab
    fns = {f"chunk {c}": (lambda c=c: top_tokens_all(host, top=5, chunk=c)) for c in (1024, 4096)}
    medians = interleaved_medians(fns, repeats=3, warmup=1)
    print(f"{units} units x {cfg.d_vocab} tokens ({flop / 1e12:.2f} TFLOP), 2 threads:")
    for name, seconds in medians.items():
        print(
            f"  {name}: median {seconds:.2f} s ({flop / seconds / 1e9:.0f} GFLOP/s); target < 10 s"
        )


if __name__ == "__main__":
    main()
