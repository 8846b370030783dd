"""The ``irm-lens`` command line.

irm-lens info [--host HOST]
irm-lens generate --prompt TEXT [--host HOST] [--irm PATH] [--greedy | --temperature T --seed S]
irm-lens train | evaluate | sweep | data | plan ...
irm-lens record | analyze | atlas | ablate ...    (irm_lens/cli/recorded.py)
irm-lens lens decode | attribute | channels ...   (irm_lens/cli/lens.py)
irm-lens profile [--host HOST] --index I          (irm_lens/cli/profile.py)
irm-lens predict [--host HOST] --emotion E        (irm_lens/cli/predict.py)

Every verb speaks one grammar (irm_lens/cli/grammar.py): --host, --out, --prompts, --top,
--max-rows, each with one meaning, and every help shows its default.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from irm_lens.cli import lens as cli_lens
from irm_lens.cli import predict as cli_predict
from irm_lens.cli import profile as cli_profile
from irm_lens.cli import recorded as cli_recorded
from irm_lens.cli.grammar import (
    PresetDefaults,
    add_host,
    add_max_rows,
    resolve_host,
    show_defaults,
)
from irm_lens.cli.types import at_least, device, index_list, positive_float, seed
from irm_lens.errors import IrmLensError
from irm_lens.prompts import PROMPT_MODES
from irm_lens.rundir import RunDir
from irm_lens.training.modes import (
    INITS,
    LOSS_KINDS,
    OPTIMIZERS,
    PADDING_RULES,
    PAPER_OFFSETS,
    PARALLEL_MODES,
    PRESET_NAMES,
)

# torch, the host and the training loop are imported where a command runs, so that `--help`
# and argument errors answer at once.


def _add_host_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", type=device, default=None, help="cpu, cuda, ... (default: cuda if available)"
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
        ("IRM writes", f"{write_hook(0)} ... {write_hook(cfg.n_layers - 1)} (added to)"),
        ("hook points", len(host.hook_dict)),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    hosted = f" --host {args.host}" if args.host else ""
    print(f"next: irm-lens train runs/anger --emotion anger{hosted}   (or: irm-lens plan{hosted})")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from irm_lens.canary import check_generation
    from irm_lens.host import check_context, load_host
    from irm_lens.inject import attach
    from irm_lens.irm import IRM
    from irm_lens.prompts import encode
    from irm_lens.seeding import seeded

    if args.greedy and (args.temperature is not None or args.top_k is not None):
        raise IrmLensError("--greedy cannot be combined with --temperature or --top-k.")
    host = load_host(args.host, device=args.device, dtype=args.dtype)
    check_generation(host)
    irm = IRM.load(args.irm, host) if args.irm else None
    prompt_ids = encode(host.tokenizer, args.prompt, mode=args.mode).prompt_ids
    check_context(host, len(prompt_ids), args.max_new_tokens, "--prompt")
    tokens = torch.tensor([prompt_ids], device=host.W_E.device)
    sample = not args.greedy
    kwargs = dict(
        max_new_tokens=args.max_new_tokens,
        do_sample=sample,
        temperature=args.temperature if args.temperature is not None else 1.0,
        top_k=args.top_k,
        verbose=False,
    )
    with torch.no_grad(), seeded(args.seed if sample else None), contextlib.ExitStack() as stack:
        if irm is not None:
            stack.enter_context(attach(host, irm))
        out = cast(torch.Tensor, host.generate(tokens, **kwargs))
    print(host.tokenizer.decode(out[0, tokens.shape[1] :], skip_special_tokens=True).strip())
    # stdout carries the answer alone (for scripts); the hint goes to stderr
    print("next: irm-lens train runs/anger --emotion anger   (an IRM to attach)", file=sys.stderr)
    return 0


_TRAIN_CHOICES = {
    "init": INITS,
    "loss": LOSS_KINDS,
    "prompt_mode": PROMPT_MODES,
    "optimizer": OPTIMIZERS,
    "paper_offset": PAPER_OFFSETS,
    "paper_padding": PADDING_RULES,
}
_TRAIN_OPTIONS = {
    # flag: (config field, type, help)
    "--emotion": ("emotion", str, "bundled dataset: anger, sadness, neutral, joy"),
    "--data": ("data", str, "train on this question/answer CSV instead (e.g. from data synth)"),
    "--layers": ("layers", str, "injected layers: all, every4, q1..q4, 0-7, 3,7,11"),
    "--loss": ("loss", str, "next-token (default) or paper (the original's double shift)"),
    "--paper-offset": (
        "paper_offset",
        int,
        "with --loss paper: predict 1 or 2 tokens ahead (2: the original, as it ran)",
    ),
    "--paper-padding": (
        "paper_padding",
        str,
        "with --loss paper: padding targets counted (the original, as it ran) or masked",
    ),
    "--prompt-mode": ("prompt_mode", str, "chat (host template, default) or plain"),
    "--l1": ("l1_alpha", float, "L1 penalty alpha on IRM outputs (0 = off)"),
    "--lr": ("lr", float, "learning rate"),
    "--optimizer": ("optimizer", str, "adam (default) or sgd (momentum 0.9; the Adam control)"),
    "--gamma": ("gamma", float, "StepLR decay per epoch"),
    "--batch-size": ("batch_size", int, "rows per forward"),
    "--grad-accum": ("grad_accum", int, "forwards per optimizer step"),
    "--max-len": ("max_len", int, "tokens per row"),
    "--epochs": ("epochs", int, "epochs"),
    "--max-steps": ("max_steps", int, "stop after this many optimizer steps"),
    "--eval-every": ("eval_every", int, "steps between validation passes and checkpoints"),
    "--patience": ("patience", int, "validation passes without improvement before stopping"),
    "--max-train-rows": ("max_train_rows", int, "use only the first N training rows"),
    "--max-val-rows": ("max_val_rows", int, "use only the first N validation rows"),
    "--width-mult": ("width_mult", at_least(1), "IRM hidden width multiplier"),
    "--init": ("init", str, "IRM init: paper or torch"),
    "--seed": ("seed", seed, "seed of IRM init and data order (0 to 2**32 - 1)"),
    "--mask": ("masked", index_list, "residual indices held at 0 in the IRM's output: 270,507"),
    "--snapshots": (
        "snapshots",
        index_list,
        "also save the IRM after these steps (snapshots/step-N): 0,14,60",
    ),
    "--rotate-output": (
        "rotated_output",
        int,
        "inject R_l v_l through a fixed random rotation per layer (this seed): a control",
    ),
}


def _persona_label(data: str) -> str:
    """The label of a custom-data run trained without --emotion: the one value of the file's
    ``emotion`` column; refused when it has none (the run would be labelled "anger")."""
    from irm_lens.data.importers import label_of

    label = label_of(data)
    if label is None:
        raise IrmLensError(
            f"--data {data}: name the persona with --emotion (e.g. --emotion pirate); the file "
            "has no emotion column with a single value to take the label from."
        )
    print(f"persona label {label!r} (from the emotion column of {data})")
    return label


def _cmd_train(args: argparse.Namespace) -> int:
    from irm_lens.training.distributed import launched
    from irm_lens.training.runs import EXTENDABLE
    from irm_lens.training.train import TrainConfig, preset, train

    run_dir = Path(args.run_dir)
    given = [
        flag
        for flag, (field, _, _) in _TRAIN_OPTIONS.items()
        if getattr(args, field) is not None and field not in EXTENDABLE
    ]
    given += [
        f"--{k}" for k in ("preset", "host", "device", "dtype") if getattr(args, k) is not None
    ]
    if args.resume and (given or args.overwrite):
        raise IrmLensError(
            f"--resume continues the run saved in {RunDir(run_dir).config}; "
            f"{', '.join(given) or '--overwrite'} cannot apply to it (only --max-steps and "
            "--snapshots, to extend it). Drop them, or start a new run (another directory, or "
            "--overwrite without --resume)."
        )
    if args.resume:
        if not RunDir(run_dir).config.exists():
            raise IrmLensError(f"{run_dir}: no run to resume (no config.json). Drop --resume.")
        config = TrainConfig.load(RunDir(run_dir).config)
        longer = {k: getattr(args, k) for k in EXTENDABLE if getattr(args, k) is not None}
        config = dataclasses.replace(config, **longer)  # train() checks it extends the run
    else:
        overrides = {
            field: getattr(args, field)
            for field, _, _ in _TRAIN_OPTIONS.values()
            if getattr(args, field) is not None
        }
        if args.data is not None and args.emotion is None:
            overrides["emotion"] = _persona_label(args.data)
        for key in ("host", "device", "dtype"):
            if getattr(args, key) is not None:
                overrides[key] = getattr(args, key)
        config = preset(args.preset or "quick", **overrides)
    result = train(
        config,
        run_dir,
        resume=args.resume,
        overwrite=args.overwrite,
        parallel=args.parallel,
        checkpoint_host=args.checkpoint_host,
        keep_optimizer=args.keep_optimizer,
    )
    if not launched().is_main:
        return 0  # rank 0 reports
    if result.stopped == "interrupted":
        print(f"interrupted after step {result.steps}; resume: irm-lens train {run_dir} --resume")
        return 130
    print(
        f"done: {result.steps} steps ({result.stopped}); best val loss {result.best_val:.4f} at "
        f"step {result.best_step}; IRM: {RunDir(run_dir).irm}"
    )
    print(
        f"next: irm-lens evaluate {run_dir}   (NLL, voice, facts)\n"
        f"      irm-lens record {run_dir}     (its outputs on the paper's prompts)"
    )
    return 0


def _specificity_line(s: Any) -> str:
    """A ``Specificity`` as the report prints it: estimate, 95 % CI, own-voice drop, verdict."""
    if s.low != s.low:  # NaN: too few questions or no other voice to compare with
        return f"{'specificity':<20} not tested ({s.n_questions} questions in every voice)"
    return (
        f"{'specificity':<20} {100 * s.specificity:.1f} % [95 % CI {100 * s.low:.1f}, "
        f"{100 * s.high:.1f}] over {s.n_questions} questions; own-voice NLL drop "
        f"{100 * s.own_drop:.1f} % [{100 * s.own_low:.1f}, {100 * s.own_high:.1f}]: {s.verdict}"
    )


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from irm_lens.evaluate import alignment_summary, evaluate_run, run_specificity
    from irm_lens.training.train import TrainConfig

    run_dir = Path(args.run_dir)
    if not RunDir(run_dir).irm.exists():
        raise IrmLensError(f"{run_dir}: no irm.safetensors; train the run first (irm-lens train).")
    table = evaluate_run(run_dir, max_rows=args.max_rows, max_new_tokens=args.max_new_tokens)
    emotion = TrainConfig.load(RunDir(run_dir).config).emotion
    for key, value in alignment_summary(table, emotion).items():
        shown = "not measured" if value != value else f"{value:.4f}"  # NaN: e.g. no references
        print(f"{key:<20} {shown}")
    print(_specificity_line(run_specificity(run_dir)))
    print(f"wrote {RunDir.EVALUATION}, {RunDir.GENERATIONS} and {RunDir.SPECIFICITY} in {run_dir}")
    print(f"next: irm-lens record {run_dir}   (its outputs on the paper's prompts)")
    return 0


def _split(text: str, kind: type, option: str) -> list[Any]:
    """A comma-separated option as a list; an empty list or a bad item names the option."""
    items = [x.strip() for x in text.split(",") if x.strip()]
    try:
        values = [kind(x) for x in items]
    except ValueError:
        what = {int: "whole number", float: "number"}.get(kind, kind.__name__)
        raise IrmLensError(f"{option} {text!r}: each item must be a {what}.") from None
    if not values:
        raise IrmLensError(f"{option} is empty; give at least one value.")
    if kind is float and any(not math.isfinite(v) or v < 0 for v in values):
        raise IrmLensError(f"{option} {text!r}: values must be finite and >= 0.")
    return values


def _seeds(text: str) -> list[int]:
    """``--seeds``: whole numbers from 0 to 2**32 - 1, the option named in every error."""
    values = _split(text, int, "--seeds")
    for value in values:
        try:
            seed(str(value))
        except argparse.ArgumentTypeError as exc:
            raise IrmLensError(f"--seeds {text!r}: {exc}.") from None
    return values


def _choices(text: str, option: str, allowed: Sequence[str]) -> list[str]:
    """A comma list of names, each one of ``allowed``, the option named in the error."""
    values = _split(text, str, option)
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise IrmLensError(
            f"{option} {text!r}: {', '.join(map(repr, unknown))} not one of {list(allowed)}."
        )
    return values


def _losses(text: str) -> list[str]:
    """``--losses``: a comma list of objectives, ``both`` for every one."""
    return list(LOSS_KINDS) if text.strip() == "both" else _choices(text, "--losses", LOSS_KINDS)


def _check_layer_sets(host: str | None, specs: Sequence[str]) -> None:
    """Every layer set of a sweep against the host's layer count, before any run trains (from
    the host's config alone: no weights are loaded)."""
    from irm_lens.irm import parse_layers
    from irm_lens.training.plan import host_shape

    n_layers = host_shape(host).n_layers
    for spec in specs:
        try:
            parse_layers(spec, n_layers)
        except IrmLensError as exc:
            raise IrmLensError(f"--layer-sets {spec}: {exc}") from None


