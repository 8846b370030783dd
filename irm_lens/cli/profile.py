"""``irm-lens profile --host HOST --index I``: one residual index of a host, no IRM, no training.

irm-lens profile --index 507                                    # the embedded host
irm-lens profile --anatomy                                      # its massive dims, super weights
irm-lens profile --host /models/Llama-2-7b-chat-hf --index 1512 # the paper's question, on a GPU
Writes gains.csv, magnitude.csv, massive.csv, lever_rms.csv, lever_entropy.csv, summary.json and
a figure (PNG + HTML) into --out (default profile/index-<I>).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from irm_lens.cli.grammar import (
    add_host,
    add_no_png,
    add_out,
    add_prompts,
    holding_out,
    read_prompt_file,
)
from irm_lens.cli.types import at_least
from irm_lens.errors import IrmLensError


def _prompts(source: str) -> list[str]:
    from irm_lens.prompts import PAPER_PROMPTS

    if source == "paper":
        return list(PAPER_PROMPTS)
    if source == "heldout":
        raise IrmLensError(
            "--prompts heldout needs a run's emotion; profile a host on paper or a prompt file."
        )
    return read_prompt_file(source)


def _scales(text: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise IrmLensError(f"--scales {text!r}: give comma-separated numbers, e.g. 0,2.") from None
    if not scales or any(s == 1.0 for s in scales):
        raise IrmLensError(f"--scales {text!r}: give one or more factors other than 1 (e.g. 0,2).")
    return scales


def _out_path(args: argparse.Namespace) -> Path | None:
    """``--out``: default ``profile/anatomy`` or ``profile/index-<I>`` (None without either)."""
    if args.out or args.anatomy:
        return Path(args.out or "profile/anatomy")
    return None if args.index is None else Path(f"profile/index-{args.index}")


def _out(args: argparse.Namespace) -> Path:
    """``--out`` (``_out_path``), checked before any work: a folder irm_lens did not write, or
    another kind of result, is refused there, never replaced."""
    from irm_lens.files import check_replaceable

    out = _out_path(args)
    assert out is not None  # --anatomy or --index, checked by the caller
    check_replaceable(out, "profile")
    return out


def _cmd_anatomy(args: argparse.Namespace) -> int:
    """The host's anatomy: massive dims per token kind and the super weights behind them."""
    from irm_lens.data.datasets import load_dataset
    from irm_lens.files import write_csv_atomic
    from irm_lens.host import host_name, load_host
    from irm_lens.interventions.host_profile import (
        massive_ablation,
        perplexity_without,
        residual_profile,
        super_weights,
    )
    from irm_lens.interventions.index_profile import massive_activations
    from irm_lens.training.runlock import result_dir

    prompts = _prompts(args.prompts)
    out = _out(args)
    host = load_host(args.host, device=args.device, dtype=args.dtype)
    massive = massive_activations(residual_profile(host, prompts))
    weights = super_weights(host, prompts[0])
    rows = load_dataset("neutral", split="test").head(20)
    texts = (rows["question"] + " " + rows["answer"]).tolist()
    found = weights[weights["super"]].sort_values("over_median", ascending=False)
    effects = [
        perplexity_without(host, texts, int(r.layer), int(r.row), int(r.col))
        for r in found.itertuples()
    ]
    found = found.assign(perplexity=[b for b, _ in effects], zeroed=[z for _, z in effects])
    dims = [int(i) for i in massive["index"].unique()]
    ablated = massive_ablation(host, texts, dims) if dims else None
    with result_dir(out, "profile", "profile") as target:
        write_csv_atomic(target / "massive.csv", massive)
        if ablated is not None:
            write_csv_atomic(target / "massive_ablation.csv", ablated)
        write_csv_atomic(target / "super_weights.csv", weights)
    print(
        f"host {host_name(host)}: massive dims (|a| > 100 and > 1000x the layer median), by "
        "token kind:"
    )
    for index, group in massive.groupby("index", sort=False):
        kinds = ", ".join(sorted(set(group["token_kind"])))
        print(f"  {index}: up to {group['max_abs'].max():.4g} ({kinds})")
    if massive.empty:
        print("  none")
    if ablated is not None:
        ppl = dict(zip(ablated["ablation"], ablated["perplexity"], strict=True))
        n = int(ablated["n_values"].max())
        print(
            f"  their {n} massive values in every layer's residual (Sun et al.'s test; "
            f"perplexity on 20 bundled rows): as is {ppl['none']:.4g}, set to zero "
            f"{ppl['zero']:.4g}, set to their mean {ppl['mean']:.4g}"
        )
    print(
        "super weights (down_proj output peak >= 10x the median layer's; perplexity on 20 "
        "bundled rows as is -> with the weight zeroed):"
    )
    for r in found.itertuples():
        where = f"layers[{r.layer}].mlp.down_proj[{r.row}, {r.col}]"
        print(
            f"  {where}: output {r.output_value:.4g} ({r.over_median:.0f}x median), "
            f"perplexity {r.perplexity:.4g} -> {r.zeroed:.4g}"
        )
    if found.empty:
        print("  none")
    print(f"wrote {out}")
    print("next: irm-lens profile --index I   (one index: gains, magnitudes, the norm lever)")
    return 0


