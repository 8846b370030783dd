"""``irm-lens record | analyze | ablate``: recording a run's IRM outputs and dissecting them.

irm-lens record RUN_DIR [--prompts paper|heldout] [--sampling greedy|paper] [--hooks ...]
irm-lens analyze RUN_DIR [RUN_DIR ...] --out DIR [--host-analyses]
irm-lens ablate RUN_DIR --index I
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irm_lens.cli.grammar import (
    PROMPT_SETS,
    add_max_rows,
    add_no_png,
    add_out,
    add_prompts,
    add_top,
    prompts_name,
    read_prompt_file,
)
from irm_lens.cli.types import at_least
from irm_lens.errors import IrmLensError
from irm_lens.prompts import PROMPT_MODES
from irm_lens.rundir import RECORDING_INFO, RunDir
from irm_lens.training.runlock import out_lock, run_lock

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from irm_lens.irm import IRM
    from irm_lens.training.config import TrainConfig


def _check_provenance(run_dir: Path, recording_dir: Path) -> None:
    """Refuse a recording made with another IRM than the run's current one."""
    from irm_lens.files import sha256_file
    from irm_lens.host import EMBEDDED
    from irm_lens.irm import IRM
    from irm_lens.record import read_recording_info
    from irm_lens.training.config import TrainConfig

    meta = read_recording_info(recording_dir)
    config_path = RunDir(run_dir).config
    if config_path.exists() and "host" in meta:
        run_host = TrainConfig.load(config_path).host or EMBEDDED
        if run_host != meta["host"]:
            raise IrmLensError(
                f"{recording_dir} was recorded on host {meta['host']!r}, but {run_dir} trains on "
                f"{run_host!r}. Record again: irm-lens record {run_dir}"
            )
    irm_path = RunDir(run_dir).irm
    if irm_path.exists():
        IRM.load(irm_path)  # a damaged checkpoint is named as such, not as "another IRM"
    if "irm_sha256" in meta and irm_path.exists() and meta["irm_sha256"] != sha256_file(irm_path):
        raise IrmLensError(
            f"{recording_dir} was recorded with another IRM than {irm_path} (retrained or "
            f"copied since?). Record again: irm-lens record {run_dir}"
        )


def _load_run(
    run_dir: Path, device: str | None, dtype: str | None
) -> tuple[TrainConfig, TransformerBridge, IRM]:
    """The config, host and best IRM of a training run."""
    from irm_lens.host import load_host
    from irm_lens.irm import IRM
    from irm_lens.training.config import TrainConfig

    if not RunDir(run_dir).irm.exists():
        raise IrmLensError(f"{run_dir}: no irm.safetensors; train the run first (irm-lens train).")
    config = TrainConfig.load(run_dir / "config.json")
    host = load_host(config.host, device=device or config.device, dtype=dtype or config.dtype)
    return config, host, IRM.load(RunDir(run_dir).irm, host)


