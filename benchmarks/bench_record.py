"""Benchmark: the cost of recording IRM outputs, and of saving them.

(a) ``record`` (generation with the IRM attached, then block 0 over each sequence to recover the
IRM outputs) vs the same greedy generation with the IRM attached and nothing recorded, one prompt
at a time (``batch_size=1``) and as one left-padded batch (the default). Target: <= 1.05x. Also
the batching's own gain: ``record`` with ``batch_size=1`` over the default.
(b) Saving the recordings as one safetensors file + tokens.csv vs the original logger's
one CSV file per token (d_model x n_inject values each), on the same recordings. Target: >= 200x.

    .venv/bin/python -m benchmarks.bench_record [--prompts 3] [--repeats 3]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks._setup import int_options
from benchmarks._timing import interleaved_medians
from irm_lens import IRM, PAPER_PROMPTS, attach, encode, load_host
from irm_lens.data.batches import left_pad, pad_id
from irm_lens.record import GenerationSettings, record, save_recordings


def _csv_per_token_numpy(recordings, directory: Path) -> None:
    """One CSV per token (rows = residual index, columns = layers), with numpy's savetxt."""
    for p, rec in enumerate(recordings):
        for t in range(rec.outputs.shape[0]):
            path = directory / f"prompt{p}_token{t}.csv"
            np.savetxt(path, rec.outputs[t].T.numpy(), delimiter=",")


def _csv_per_token_pandas(recordings, directory: Path) -> None:
    """One CSV per token through a pandas DataFrame, the way a logger usually writes it."""
    for p, rec in enumerate(recordings):
        for t in range(rec.outputs.shape[0]):
            path = directory / f"prompt{p}_token{t}.csv"
            pd.DataFrame(rec.outputs[t].T.numpy()).to_csv(path)


def main() -> None:
    args = int_options(__doc__, prompts=3, repeats=3, max_new_tokens=40)
    host = load_host(device="cpu")
    irm = IRM.for_host(host, seed=0)
    prompts = list(PAPER_PROMPTS[: args.prompts])
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)
    single = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=1)
    encoded = [encode(host.tokenizer, p, mode="plain").prompt_ids for p in prompts]
    ids = [torch.tensor([x]) for x in encoded]
    batch, mask = left_pad(encoded, pad_id(host.tokenizer))
    kwargs = dict(max_new_tokens=args.max_new_tokens, do_sample=False, verbose=False)

    def generate_one_by_one() -> None:
        with torch.no_grad(), attach(host, irm):
            for x in ids:
                host.generate(x, **kwargs)

    def generate_batch() -> None:
        with torch.no_grad(), attach(host, irm):
            host.generate(batch, attention_mask=mask, **kwargs)

    def record_with(chosen: GenerationSettings):
        return lambda: record(host, irm, prompts, mode="plain", settings=chosen, progress=False)

    gen = interleaved_medians(
        {
            "generate 1x1": generate_one_by_one,
            "record 1x1": record_with(single),
            "generate batch": generate_batch,
            "record batch": record_with(settings),
        },
        repeats=args.repeats,
    )
    recordings = record(
        host, irm, list(PAPER_PROMPTS), mode="plain", settings=settings, progress=False
    )
    n_tokens = sum(r.outputs.shape[0] for r in recordings)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        times = []
        for repeat in range(5):  # ours is short: the median of 5 saves into fresh directories
            start = time.perf_counter()
            save_recordings(recordings, root / f"ours{repeat}")
            times.append(time.perf_counter() - start)
        ours = statistics.median(times)
        baselines = {}
        for name, writer in (("numpy", _csv_per_token_numpy), ("pandas", _csv_per_token_pandas)):
            (root / name).mkdir()
            start = time.perf_counter()
            writer(recordings, root / name)
            baselines[name] = time.perf_counter() - start

    print(
        f"(a) {len(prompts)} prompts x {args.max_new_tokens} greedy tokens, {args.repeats} repeats"
    )
    for how, g, r in (
        ("one at a time", "generate 1x1", "record 1x1"),
        ("one batch", "generate batch", "record batch"),
    ):
        print(
            f"    {how}: generate with IRM attached {gen[g]:.2f} s, record {gen[r]:.2f} s, "
            f"record / generate = {gen[r] / gen[g]:.3f}  (target <= 1.05)"
        )
    speedup = gen["record 1x1"] / gen["record batch"]
    print(f"    record one at a time / record batched = {speedup:.2f}")
    shape = tuple(recordings[0].outputs.shape[1:])
    print(f"(b) 7 prompts, {n_tokens} tokens of {shape} values")
    print(
        f"    safetensors + tokens.csv {ours * 1e3:.1f} ms ({ours / n_tokens * 1e3:.3f} ms/token)"
    )
    for name, sec in baselines.items():
        per = sec / n_tokens * 1e3
        print(f"    one CSV per token ({name}): {sec * 1e3:.0f} ms ({per:.2f} ms/token)")
        print(f"      ours is {sec / ours:.0f}x faster  (target >= 200x)")


if __name__ == "__main__":
    main()