def _cmd_sweep(args: argparse.Namespace) -> int:
    from irm_lens.data.datasets import EMOTIONS
    from irm_lens.training.distributed import launched
    from irm_lens.training.sweep import describe, matrix, paper_matrix, parse_shard, run_sweep

    host_opts = {k: getattr(args, k) for k in ("host", "device", "dtype") if getattr(args, k)}
    if args.paper_matrix:
        configs = paper_matrix(args.preset, **host_opts)
    else:
        configs = matrix(
            emotions=_choices(args.emotions, "--emotions", EMOTIONS),
            layer_sets=_split(args.layer_sets, str, "--layer-sets"),
            l1=_split(args.l1, float, "--l1"),
            seeds=_seeds(args.seeds),
            losses=_losses(args.losses),
            preset_name=args.preset,
            **host_opts,
        )
    _check_layer_sets(args.host, sorted({c.layers for c in configs}))
    try:
        shard = parse_shard(args.shard)
    except ValueError as exc:
        raise IrmLensError(str(exc)) from None
    main = launched().is_main
    if main:
        mine = configs[shard[0] :: shard[1]]
        share = "" if shard[1] == 1 else f" (shard {args.shard}: {len(mine)} of {len(configs)})"
        print(f"{len(configs)} runs into {args.out_dir}{share}:")
        print(describe(mine))
    if args.dry_run:
        return 0
    log = functools.partial(print, flush=True)
    table = run_sweep(configs, args.out_dir, shard=shard, wait=not args.no_wait, log=log)
    if main:
        print(table.to_string(index=False))
        print(f"next: irm-lens evaluate {args.out_dir}/RUN and irm-lens record {args.out_dir}/RUN")
    return 130 if (table["status"] == "interrupted").any() else 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from irm_lens.irm import parse_layers
    from irm_lens.training.plan import GIB, PlanInputs, host_shape, plan_table, predict_bytes

    shape = host_shape(args.host)
    if args.task == "predict":
        parts = predict_bytes(shape, args.batch_size, args.max_len, args.dtype)
        detail = ", ".join(f"{k} {v / GIB:.2f}" for k, v in parts.items())
        print(
            f"{shape.name}: irm-lens predict with {args.batch_size} rows x {args.max_len} "
            f"tokens per batch, host {args.dtype}: {sum(parts.values()) / GIB:.2f} GiB on one "
            f"device ({detail} GiB)."
        )
        return 0
    layers = parse_layers(args.layers, shape.n_layers)
    inputs = PlanInputs(
        shape, len(layers), args.batch_size, args.max_len, args.dtype, args.width_mult
    )
    table, advice = plan_table(inputs, args.procs, args.device_gib)
    print(
        f"{shape.name}: {shape.n_params / 1e9:.3g} B parameters, {shape.n_layers} layers; IRM "
        f"on {len(layers)} layers; {args.batch_size} rows x {args.max_len} tokens per step; "
        f"host {args.dtype}, IRM and Adam fp32. GiB per rank:"
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"recommended: {advice}")
    hosted = f" --host {args.host}" if args.host else ""
    print(f"next: irm-lens train runs/anger --emotion anger{hosted}   (or: torchrun ... train)")
    return 0