def _cmd_record(args: argparse.Namespace) -> int:
    import dataclasses

    from irm_lens.files import check_replaceable
    from irm_lens.record import (
        PAPER_SAMPLING,
        GenerationSettings,
        RecordingSource,
        prompt_set,
        record,
        save_recordings,
    )

    if args.sampling == "paper" and args.max_new_tokens is not None:
        raise IrmLensError(
            "--max-new-tokens does not apply to --sampling paper, which keeps the original's "
            "length limit (100 tokens, prompt included); drop one of the two."
        )
    run_dir = Path(args.run_dir)
    with run_lock(run_dir, "record"):
        config, host, irm = _load_run(run_dir, args.device, args.dtype)
        if args.sampling == "paper":
            settings = dataclasses.replace(
                PAPER_SAMPLING, seed=args.seed, batch_size=args.batch_size
            )
        else:
            length = {} if args.max_new_tokens is None else {"max_new_tokens": args.max_new_tokens}
            settings = GenerationSettings(seed=args.seed, batch_size=args.batch_size, **length)
        if args.prompts == "heldout":  # the run's own test split (a custom-data run's too)
            prompts = config.rows("test")["question"].tolist()[: args.max_rows]
        elif args.prompts in PROMPT_SETS:
            prompts = prompt_set(args.prompts, limit=args.max_rows)
        else:
            prompts = read_prompt_file(args.prompts)[: args.max_rows]
        mode = args.mode or config.prompt_mode  # the format it was trained on; plain: as recorded
        name = prompts_name(args.prompts)
        out = Path(args.out) if args.out else RunDir(run_dir).recordings / name
        with out_lock(out, "record"):  # one writer per --out, its check included
            if out.exists() and not out.is_dir():
                raise IrmLensError(f"--out {out} is a file; give a directory for the recording.")
            check_replaceable(out, "recording")  # before the work: never a user's folder or a run
            if (out / RECORDING_INFO).exists() and not args.overwrite:
                raise IrmLensError(
                    f"{out} already holds a recording. Pass --overwrite to replace it (the new one "
                    "is swapped in whole once finished), or choose another --out."
                )
            recordings = record(host, irm, prompts, mode=mode, settings=settings, hooks=args.hooks)
            source = RecordingSource.of(host, RunDir(run_dir).irm, mode, settings)
            save_recordings(recordings, out, source=source)
        n_tokens = sum(len(r.token_ids) for r in recordings)
        print(f"recorded {len(recordings)} prompts ({n_tokens} tokens) into {out}")
        if out == RunDir(run_dir).recordings / name:
            print(f"next: irm-lens analyze {run_dir} --recording {name}")
            print(f"      irm-lens atlas {run_dir} --recording {name}")
        return 0


def _untrained_outputs(
    loaded: tuple[TrainConfig, TransformerBridge, IRM], recording: Path, recordings: list[Any]
) -> Any:
    """The control: the run's IRM before training, recorded on the same prompts with the same
    generation settings, pooled over every token."""
    from irm_lens.measures.recorded import pooled
    from irm_lens.record import GenerationSettings, read_recording_info, record

    config, host, _ = loaded
    meta = read_recording_info(recording)
    settings = GenerationSettings(**meta.get("settings", {}))
    untrained = config.untrained_irm(host)
    prompts = [r.prompt for r in recordings]
    mode = meta.get("mode", "plain")
    return pooled(record(host, untrained, prompts, mode=mode, settings=settings, progress=False))


def _host_analyses(
    loaded: tuple[TrainConfig, TransformerBridge, IRM],
    run: Path,
    prompts: list[str],
    top: int,
    stats: dict[str, float],
    target: Path,
    args: argparse.Namespace,
) -> None:
    """The analyses that need the host: where the IRM's top index sits in the host and what it
    does there (``interventions.host_profile`` and ``interventions.index_in_host``)."""
    import torch

    from irm_lens import interventions, plotting
    from irm_lens.export import save_figure
    from irm_lens.files import write_csv_atomic
    from irm_lens.prompts import encode
    from irm_lens.record import read_recording_info

    _, host, irm = loaded
    mode = read_recording_info(RunDir(run).recordings / args.recording).get("mode", "plain")
    profile = interventions.host_profile(host, prompts, mode=mode)
    tokens = torch.tensor(
        [encode(host.tokenizer, prompts[0], mode=mode).prompt_ids], device=host.W_E.device
    )
    effects = interventions.index_in_host(host, irm, tokens, index=top)
    massive, gains = profile["massive"], profile["gains"]
    out = target / "host"
    for key, table in {"massive_dims": massive, "norm_gains": gains, **effects}.items():
        write_csv_atomic(out / f"{key}.csv", table)
    shown = [top, *[int(i) for i in massive["index"].head(2) if int(i) != top]]
    untrained = {
        "index_share": stats["baseline_index_share"],
        "layer_share": float("nan"),
        "resid_share": float("nan"),
    }
    figures = {
        "propagation": plotting.propagation_figure(effects["propagation"]),
        "direct_logit_effect": plotting.logit_effect_figure(
            effects["direct_logit_effect"], index=top
        ),
        "norm_mediated_effect": plotting.norm_effect_figure(
            effects["norm_mediated_effect"], index=top
        ),
        "massive_dims": plotting.massive_dims_figure(profile["residual"], indices=shown),
        "striation": plotting.striation_figure({run.name: stats, "untrained IRM": untrained}),
    }
    for key, fig in figures.items():
        save_figure(fig, out, key, png=not args.no_png)
    rank = int(gains.set_index("index").loc[top]["final_gain_rank"])
    is_massive = top in set(massive["index"].astype(int))
    print(
        f"  index {top}: massive-activation dim: {'yes' if is_massive else 'no'} (host's: "
        f"{massive['index'].head(3).tolist()}); final-norm gain rank {rank} of {len(gains)}; "
        f"untrained IRM index share {stats['baseline_index_share']:.2f}"
    )


