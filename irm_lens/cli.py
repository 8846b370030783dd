"""The ``irm-lens`` command line.

irm-lens info [HOST]
irm-lens generate --prompt TEXT [--host HOST] [--irm PATH] [--greedy | --temperature T --seed S]
irm-lens train | evaluate | sweep | record | analyze | ablate | data ...
irm-lens lens decode | attribute | channels ...   (irm_lens/cli_lens.py)
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from irm_lens.errors import IrmLensError
from irm_lens.prompts import PROMPT_MODES

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from irm_lens.config import TrainConfig
    from irm_lens.irm import IRM

_HOST_HELP = (
    "host model: omit for the embedded SmolLM2-135M-Instruct, 'tiny-random-llama', a Hugging "
    "Face id (e.g. meta-llama/Llama-2-7b-chat-hf) or a local model directory"
)


def _add_host_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, ... (default: cuda if available)"
    )
    parser.add_argument("--dtype", default=None, help="float32 (default), bfloat16, float16")


def _cmd_info(args: argparse.Namespace) -> int:
    from irm_lens.host import host_name, load_host
    from irm_lens.inject import READ_HOOK, resid_pre_hook, write_hook

    host = load_host(args.host, device=args.device, dtype=args.dtype)
    cfg = host.cfg
    n_params = sum(p.numel() for p in host.parameters())
    rows = [
        ("host", host_name(host)),
        ("architecture", str(getattr(cfg, "architecture", "?"))),
        ("parameters", f"{n_params:,}"),
        ("n_layers", cfg.n_layers),
        ("d_model", cfg.d_model),
        ("n_heads", cfg.n_heads),
        ("n_key_value_heads", getattr(cfg, "n_key_value_heads", None) or cfg.n_heads),
        ("d_mlp", cfg.d_mlp),
        ("d_vocab", cfg.d_vocab),
        ("n_ctx", cfg.n_ctx),
        ("device / dtype", f"{cfg.device} / {cfg.dtype}"),
        ("chat template", "yes" if getattr(host.tokenizer, "chat_template", None) else "no"),
        ("IRM reads", f"{READ_HOOK} (= {resid_pre_hook(0)} + {write_hook(0)})"),
        ("IRM writes", f"blocks.{{l}}.hook_attn_out, l in 0..{cfg.n_layers - 1}"),
        ("hook points", len(host.hook_dict)),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from irm_lens.host import load_host
    from irm_lens.inject import attach
    from irm_lens.irm import IRM
    from irm_lens.prompts import encode

    if args.greedy and (args.temperature is not None or args.top_k is not None):
        raise IrmLensError("--greedy cannot be combined with --temperature or --top-k.")
    host = load_host(args.host, device=args.device, dtype=args.dtype)
    irm = IRM.load(args.irm, host) if args.irm else None
    prompt_ids = encode(host.tokenizer, args.prompt, mode=args.mode).prompt_ids
    tokens = torch.tensor([prompt_ids], device=host.W_E.device)
    sample = not args.greedy
    if sample:
        torch.manual_seed(args.seed)
    kwargs = dict(
        max_new_tokens=args.max_new_tokens,
        do_sample=sample,
        temperature=args.temperature if args.temperature is not None else 1.0,
        top_k=args.top_k,
        verbose=False,
    )
    with torch.no_grad(), contextlib.ExitStack() as stack:
        if irm is not None:
            stack.enter_context(attach(host, irm))
        out = cast(torch.Tensor, host.generate(tokens, **kwargs))
    print(host.tokenizer.decode(out[0, tokens.shape[1] :], skip_special_tokens=True).strip())
    return 0


_TRAIN_OPTIONS = {
    # flag: (config field, type, help)
    "--emotion": ("emotion", str, "bundled dataset: anger, sadness, neutral, joy"),
    "--data": ("data", str, "train on this question/answer CSV instead (e.g. from data synth)"),
    "--layers": ("layers", str, "injected layers: all, every4, q1..q4, 0-7, 3,7,11"),
    "--loss": ("loss", str, "next-token (default) or paper (the original's double shift)"),
    "--prompt-mode": ("prompt_mode", str, "chat (host template, default) or plain"),
    "--l1": ("l1_alpha", float, "L1 penalty alpha on IRM outputs (0 = off)"),
    "--lr": ("lr", float, "Adam learning rate"),
    "--gamma": ("gamma", float, "StepLR decay per epoch"),
    "--batch-size": ("batch_size", int, "rows per forward"),
    "--grad-accum": ("grad_accum", int, "forwards per optimizer step"),
    "--max-len": ("max_len", int, "tokens per row"),
    "--epochs": ("epochs", int, "epochs"),
    "--max-steps": ("max_steps", int, "stop after this many optimizer steps"),
    "--eval-every": ("eval_every", int, "steps between validation passes and checkpoints"),
    "--patience": ("patience", int, "validation passes without improvement before stopping"),
    "--max-train-rows": ("max_train_rows", int, "use only the first N training rows"),
    "--width-mult": ("width_mult", int, "IRM hidden width multiplier"),
    "--init": ("init", str, "IRM init: paper or torch"),
    "--seed": ("seed", int, "seed of IRM init and data order"),
}


def _cmd_train(args: argparse.Namespace) -> int:
    from irm_lens.train import TrainConfig, preset, train

    run_dir = Path(args.run_dir)
    if args.resume:
        config_path = run_dir / "config.json"
        if not config_path.exists():
            raise IrmLensError(f"{run_dir}: no run to resume (no config.json). Drop --resume.")
        config = TrainConfig.from_json(config_path.read_text(), str(config_path))
    else:
        overrides = {
            field: getattr(args, field)
            for field, _, _ in _TRAIN_OPTIONS.values()
            if getattr(args, field) is not None
        }
        for key in ("host", "device", "dtype"):
            if getattr(args, key) is not None:
                overrides[key] = getattr(args, key)
        config = preset(args.preset, **overrides)
    result = train(config, run_dir, resume=args.resume, overwrite=args.overwrite)
    if result.stopped == "interrupted":
        print(f"interrupted after step {result.steps}; resume: irm-lens train {run_dir} --resume")
        return 130
    print(
        f"done: {result.steps} steps ({result.stopped}); best val loss {result.best_val:.4f} at "
        f"step {result.best_step}; IRM: {run_dir / 'irm.safetensors'}"
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from irm_lens.evaluate import alignment_summary, evaluate_run
    from irm_lens.train import TrainConfig

    run_dir = Path(args.run_dir)
    if not (run_dir / "irm.safetensors").exists():
        raise IrmLensError(f"{run_dir}: no irm.safetensors; train the run first (irm-lens train).")
    table = evaluate_run(run_dir, max_rows=args.max_rows, max_new_tokens=args.max_new_tokens)
    emotion = TrainConfig.from_json((run_dir / "config.json").read_text()).emotion
    for key, value in alignment_summary(table, emotion).items():
        print(f"{key:<20} {value:.4f}")
    print(f"wrote {run_dir / 'evaluation.csv'} and {run_dir / 'generations.csv'}")
    return 0


def _split(text: str, kind: type) -> list[Any]:
    return [kind(x) for x in text.split(",") if x.strip()]


def _cmd_sweep(args: argparse.Namespace) -> int:
    from irm_lens.sweep import describe, matrix, paper_matrix, run_sweep

    host_opts = {k: getattr(args, k) for k in ("host", "device", "dtype") if getattr(args, k)}
    if args.paper_matrix:
        configs = paper_matrix(args.preset, **host_opts)
    else:
        configs = matrix(
            emotions=_split(args.emotions, str),
            layer_sets=_split(args.layer_sets, str),
            l1=_split(args.l1, float),
            seeds=_split(args.seeds, int),
            losses=_split(args.losses, str),
            preset_name=args.preset,
            **host_opts,
        )
    print(f"{len(configs)} runs into {args.out_dir}:")
    print(describe(configs))
    if args.dry_run:
        return 0
    table = run_sweep(configs, args.out_dir)
    print(table.to_string(index=False))
    return 130 if (table["status"] == "interrupted").any() else 0


def _check_provenance(run_dir: Path, recording_dir: Path) -> None:
    """Refuse a recording made with another IRM than the run's current one."""
    import json

    from irm_lens.files import sha256_file

    meta = json.loads((recording_dir / "recording.json").read_text())
    config_path = run_dir / "config.json"
    if config_path.exists() and "host" in meta:
        from irm_lens.host import EMBEDDED

        run_host = json.loads(config_path.read_text()).get("host") or EMBEDDED
        if run_host != meta["host"]:
            raise IrmLensError(
                f"{recording_dir} was recorded on host {meta['host']!r}, but {run_dir} trains on "
                f"{run_host!r}. Record again: irm-lens record {run_dir}"
            )
    irm_path = run_dir / "irm.safetensors"
    if "irm_sha256" in meta and irm_path.exists() and meta["irm_sha256"] != sha256_file(irm_path):
        raise IrmLensError(
            f"{recording_dir} was recorded with another IRM than {irm_path} (retrained or "
            f"copied since?). Record again: irm-lens record {run_dir}"
        )