def _cmd_data_import(args: argparse.Namespace) -> int:
    from irm_lens.data.importers import read_source, write_qa_csv

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise IrmLensError(
            f"{out} exists; pass --overwrite to replace it, or choose another output file."
        )
    frame, report = read_source(args.src)
    write_qa_csv(frame, out)
    print(f"{report}; wrote {args.out}")
    print(f"next: irm-lens data synth {args.out} VOICE.csv --emotion anger   (answers in a voice)")
    return 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from irm_lens.host import load_host
    from irm_lens.synth import read_source, synthesize

    source = read_source(args.src)
    host = load_host(args.host, device=args.device, dtype=args.dtype)
    out = synthesize(host, source, args.emotion, args.out, seed=args.seed, limit=args.max_rows)
    print(f"{len(out)} rows in {args.out}")
    print(f"next: irm-lens train runs/{args.emotion} --data {args.out} --emotion {args.emotion}")
    return 0


def _add_inspect_parsers(sub: Any) -> None:
    """``info`` and ``generate``."""
    info = sub.add_parser("info", help="describe a host: sizes, hook points the IRM uses")
    add_host(info, first_argument=True)
    _add_host_options(info)
    info.set_defaults(func=_cmd_info)

    gen = sub.add_parser("generate", help="generate an answer, with or without an IRM attached")
    gen.add_argument("--prompt", required=True, help="the user's message")
    add_host(gen)
    gen.add_argument("--irm", default=None, help="IRM checkpoint (.safetensors) to attach")
    gen.add_argument("--mode", choices=PROMPT_MODES, default="chat", help="prompt format")
    gen.add_argument("--max-new-tokens", type=at_least(1), default=64, help="answer length cap")
    gen.add_argument("--greedy", action="store_true", help="greedy decoding")
    gen.add_argument(
        "--temperature", type=positive_float, default=None, help="sampling temperature"
    )
    gen.add_argument("--top-k", type=at_least(1), default=None, help="sample from the k likeliest")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed")
    _add_host_options(gen)
    gen.set_defaults(func=_cmd_generate)