def _cmd_analyze(args: argparse.Namespace) -> int:
    out = Path(args.out or "analysis")
    with out_lock(out, "analyze"):
        return _analyze(args, out)


def _analyze(args: argparse.Namespace, out: Path) -> int:
    from irm_lens import measures, plotting
    from irm_lens.export import require_browser, save_figure
    from irm_lens.files import atomic_dir, check_replaceable, write_csv_atomic, write_text_atomic
    from irm_lens.measures.recorded import analyze_recordings
    from irm_lens.record import RecordingSource, load_recordings, read_recording_info
    from irm_lens.stack import provenance

    runs = [Path(r) for r in args.run_dirs]
    if not args.no_png:
        require_browser()
    for run in runs:  # check every input and output before writing anything
        load_recordings(RunDir(run).recordings / args.recording)
        _check_provenance(run, RunDir(run).recordings / args.recording)
        check_replaceable(out / run.name, "analysis")
    dominant_tables = {}
    for run in runs:
        recordings = load_recordings(RunDir(run).recordings / args.recording)
        name = run.name
        loaded = _load_run(run, args.device, args.dtype) if args.host_analyses else None
        recording = RunDir(run).recordings / args.recording
        baseline = _untrained_outputs(loaded, recording, recordings) if loaded else None
        tables = analyze_recordings(
            recordings, k=args.top, n_permutations=args.permutations, baseline=baseline
        )
        heat, dominant = tables["heatmap"], tables["dominant_indices"]
        dominant_tables[name] = dominant
        stats = {key: float(value) for key, value in tables["striation"].iloc[0].items()}
        n_tokens = sum(len(r.kinds) for r in recordings)
        n_paper = sum(int(measures.token_mask(r.kinds).sum()) for r in recordings)
        top = dominant.iloc[0]
        # One unit per run: a reader sees the old folder or the new one, never a mix.
        with atomic_dir(out / name, kind="analysis") as target:
            for key, table in tables.items():
                write_csv_atomic(target / f"{key}.csv", table)
            first = recordings[0]
            heat_title = f"{name}: mean IRM output, {n_paper} tokens of {len(recordings)} prompts"
            k_used = min(args.top, first.outputs.numel())
            timing_title = f"{name}: top-{k_used} |IRM output| by token, prompt {first.prompt!r}"
            figures = {
                "heatmap": plotting.heatmap_figure(heat, title=heat_title),
                "topk_timing": plotting.topk_timing_figure(
                    measures.topk_timing(first.outputs, first.kinds, k=args.top), title=timing_title
                ),
                "dominant_indices": plotting.dominant_indices_figure(
                    dominant, highlight=args.highlight
                ),
                "sparsity": plotting.sparsity_figure(tables["sparsity"]),
            }
            for key, fig in figures.items():
                save_figure(fig, target, key, png=not args.no_png)
            if loaded:
                prompts = [r.prompt for r in recordings]
                _host_analyses(loaded, run, prompts, int(top["index"]), stats, target, args)
        print(
            f"{name}: top index {int(top['index'])} ({top['share']:.1%} of |output|); "
            f"index share {stats['index_share']:.2f}, p = {stats['p_value']:.3g}; "
            f"{n_tokens} tokens -> {out / name}"
        )
    inputs = {}
    for run in runs:
        info = read_recording_info(RunDir(run).recordings / args.recording)
        inputs[run.name] = {
            "run": str(run),
            "recording": args.recording,
            **{k: info[k] for k in RecordingSource.field_names() if k in info},
        }
    settings = {
        "k": args.top,
        "permutations": args.permutations,
        "host_analyses": args.host_analyses,
    }
    write_text_atomic(
        out / "provenance.json",
        json.dumps({"inputs": inputs, "settings": settings, **provenance()}, indent=2, default=str),
    )
    if len(dominant_tables) > 1:
        consistency, pairs = measures.dominance_consistency(dominant_tables, k=5)
        write_csv_atomic(out / "consistency.csv", consistency)
        write_csv_atomic(out / "jaccard.csv", pairs)
        save_figure(
            plotting.consistency_figure(consistency), out, "consistency", png=not args.no_png
        )
    print(f"next: irm-lens ablate {runs[0]} --index top   (its top index zeroed and mean-ablated)")
    return 0