def _load_run(
    run_dir: Path, device: str | None, dtype: str | None
) -> tuple[TrainConfig, TransformerBridge, IRM]:
    """The config, host and best IRM of a training run."""
    from irm_lens.config import TrainConfig
    from irm_lens.host import load_host
    from irm_lens.irm import IRM

    if not (run_dir / "irm.safetensors").exists():
        raise IrmLensError(f"{run_dir}: no irm.safetensors; train the run first (irm-lens train).")
    config = TrainConfig.from_json((run_dir / "config.json").read_text())
    host = load_host(config.host, device=device or config.device, dtype=dtype or config.dtype)
    return config, host, IRM.load(run_dir / "irm.safetensors", host)


def _cmd_record(args: argparse.Namespace) -> int:
    import dataclasses

    from irm_lens.files import sha256_file
    from irm_lens.host import host_name
    from irm_lens.record import (
        PAPER_SAMPLING,
        GenerationSettings,
        prompt_set,
        record,
        save_recordings,
    )

    run_dir = Path(args.run_dir)
    config, host, irm = _load_run(run_dir, args.device, args.dtype)
    if args.sampling == "paper":
        settings = dataclasses.replace(PAPER_SAMPLING, seed=args.seed, batch_size=args.batch_size)
    else:
        settings = GenerationSettings(
            max_new_tokens=args.max_new_tokens, seed=args.seed, batch_size=args.batch_size
        )
    prompts = prompt_set(args.prompts, emotion=config.emotion, limit=args.limit)
    mode = args.mode or ("plain" if args.prompts == "paper" else config.prompt_mode)
    recordings = record(host, irm, prompts, mode=mode, settings=settings, hooks=args.hooks)
    out = Path(args.out) if args.out else run_dir / "recordings" / args.prompts
    meta = {
        "host": host_name(host),
        "irm": str(run_dir / "irm.safetensors"),
        "irm_sha256": sha256_file(run_dir / "irm.safetensors"),
        "mode": mode,
        "settings": dataclasses.asdict(settings),
    }
    save_recordings(recordings, out, meta=meta)
    n_tokens = sum(len(r.token_ids) for r in recordings)
    print(f"recorded {len(recordings)} prompts ({n_tokens} tokens) into {out}")
    return 0