def _add_train_parser(sub: Any) -> None:
    """``train``."""
    tr = sub.add_parser(
        "train", help="train an IRM on a bundled emotion dataset", formatter_class=PresetDefaults
    )
    tr.add_argument("run_dir", help="run directory (config.json, irm.safetensors, metrics.csv)")
    tr.add_argument(
        "--preset",
        default=None,
        choices=PRESET_NAMES,
        help="quick: minutes on a CPU (default); paper: the original's schedule",
    )
    add_host(tr)
    for flag, (field, kind, text) in _TRAIN_OPTIONS.items():
        choices = _TRAIN_CHOICES.get(field)
        tr.add_argument(flag, dest=field, type=kind, default=None, help=text, choices=choices)
    tr.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in RUN_DIR (with --max-steps: extend a finished run)",
    )
    tr.add_argument("--overwrite", action="store_true", help="replace a run in RUN_DIR")
    tr.add_argument(
        "--parallel",
        default="auto",
        choices=PARALLEL_MODES,
        help="under torchrun: ddp (auto's choice) replicates the IRM, fsdp shards it and its "
        "Adam state; none trains in this process alone",
    )
    tr.add_argument(
        "--checkpoint-host",
        action="store_true",
        help="recompute the host's blocks in the backward pass (less memory, ~1 more forward)",
    )
    tr.add_argument(
        "--keep-optimizer",
        action="store_true",
        help="keep the optimizer state once the run stops for good (epochs done or early stop; "
        "dropped by default: nothing can resume such a run, and it is 2/3 of last.safetensors)",
    )
    _add_host_options(tr)
    tr.set_defaults(func=_cmd_train)