@holding_out(_out_path, "profile")
def _cmd_profile(args: argparse.Namespace) -> int:
    if args.anatomy:
        return _cmd_anatomy(args)
    if args.index is None:
        raise IrmLensError("give --index I (one residual index) or --anatomy (the whole host).")
    from irm_lens.export import save_figure
    from irm_lens.files import write_csv_atomic, write_text_atomic
    from irm_lens.host import load_host
    from irm_lens.interventions.index_profile import index_profile
    from irm_lens.plotting.profile import index_profile_result_figure
    from irm_lens.training.runlock import result_dir

    prompts, scales = _prompts(args.prompts), _scales(args.scales)
    out = _out(args)
    host = load_host(args.host, device=args.device, dtype=args.dtype)
    result = index_profile(
        host,
        prompts,
        args.index,
        n_controls=args.controls,
        scales=scales,
        seed=args.seed,
        progress=not args.no_progress,
    )
    fig = index_profile_result_figure(result, title=f"{result.host}, residual index {result.index}")
    with result_dir(out, "profile", "profile") as target:
        for name, table in result.tables().items():
            write_csv_atomic(target / f"{name}.csv", table)
        write_text_atomic(target / "summary.json", json.dumps(result.summary(), indent=2))
        save_figure(fig, target, "figure", png=not args.no_png, width=1300, height=900)
    print(_describe(result))
    print(f"wrote {out}")
    print("next: irm-lens predict --emotion anger   (which index an IRM would push on, and why)")
    return 0


def _describe(result: Any) -> str:
    f = result.facts
    massive = (
        ", ".join(
            f"{int(r['index'])} ({r['max_abs']:.0f}, x{r['times_median']:.0f} median)"
            for _, r in result.massive.head(5).iterrows()
        )
        or "none"
    )
    lines = [
        f"host {result.host}, residual index {f.index} (controls {list(result.controls)})",
        f"  final-norm gain {f.final_gain:.4g} (rank {f.final_gain_rank} from the smallest |gain|;"
        f" median {f.median_final_gain:.4g})",
        f"  unembedding row norm {f.unembed_norm:.4g} "
        f"(rank {f.unembed_norm_rank} from the largest)",
        f"  peak |residual| {f.peak_abs:.4g} at layer {f.peak_layer} on the {f.peak_token_kind} "
        f"token, {f.peak_over_median:.3g}x that layer's median index",
        f"  massive-activation dims (|a| > 100 and > 1000x median): {massive}; "
        f"this index {'is' if f.massive else 'is not'} one",
    ]
    for scale, ratio in f.final_rms_effect.items():
        lines.append(
            f"  scaled x{scale}: final-norm RMS change {ratio:.3g}x the controls'; "
            f"entropy change vs controls {f.entropy_effect[scale]:+.3g} nats"
        )
    return "\n".join(lines)


def add_parser(sub: Any, add_host_options: Any) -> None:
    """``profile``."""
    pr = sub.add_parser(
        "profile",
        help="one residual index of a host: gains, magnitudes, "
        "massive activations, the norm lever (no training)",
    )
    add_host(pr, first_argument=True)
    pr.add_argument("--index", type=at_least(0), default=None, help="the residual index")
    pr.add_argument(
        "--anatomy",
        action="store_true",
        help="the host's massive dims per token kind and its super weights (Yu et al. 2024)",
    )
    add_prompts(pr, "paper", "prompts to profile on")
    pr.add_argument(
        "--controls",
        type=at_least(1),
        default=8,
        help="control indices matched on mean |residual| (default 8)",
    )
    pr.add_argument("--scales", default="0,2", help="factors for the norm lever (default 0,2)")
    pr.add_argument("--seed", type=int, default=0, help="draws the control indices")
    add_out(pr, "profile/index-<I>")
    add_no_png(pr, "HTML figure only")
    pr.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_host_options(pr)
    pr.set_defaults(func=_cmd_profile)