def _host_analyses(
    run: Path,
    recordings: list[Any],
    top: int,
    stats: dict[str, float],
    target: Path,
    args: argparse.Namespace,
) -> None:
    """The analyses that need the host: where the IRM's top index sits in the host."""
    import json

    import pandas as pd

    from irm_lens import analysis, plotting
    from irm_lens.analysis import causal
    from irm_lens.export import save_figure
    from irm_lens.files import write_csv_atomic
    from irm_lens.irm import IRM
    from irm_lens.prompts import encode
    from irm_lens.record import GenerationSettings, record

    config, host, irm = _load_run(run, args.device, args.dtype)
    meta = json.loads((run / "recordings" / args.recording / "recording.json").read_text())
    mode = meta.get("mode", "plain")
    prompts = [r.prompt for r in recordings]
    profile = analysis.residual_profile(host, prompts, mode=mode)
    massive = analysis.massive_dims(profile, ratio=20.0)
    gains = analysis.norm_gains(host)
    tokens = torch.tensor([encode(host.tokenizer, prompts[0], mode=mode).prompt_ids],
                          device=host.W_E.device)  # fmt: skip
    untrained = IRM.for_host(host, irm.layers, config.width_mult, config.seed,
                             depth=config.depth, init=config.init)  # fmt: skip
    settings = (
        GenerationSettings(**meta["settings"]) if "settings" in meta else GenerationSettings()
    )
    base = record(host, untrained, prompts, mode=mode, settings=settings, progress=False)
    every = torch.cat([r.outputs for r in recordings])
    baseline = analysis.striation(every, irm.layers, n_permutations=args.permutations,
                                  baseline=torch.cat([r.outputs for r in base]))  # fmt: skip
    tables = {
        "massive_dims": massive,
        "norm_gains": gains,
        "propagation": causal.propagation(host, tokens, index=top),
        "irm_index_propagation": causal.irm_index_propagation(host, irm, tokens, index=top),
        "direct_logit_effect": causal.direct_logit_effect(host, top),
        "index_logit_attribution": causal.index_logit_attribution(host, tokens, index=top),
        "norm_mediated_effect": causal.norm_mediated_effect(host, tokens, index=top),
        "striation_vs_untrained": pd.DataFrame([baseline]),
    }
    out = target / "host"
    for key, table in tables.items():
        write_csv_atomic(out / f"{key}.csv", table)
    shown = [top, *[int(i) for i in massive["index"].head(2) if int(i) != top]]
    untrained_stats = {"index_share": baseline["baseline_index_share"], "layer_share": float("nan"),
                       "resid_share": float("nan")}  # fmt: skip
    figures = {
        "propagation": plotting.propagation_figure(tables["propagation"]),
        "direct_logit_effect": plotting.logit_effect_figure(
            tables["direct_logit_effect"], index=top
        ),
        "norm_mediated_effect": plotting.norm_effect_figure(
            tables["norm_mediated_effect"], index=top
        ),
        "massive_dims": plotting.massive_dims_figure(profile, indices=shown),
        "striation": plotting.striation_figure({run.name: stats, "untrained IRM": untrained_stats}),
    }
    for key, fig in figures.items():
        save_figure(fig, out, key, png=not args.no_png)
    gain = gains.set_index("index").loc[top]
    is_massive = top in set(massive["index"].astype(int))
    rank = int(gain["final_gain_rank"])
    print(
        f"  index {top}: massive-activation dim: {'yes' if is_massive else 'no'} (host's: "
        f"{massive['index'].head(3).tolist()}); final-norm gain rank {rank} of {len(gains)}; "
        f"untrained IRM index share {baseline['baseline_index_share']:.2f}"
    )