def _add_run_parsers(sub: Any) -> None:
    """``evaluate`` and ``sweep``."""
    ev = sub.add_parser("evaluate", help="NLL, NRC emotion profile and fact retention of a run")
    ev.add_argument("run_dir")
    add_max_rows(ev, "held-out rows to use (default: all)")
    ev.add_argument(
        "--max-new-tokens", type=at_least(1), default=40, help="length of the greedy answers"
    )
    ev.set_defaults(func=_cmd_evaluate)

    sw = sub.add_parser("sweep", help="train a matrix of runs, skipping finished ones")
    sw.add_argument("out_dir", help="directory of run directories (and sweep.csv)")
    sw.add_argument(
        "--paper-matrix",
        action="store_true",
        help="the paper's 24 runs (3 emotions x 6 layer sets + 6 with L1)",
    )
    sw.add_argument(
        "--emotions",
        default="anger,sadness,neutral",
        help="comma list of bundled voices: anger, sadness, neutral, joy",
    )
    sw.add_argument("--layer-sets", default="all", help="comma list: q1..q4, every4, all, 0-7")
    sw.add_argument("--l1", default="0", help="comma list of L1 alphas (0 = off)")
    sw.add_argument("--seeds", default="42", help="comma list of seeds")
    sw.add_argument(
        "--losses", default="next-token", help="comma list: next-token, paper (both: each)"
    )
    sw.add_argument("--preset", default="quick", choices=PRESET_NAMES, help="every run's preset")
    add_host(sw)
    sw.add_argument("--dry-run", action="store_true", help="list the runs, train nothing")
    sw.add_argument(
        "--shard",
        default="0/1",
        help="i/n: train runs i, i+n, ... only (one task of a cluster array, e.g. "
        "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)",
    )
    sw.add_argument(
        "--no-wait",
        action="store_true",
        help="pass by runs another worker is training instead of waiting for them",
    )
    _add_host_options(sw)
    sw.set_defaults(func=_cmd_sweep)