def _index_or_top(text: str) -> int | str:
    return "top" if text == "top" else at_least(0)(text)


def top_index(run_dir: Path) -> int:
    """The run's own top index: the residual index with the largest share of |output| in its
    paper-prompt recording."""
    from irm_lens import measures
    from irm_lens.measures.recorded import pooled
    from irm_lens.record import load_recordings

    recording = RunDir(run_dir).recordings / "paper"
    if not (recording / RECORDING_INFO).exists():
        raise IrmLensError(
            f"--index top: {run_dir} has no paper-prompt recording to find its top index in. "
            f"Record it first (irm-lens record {run_dir}), or give --index N."
        )
    outputs = pooled(load_recordings(recording))
    return int(measures.dominant_indices(outputs).iloc[0]["index"])


def _cmd_ablate(args: argparse.Namespace) -> int:
    from irm_lens.export import require_browser, save_figure
    from irm_lens.files import atomic_dir, write_csv_atomic
    from irm_lens.interventions.ablation import ablation_study
    from irm_lens.plotting import ablation_figure

    run_dir = Path(args.run_dir)
    if not args.no_png:
        require_browser()
    if args.index == "top":
        args.index = top_index(run_dir)
        print(f"--index top: the run's top index is {args.index}")
    out = Path(args.out) if args.out else run_dir / f"ablation_index{args.index}"
    # The output is one unit, checked (not a run directory by mistake) before the work.
    with (
        run_lock(run_dir, "ablate"),
        out_lock(out, "ablate"),
        atomic_dir(out, kind="ablation") as tmp,
    ):
        config, host, irm = _load_run(run_dir, args.device, args.dtype)
        rows = config.rows("test")
        rows = rows if args.max_rows is None else rows.iloc[: args.max_rows]
        answers: list[dict[str, Any]] = []
        table = ablation_study(
            host,
            irm,
            rows,
            args.index,
            emotion=config.emotion,
            mode=config.prompt_mode,
            max_new_tokens=args.max_new_tokens,
            generate=not args.no_generate,
            answers=answers,
        )
        write_csv_atomic(tmp / "ablation.csv", table)
        if answers:  # what each condition made the host say, beside the numbers
            import pandas as pd

            write_csv_atomic(tmp / "answers.csv", pd.DataFrame(answers))
        save_figure(ablation_figure(table), tmp, "ablation", png=not args.no_png)
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        print(f"wrote {out}")
        print(f"next: open {out}/ablation.html; irm-lens atlas {run_dir}   (every token's outputs)")
        return 0


def _recording_of(run_dir: Path, name: str) -> Path:
    """The run's recording ``name``, made by its current IRM (else an error saying what to do)."""
    recording = RunDir(run_dir).recordings / name
    if not (recording / RECORDING_INFO).exists():
        raise IrmLensError(
            f"{run_dir} has no recording {name!r}. Record it first: "
            f"irm-lens record {run_dir} --prompts {name}"
        )
    _check_provenance(run_dir, recording)
    return recording


