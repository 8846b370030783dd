"""Benchmark: LM-head decoding of every MLP neuron and every residual index of the embedded host.

SmolLM2-135M: 30 layers x 1536 neurons + 576 residual indices = 46,656 units, each scored against
all 49,152 tokens through the final norm's gain and the unembedding (2 x 46,080 x 576 x 49,152 =
2.6 TFLOP for the neurons; the residual indices are the matrix's own rows), top 5 tokens kept.
Target: under 10 s on 2 cores.

Besides ``top_tokens_all`` itself (median of 3 calls after a warm-up, two chunk sizes), the
benchmark measures this machine's dense fp32 matrix-product rate on one chunk of the same data,
with torch's BLAS and with numpy's (OpenBLAS), and prints the time an exact fp32 decode cannot
beat at the better of the two rates: the arithmetic divided by the rate.

    .venv/bin/python -m benchmarks.bench_decode
"""

from __future__ import annotations

import torch

from benchmarks._timing import interleaved_medians
from irm_lens.host import load_host
from irm_lens.lenses import top_tokens_all
from irm_lens.lenses.decode import decoding_matrix


def main() -> None:
    torch.set_num_threads(2)
    host = load_host(device="cpu")
    cfg = host.cfg
    units = cfg.n_layers * cfg.d_mlp + cfg.d_model
    flop = 2 * cfg.n_layers * cfg.d_mlp * cfg.d_model * cfg.d_vocab
    fns = {f"chunk {c}": (lambda c=c: top_tokens_all(host, top=5, chunk=c)) for c in (1024, 4096)}
    medians = interleaved_medians(fns, repeats=3, warmup=1)
    print(f"{units} units x {cfg.d_vocab} tokens ({flop / 1e12:.2f} TFLOP), 2 threads:")
    for name, seconds in medians.items():
        print(
            f"  {name}: median {seconds:.2f} s ({flop / seconds / 1e9:.0f} GFLOP/s); target < 10 s"
        )

    chunk = host.W_out.detach().float().reshape(-1, cfg.d_model)[:2048].contiguous()
    matrix = decoding_matrix(host).contiguous()
    a, b = chunk.numpy(), matrix.numpy()
    rates = interleaved_medians(
        {"torch": lambda: chunk @ matrix, "numpy (OpenBLAS)": lambda: a @ b}, repeats=5, warmup=1
    )
    chunk_flop = 2 * chunk.shape[0] * cfg.d_model * cfg.d_vocab
    print("dense fp32 product of one 2048-unit chunk (median of 5):")
    for name, seconds in rates.items():
        print(f"  {name}: {seconds:.3f} s = {chunk_flop / seconds / 1e9:.0f} GFLOP/s")
    best = chunk_flop / min(rates.values())
    print(
        f"an exact fp32 decode cannot take less than {flop / best:.1f} s at {best / 1e9:.0f} "
        "GFLOP/s on this machine"
    )


if __name__ == "__main__":
    main()