def _add_data_parsers(sub: Any) -> None:
    """``data import`` and ``data synth``."""
    data = sub.add_parser("data", help="import or synthesize question/answer data")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    imp = data_sub.add_parser("import", help="SQuAD 2.0 JSON or the original's CSV -> our CSV")
    imp.add_argument("src", help="SQuAD 2.0 JSON or the original's question/answer CSV")
    imp.add_argument("out", help="output CSV (question, answer)")
    imp.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    imp.set_defaults(func=_cmd_data_import)
    syn = data_sub.add_parser(
        "synth", help="rewrite answers in an emotion's voice with a local chat model (resumable)"
    )
    syn.add_argument("src", help="SQuAD 2.0 JSON or a question/answer CSV")
    syn.add_argument("out", help="output CSV (rows already there are kept)")
    syn.add_argument("--emotion", required=True, help="target voice, e.g. anger")
    add_host(syn)
    add_max_rows(syn, "rewrite only the first N rows (default: all)")
    syn.add_argument("--seed", type=int, default=42, help="sampling seed of the rewrites")
    _add_host_options(syn)
    syn.set_defaults(func=_cmd_data_synth)


def _add_plan_parser(sub: Any) -> None:
    """``plan``."""
    pl = sub.add_parser(
        "plan", help="memory per process to train an IRM: one process, DDP, FSDP (no training)"
    )
    add_host(pl, first_argument=True)
    pl.add_argument(
        "--for",
        dest="task",
        choices=("train", "predict"),
        default="train",
        help="what to plan: training an IRM (default) or irm-lens predict",
    )
    pl.add_argument("--layers", default="all", help="injected layers: all, every4, q1..q4, 0-7")
    pl.add_argument("--batch-size", type=at_least(1), default=8, help="rows per optimizer step")
    pl.add_argument("--max-len", type=at_least(2), default=128, help="tokens per row")
    pl.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="the host's weights",
    )
    pl.add_argument("--width-mult", type=at_least(1), default=3, help="IRM hidden width multiplier")
    pl.add_argument("--procs", type=at_least(1), default=2, help="processes (GPUs) to plan for")
    pl.add_argument(
        "--device-gib",
        type=positive_float,
        default=None,
        help="memory of one device in GiB, for a recommendation",
    )
    pl.set_defaults(func=_cmd_plan)


def _version() -> str:
    """irm-lens's version and the locked stack it runs on (``irm_lens.stack``)."""
    from irm_lens import __version__
    from irm_lens.stack import describe

    return f"irm-lens {__version__} ({describe()})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="irm-lens",
        description="Injectable Realignment Models on TransformerLens: train, record, dissect.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    _add_inspect_parsers(sub)
    _add_train_parser(sub)
    _add_run_parsers(sub)
    cli_recorded.add_parsers(sub, _add_host_options)  # record, analyze, ablate
    _add_data_parsers(sub)
    cli_lens.add_parser(sub, _add_host_options)
    _add_plan_parser(sub)
    cli_profile.add_parser(sub, _add_host_options)
    cli_predict.add_parser(sub, _add_host_options)
    show_defaults(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    resolve_host(parser, args)
    try:
        return int(args.func(args))
    except (IrmLensError, ValueError, OSError) as exc:  # OSError: names the file (full disk...)
        print(f"irm-lens {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # what was written is whole (atomic writes); say so, no traceback
        print(
            f"irm-lens {args.command}: interrupted; files already written are complete, "
            "run the command again to go on.",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