def _cmd_analyze(args: argparse.Namespace) -> int:
    import pandas as pd

    from irm_lens import analysis, plotting
    from irm_lens.export import save_figure
    from irm_lens.files import write_csv_atomic
    from irm_lens.record import load_recordings

    out = Path(args.out)
    runs = [Path(r) for r in args.run_dirs]
    for run in runs:  # check every input before writing anything
        load_recordings(run / "recordings" / args.recording)
        _check_provenance(run, run / "recordings" / args.recording)
    dominant_tables = {}
    for run in runs:
        recordings = load_recordings(run / "recordings" / args.recording)
        layers = recordings[0].layers
        name = run.name
        target = out / name
        masks = [analysis.token_mask(r.kinds) for r in recordings]
        selected = torch.cat([r.outputs[m] for r, m in zip(recordings, masks, strict=True)])
        every = torch.cat([r.outputs for r in recordings])
        kinds = [k for r in recordings for k in r.kinds]
        heat = analysis.heatmap(selected, ["prompt"] * len(selected), layers, token_set="all")
        timing = pd.concat(
            [analysis.topk_timing(r.outputs, r.kinds, k=args.k).assign(prompt=r.name)
             for r in recordings], ignore_index=True)  # fmt: skip
        dominant = analysis.dominant_indices(every)
        dominant_tables[name] = dominant
        stats = analysis.striation(every, layers, n_permutations=args.permutations)
        sparsity = analysis.sparsity_by_layer(every, layers)
        tables = {"heatmap": heat, "topk_timing": timing, "dominant_indices": dominant,
                  "striation": pd.DataFrame([stats]), "sparsity": sparsity,
                  "layer_topk": analysis.layer_topk(every, layers)}  # fmt: skip
        for key, table in tables.items():
            write_csv_atomic(target / f"{key}.csv", table)
        first = recordings[0]
        heat_title = f"{name}: mean IRM output, {len(selected)} tokens of {len(recordings)} prompts"
        k_used = min(args.k, first.outputs.numel())
        timing_title = f"{name}: top-{k_used} |IRM output| by token, prompt {first.prompt!r}"
        figures = {
            "heatmap": plotting.heatmap_figure(heat, title=heat_title),
            "topk_timing": plotting.topk_timing_figure(
                analysis.topk_timing(first.outputs, first.kinds, k=args.k), title=timing_title
            ),
            "dominant_indices": plotting.dominant_indices_figure(
                dominant, highlight=args.highlight
            ),
            "sparsity": plotting.sparsity_figure(sparsity),
        }
        for key, fig in figures.items():
            save_figure(fig, target, key, png=not args.no_png)
        top = dominant.iloc[0]
        print(f"{name}: top index {int(top['index'])} ({top['share']:.1%} of |output|); "
              f"index share {stats['index_share']:.2f}, p = {stats['p_value']:.3g}; "
              f"{len(kinds)} tokens -> {target}")  # fmt: skip
        if args.host_analyses:
            _host_analyses(run, recordings, int(top["index"]), stats, target, args)
    if len(dominant_tables) > 1:
        consistency, pairs = analysis.dominance_consistency(dominant_tables, k=5)
        write_csv_atomic(out / "consistency.csv", consistency)
        write_csv_atomic(out / "jaccard.csv", pairs)
        save_figure(
            plotting.consistency_figure(consistency), out, "consistency", png=not args.no_png
        )
    return 0