def _cmd_atlas(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    recording = _recording_of(run_dir, args.recording)
    out = Path(args.out) if args.out else RunDir(run_dir).path / "atlas"
    with out_lock(out, "atlas"):
        return _atlas(args, run_dir, recording, out)


def _atlas(args: argparse.Namespace, run_dir: Path, recording: Path, out: Path) -> int:
    from irm_lens.export import save_figure
    from irm_lens.files import atomic_dir, check_replaceable
    from irm_lens.measures import dominant_indices
    from irm_lens.measures.recorded import pooled as pooled_outputs
    from irm_lens.plotting import atlas_figure
    from irm_lens.record import load_recordings

    check_replaceable(out, "atlas")
    recordings = load_recordings(recording)
    pooled = pooled_outputs(recordings)
    top = int(dominant_indices(pooled).iloc[0]["index"])
    highlight = sorted({top, *args.highlight})
    fig = atlas_figure(
        recordings,
        run=run_dir.name,
        indices=args.top,
        highlight=highlight,
        max_tokens=args.max_tokens,
    )
    with atomic_dir(out, kind="atlas") as target:
        save_figure(fig, target, "atlas", png=False)
    print(f"wrote {out / 'atlas.html'}: {len(recordings)} prompts, top index {top} highlighted")
    print(f"next: open it in a browser; irm-lens ablate {run_dir} --index top")
    return 0


def _compare_specificity(run_dir: Path, vectors: Any, max_rows: int | None) -> None:
    """Print the exported vectors' specificity beside the IRM's, measured alike."""
    from irm_lens.evaluate import intervention_specificity
    from irm_lens.host import load_host
    from irm_lens.inject import attach
    from irm_lens.irm import IRM
    from irm_lens.training.config import TrainConfig

    config = TrainConfig.load(RunDir(run_dir).config)
    host = load_host(config.host, device=config.device, dtype=config.dtype)
    irm = IRM.load(RunDir(run_dir).irm, host)
    irm.eval()
    memo: dict[tuple[Any, ...], Any] = {}  # the host-alone tables, computed once for both
    for name, within in (
        ("the IRM", lambda: attach(host, irm)),
        ("its vectors", lambda: vectors.applied(host)),
    ):
        s = intervention_specificity(host, config, within, max_rows=max_rows, host_memo=memo)
        shown = (
            f"{100 * s.specificity:.1f} % [95 % CI {100 * s.low:.1f}, {100 * s.high:.1f}]"
            if s.low == s.low
            else "not tested"
        )
        print(f"specificity of {name:<11} {shown} over {s.n_questions} test questions: {s.verdict}")


def _cmd_export(args: argparse.Namespace) -> int:
    from irm_lens.record import load_recordings
    from irm_lens.steer import SteeringVectors, steering_norms

    run_dir = Path(args.run_dir)
    recording = _recording_of(run_dir, args.recording)
    out = Path(args.out) if args.out else RunDir(run_dir).path / "steering.safetensors"
    if out.is_dir():
        raise IrmLensError(f"--out {out} is a directory; give the file to write.")
    if out.exists() and not args.overwrite:
        raise IrmLensError(f"{out} exists. Pass --overwrite to replace it, or another --out.")
    source = f"{run_dir.name}, recording {args.recording}"
    vectors = SteeringVectors.from_recordings(load_recordings(recording), source=source)
    vectors.save(out)
    norms = steering_norms(vectors)
    print(
        f"wrote {out}: {len(norms)} vectors (L2 norms {min(norms.values()):.3g} to "
        f"{max(norms.values()):.3g}), the IRM's mean output per layer"
    )
    if args.evaluate:
        _compare_specificity(run_dir, vectors, args.max_rows)
    print(
        "next: host.run_with_hooks(tokens, fwd_hooks=SteeringVectors.load(path).hooks())   "
        "(irm_lens.steer)"
    )
    return 0


def add_parsers(sub: Any, add_host_options: Any) -> None:
    """Register ``record``, ``analyze`` and ``ablate`` on the main parser's subcommands."""
    rec = sub.add_parser("record", help="record IRM outputs while the host answers prompts")
    rec.add_argument("run_dir")
    add_prompts(
        rec,
        "paper",
        "prompts to answer (heldout: the run's own test questions)",
    )
    rec.add_argument(
        "--sampling",
        default="greedy",
        choices=["greedy", "paper"],
        help="greedy, or the original's sampling (T 1, top-k 50, 100 tokens)",
    )
    rec.add_argument(
        "--max-new-tokens",
        type=at_least(1),
        default=None,
        help="tokens generated per prompt (default: 40; --sampling paper keeps the original's "
        "limit, 100 tokens with the prompt)",
    )
    rec.add_argument("--seed", type=int, default=0, help="sampling seed (--sampling paper)")
    rec.add_argument(
        "--batch-size",
        type=at_least(1),
        default=8,
        help="prompts answered at once (greedy answers do not depend on it; sampled ones do)",
    )
    add_max_rows(rec, "record only the first N prompts (default: all)")
    rec.add_argument(
        "--overwrite", action="store_true", help="replace a recording already at the output"
    )
    rec.add_argument(
        "--mode",
        choices=PROMPT_MODES,
        default=None,
        help="prompt format (default: the run's own; plain: as the original recorded)",
    )
    rec.add_argument("--hooks", nargs="*", default=[], help="host hook points to capture too")
    add_out(rec, "RUN_DIR/recordings/<prompts>")
    add_host_options(rec)
    rec.set_defaults(func=_cmd_record)

    an = sub.add_parser("analyze", help="tables and figures from recorded IRM outputs")
    an.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    add_out(an, "analysis, one folder per run")
    an.add_argument("--recording", default="paper", help="recording set under RUN_DIR/recordings")
    add_top(an, 1000, "the largest outputs counted by the timing histogram")
    an.add_argument(
        "--permutations", type=at_least(1), default=200, help="striation permutation test"
    )
    an.add_argument(
        "--highlight", type=at_least(0), nargs="*", default=[], help="indices to highlight"
    )
    add_no_png(an, "HTML only (no browser needed)")
    an.add_argument(
        "--host-analyses",
        action="store_true",
        help="also load the host: massive dims, norm gains, propagation and logit effects of the "
        "top index, striation vs an untrained IRM (slower)",
    )
    add_host_options(an)
    an.set_defaults(func=_cmd_analyze)

    at = sub.add_parser("atlas", help="an interactive per-token atlas of a run's recorded outputs")
    at.add_argument("run_dir")
    at.add_argument("--recording", default="paper", help="recording under RUN_DIR/recordings")
    add_top(at, 64, "residual indices shown: the largest mean |output|, plus the highlighted")
    at.add_argument(
        "--highlight",
        type=at_least(0),
        nargs="*",
        default=[],
        help="indices to highlight besides the run's own top index",
    )
    at.add_argument(
        "--max-tokens", type=at_least(1), default=48, help="tokens per prompt on the slider"
    )
    add_out(at, "RUN_DIR/atlas")
    at.set_defaults(func=_cmd_atlas)

    ex = sub.add_parser(
        "export", help="the IRM's mean output per layer as steering vectors (safetensors)"
    )
    ex.add_argument("run_dir")
    ex.add_argument("--recording", default="paper", help="recording under RUN_DIR/recordings")
    add_out(ex, "RUN_DIR/steering.safetensors")
    ex.add_argument("--overwrite", action="store_true", help="replace the file at --out")
    ex.add_argument("--evaluate", action="store_true", help="their specificity beside the IRM's")
    add_max_rows(ex, "test questions per voice for --evaluate (default: all)")
    ex.set_defaults(func=_cmd_export)

    ab = sub.add_parser("ablate", help="ablate one residual index (e.g. 'neuron 1512')")
    ab.add_argument("run_dir")
    ab.add_argument(
        "--index",
        type=_index_or_top,
        required=True,
        help="residual index to ablate, or 'top': the run's own top index in its paper-prompt "
        "recording (irm-lens record first)",
    )
    ab.add_argument("--max-rows", type=at_least(1), default=None, help="held-out rows to use")
    ab.add_argument(
        "--max-new-tokens", type=at_least(1), default=30, help="length of the ablated answers"
    )
    ab.add_argument("--no-generate", action="store_true", help="skip the greedy generations")
    add_out(ab, "RUN_DIR/ablation_index<I>")
    add_no_png(ab, "HTML only (no browser needed)")
    add_host_options(ab)
    ab.set_defaults(func=_cmd_ablate)