def _cmd_ablate(args: argparse.Namespace) -> int:
    from irm_lens.analysis.ablation import ablation_study
    from irm_lens.datasets import load_dataset
    from irm_lens.export import save_figure
    from irm_lens.files import write_csv_atomic
    from irm_lens.plotting import ablation_figure

    run_dir = Path(args.run_dir)
    config, host, irm = _load_run(run_dir, args.device, args.dtype)
    rows = load_dataset(config.emotion, split="test")
    rows = rows if args.max_rows is None else rows.iloc[: args.max_rows]
    table = ablation_study(host, irm, rows, args.index, emotion=config.emotion,
                           mode=config.prompt_mode, max_new_tokens=args.max_new_tokens,
                           generate=not args.no_generate)  # fmt: skip
    out = Path(args.out) if args.out else run_dir / f"ablation_index{args.index}"
    write_csv_atomic(out / "ablation.csv", table)
    save_figure(ablation_figure(table), out, "ablation", png=not args.no_png)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"wrote {out}")
    return 0


def _cmd_data_import(args: argparse.Namespace) -> int:
    from irm_lens.importers import read_source, write_qa_csv

    frame, report = read_source(args.src)
    write_qa_csv(frame, args.out)
    print(f"{report}; wrote {args.out}")
    return 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from irm_lens.host import load_host
    from irm_lens.synth import read_source, synthesize

    source = read_source(args.src)
    host = load_host(args.host, device=args.device, dtype=args.dtype)
    out = synthesize(host, source, args.emotion, args.out, seed=args.seed, limit=args.limit)
    print(f"{len(out)} rows in {args.out}; train with: irm-lens train RUN_DIR --data {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="irm-lens",
        description="Injectable Realignment Models on TransformerLens: train, record, dissect.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="describe a host: sizes, hook points the IRM uses")
    info.add_argument("host", nargs="?", default=None, help=_HOST_HELP)
    _add_host_options(info)
    info.set_defaults(func=_cmd_info)

    gen = sub.add_parser("generate", help="generate an answer, with or without an IRM attached")
    gen.add_argument("--prompt", required=True, help="the user's message")
    gen.add_argument("--host", default=None, help=_HOST_HELP)
    gen.add_argument("--irm", default=None, help="IRM checkpoint (.safetensors) to attach")
    gen.add_argument("--mode", choices=PROMPT_MODES, default="chat", help="prompt format")
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--greedy", action="store_true", help="greedy decoding")
    gen.add_argument("--temperature", type=float, default=None, help="sampling temperature")
    gen.add_argument("--top-k", type=int, default=None, help="sample from the k likeliest")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed")
    _add_host_options(gen)
    gen.set_defaults(func=_cmd_generate)

    tr = sub.add_parser("train", help="train an IRM on a bundled emotion dataset")
    tr.add_argument("run_dir", help="run directory (config.json, irm.safetensors, metrics.csv)")
    tr.add_argument(
        "--preset",
        default="quick",
        choices=["quick", "paper", "smoke"],
        help="quick: minutes on a CPU (default); paper: the original's schedule",
    )
    tr.add_argument("--host", default=None, help=_HOST_HELP)
    for flag, (field, kind, text) in _TRAIN_OPTIONS.items():
        tr.add_argument(flag, dest=field, type=kind, default=None, help=text)
    tr.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR")
    tr.add_argument("--overwrite", action="store_true", help="replace a run in RUN_DIR")
    _add_host_options(tr)
    tr.set_defaults(func=_cmd_train)

    ev = sub.add_parser("evaluate", help="NLL, NRC emotion profile and fact retention of a run")
    ev.add_argument("run_dir")
    ev.add_argument("--max-rows", type=int, default=None, help="held-out rows to use")
    ev.add_argument("--max-new-tokens", type=int, default=40)
    ev.set_defaults(func=_cmd_evaluate)

    sw = sub.add_parser("sweep", help="train a matrix of runs, skipping finished ones")
    sw.add_argument("out_dir", help="directory of run directories (and sweep.csv)")
    sw.add_argument(
        "--paper-matrix",
        action="store_true",
        help="the paper's 24 runs (3 emotions x 6 layer sets + 6 with L1)",
    )
    sw.add_argument("--emotions", default="anger,sadness,neutral")
    sw.add_argument("--layer-sets", default="all", help="comma list: q1..q4, every4, all, 0-7")
    sw.add_argument("--l1", default="0", help="comma list of L1 alphas (0 = off)")
    sw.add_argument("--seeds", default="42")
    sw.add_argument("--losses", default="next-token", help="next-token, paper, or both")
    sw.add_argument("--preset", default="quick", choices=["quick", "paper", "smoke"])
    sw.add_argument("--host", default=None, help=_HOST_HELP)
    sw.add_argument("--dry-run", action="store_true", help="list the runs, train nothing")
    _add_host_options(sw)
    sw.set_defaults(func=_cmd_sweep)

    rec = sub.add_parser("record", help="record IRM outputs while the host answers prompts")
    rec.add_argument("run_dir")
    rec.add_argument(
        "--prompts",
        default="paper",
        choices=["paper", "heldout"],
        help="paper: the original's seven prompts; heldout: test-split questions",
    )
    rec.add_argument(
        "--sampling",
        default="greedy",
        choices=["greedy", "paper"],
        help="greedy, or the original's sampling (T 1, top-k 50, 100 tokens)",
    )
    rec.add_argument("--max-new-tokens", type=int, default=40)
    rec.add_argument("--seed", type=int, default=0)
    rec.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="prompts answered at once (greedy answers do not depend on it; sampled ones do)",
    )
    rec.add_argument("--limit", type=int, default=None, help="record only the first N prompts")
    rec.add_argument(
        "--mode",
        choices=PROMPT_MODES,
        default=None,
        help="prompt format (default: plain for the paper set, else the run's)",
    )
    rec.add_argument("--hooks", nargs="*", default=[], help="host hook points to capture too")
    rec.add_argument(
        "--out", default=None, help="output directory (default RUN_DIR/recordings/SET)"
    )
    _add_host_options(rec)
    rec.set_defaults(func=_cmd_record)

    an = sub.add_parser("analyze", help="tables and figures from recorded IRM outputs")
    an.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    an.add_argument("--out", required=True, help="output directory (one folder per run)")
    an.add_argument("--recording", default="paper", help="recording set under RUN_DIR/recordings")
    an.add_argument("--k", type=int, default=1000, help="top-k for the timing histogram")
    an.add_argument("--permutations", type=int, default=200, help="striation permutation test")
    an.add_argument("--highlight", type=int, nargs="*", default=[], help="indices to highlight")
    an.add_argument("--no-png", action="store_true", help="HTML only (no browser needed)")
    an.add_argument(
        "--host-analyses",
        action="store_true",
        help="also load the host: massive dims, norm gains, propagation and logit effects of the "
        "top index, striation vs an untrained IRM (slower)",
    )
    _add_host_options(an)
    an.set_defaults(func=_cmd_analyze)

    ab = sub.add_parser("ablate", help="ablate one residual index (e.g. 'neuron 1512')")
    ab.add_argument("run_dir")
    ab.add_argument("--index", type=int, required=True, help="residual index to ablate")
    ab.add_argument("--max-rows", type=int, default=None, help="held-out rows to use")
    ab.add_argument("--max-new-tokens", type=int, default=30)
    ab.add_argument("--no-generate", action="store_true", help="skip the greedy generations")
    ab.add_argument(
        "--out", default=None, help="output directory (default RUN_DIR/ablation_indexI)"
    )
    ab.add_argument("--no-png", action="store_true", help="HTML only (no browser needed)")
    _add_host_options(ab)
    ab.set_defaults(func=_cmd_ablate)

    data = sub.add_parser("data", help="import or synthesize question/answer data")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    imp = data_sub.add_parser("import", help="SQuAD 2.0 JSON or the original's CSV -> our CSV")
    imp.add_argument("src")
    imp.add_argument("out")
    imp.set_defaults(func=_cmd_data_import)
    syn = data_sub.add_parser(
        "synth", help="rewrite answers in an emotion's voice with a local chat model (resumable)"
    )
    syn.add_argument("src", help="SQuAD 2.0 JSON or a question/answer CSV")
    syn.add_argument("out", help="output CSV (rows already there are kept)")
    syn.add_argument("--emotion", required=True, help="target voice, e.g. anger")
    syn.add_argument("--host", default=None, help=_HOST_HELP)
    syn.add_argument("--limit", type=int, default=None, help="rewrite only the first N rows")
    syn.add_argument("--seed", type=int, default=42)
    _add_host_options(syn)
    syn.set_defaults(func=_cmd_data_synth)

    from irm_lens import cli_lens

    cli_lens.add_parser(sub, _HOST_HELP, _add_host_options)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (IrmLensError, ValueError) as exc:
        print(f"irm-lens {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
