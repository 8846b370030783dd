"""``irm-lens predict --host HOST --emotion E``: the residual index an IRM would push on, before
training.

irm-lens predict --emotion anger                                   # the embedded host
irm-lens predict --host /models/Llama-2-7b-chat-hf --emotion anger \\
    --loss paper --device cuda --dtype float16                     # is 1512 the one, and why?
Ranks residual indices by the gradient of the alignment loss with respect to a zero per-layer
bias at the IRM's write points, by a 60-step bias-only fit (a steering vector per layer) and by
the logit lever carried from each layer by TransformerLens's Jacobian lens, summed over the
injected layers, beside the final-norm gain, the unembedding row norm, the stop token's weight
and massive-activation status. Writes prediction.csv and summary.json into --out
(default predict/<emotion>).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from irm_lens.cli.grammar import add_host, add_max_rows, add_out, add_top, holding_out
from irm_lens.cli.types import at_least
from irm_lens.errors import IrmLensError
from irm_lens.prompts import PROMPT_MODES
from irm_lens.training.modes import LOSS_KINDS, PADDING_RULES, PAPER_OFFSETS


def _out_path(args: argparse.Namespace) -> Path:
    """``--out``, default ``predict/<emotion>``."""
    return Path(args.out or f"predict/{args.emotion or DEFAULT_EMOTION}")


DEFAULT_EMOTION = "anger"
"""The voice predicted for without ``--emotion`` (a ``--data`` file's rows take it as label)."""


@holding_out(_out_path, "predict")
def _cmd_predict(args: argparse.Namespace) -> int:
    from irm_lens.files import check_replaceable, write_csv_atomic, write_text_atomic
    from irm_lens.host import host_name, load_host
    from irm_lens.interventions.host_profile import host_profile
    from irm_lens.interventions.predict import (
        bias_gradients,
        fit_bias,
        host_levers,
        predict_index,
        transport_levers,
    )
    from irm_lens.irm import parse_layers
    from irm_lens.prompts import PAPER_PROMPTS, PromptMode
    from irm_lens.training.config import Objective, TrainConfig
    from irm_lens.training.runlock import result_dir

    try:
        objective = Objective(args.loss, args.paper_offset, args.paper_padding)
        config = TrainConfig(emotion=args.emotion or DEFAULT_EMOTION, data=args.data)
    except ValueError as exc:
        raise IrmLensError(str(exc)) from None
    mode: PromptMode = args.prompt_mode or ("plain" if args.loss == "paper" else "chat")
    rows = config.rows("train").head(args.max_rows)
    if rows.empty:
        raise IrmLensError(f"no training rows for {args.data or args.emotion}; check --data.")
    label = args.emotion or config.emotion
    out = _out_path(args)
    check_replaceable(out, "prediction")  # before the work: never a user's folder
    host = load_host(args.host, device=args.device, dtype=args.dtype)
    layers = parse_layers(args.layers, host.cfg.n_layers)
    grads = bias_gradients(
        host,
        rows,
        objective=objective,
        mode=mode,
        max_len=args.max_len,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    massive = host_profile(host, PAPER_PROMPTS)["massive"]["index"].tolist()
    fit = None
    if args.fit_steps:
        fit = fit_bias(
            host,
            rows,
            objective=objective,
            mode=mode,
            max_len=args.max_len,
            steps=args.fit_steps,
            batch_size=args.batch_size,
            layers=layers,
            progress=not args.no_progress,
        ).vectors
    transport = None
    if args.lens_texts:
        texts = config.rows("train").head(args.lens_texts)
        try:
            transport = transport_levers(
                host,
                (texts["question"] + " " + texts["answer"]).tolist(),
                max_seq_len=args.max_len,
                progress=not args.no_progress,
            )
        except ValueError as exc:
            raise IrmLensError(f"{exc} Or skip the transport lever: --lens-texts 0.") from None
    table = predict_index(grads, layers, host_levers(host, massive), fit, transport)
    summary = {
        "host": host_name(host),
        "emotion": label,
        "data": args.data,
        "objective": vars(objective),
        "prompt_mode": mode,
        "layers": list(layers),
        "rows": len(rows),
        "predicted_index": int(table.iloc[0]["index"]),
        "fitted_index": None
        if fit is None
        else int(table.loc[table["fit_rank"].idxmin(), "index"]),
        "massive_dims": [int(i) for i in massive],
    }
    with result_dir(out, "prediction", "predict") as target:
        write_csv_atomic(target / "prediction.csv", table)
        write_text_atomic(target / "summary.json", json.dumps(summary, indent=2))
    print(_describe(table, summary, args.top))
    print(f"wrote {out}")
    print("next: train an IRM on the same data and compare its top index (irm-lens train, record)")
    return 0


def _describe(table: Any, summary: dict[str, Any], top: int) -> str:
    fitted = "fit_rank" in table
    head = (
        f"host {summary['host']}, {summary['emotion']} ({summary['rows']} rows, "
        f"{summary['objective']['kind']} loss, {len(summary['layers'])} injected layers): the "
        f"bias gradient is largest at index {summary['predicted_index']}"
    )
    if fitted:
        head += f"; a bias-only fit pushes most on {summary['fitted_index']}"
    columns = ["rank", "index", "share", "consistency_rank"] + (["fit_rank"] if fitted else [])
    columns += ["final_gain", "unembed_norm", "lever_rank"]
    columns += ["transport_rank"] if "transport_rank" in table else []
    columns += ["stop_rank", "massive"]
    shown = table.head(top)[columns].rename(columns={"rank": "gradient_rank"})
    return head + "\n" + shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def add_parser(sub: Any, add_host_options: Any) -> None:
    """``predict``."""
    pr = sub.add_parser(
        "predict",
        help="rank the residual indices an IRM would push on, from the host alone (no training)",
    )
    add_host(pr, first_argument=True)
    pr.add_argument("--emotion", default=None, help="bundled dataset: anger, sadness, neutral, joy")
    pr.add_argument("--data", default=None, help="question/answer CSV instead of a bundled set")
    pr.add_argument("--layers", default="all", help="injected layers (all, every4, q1, 0-7, ...)")
    pr.add_argument("--loss", choices=LOSS_KINDS, default="next-token", help="the IRM's objective")
    pr.add_argument(
        "--paper-offset",
        type=int,
        choices=PAPER_OFFSETS,
        default=2,
        help="with --loss paper: tokens ahead",
    )
    pr.add_argument(
        "--paper-padding",
        choices=PADDING_RULES,
        default="counted",
        help="with --loss paper: padding targets",
    )
    pr.add_argument(
        "--prompt-mode",
        choices=PROMPT_MODES,
        default=None,
        help="default: chat (plain with --loss paper)",
    )
    add_max_rows(pr, "training rows the gradient and the bias-only fit use", default=64)
    pr.add_argument("--max-len", type=at_least(3), default=128, help="tokens per row")
    pr.add_argument("--batch-size", type=at_least(1), default=8, help="rows per backward pass")
    pr.add_argument(
        "--fit-steps",
        type=at_least(0),
        default=60,
        help="Adam steps of the bias-only fit (default 60; 0: skip it)",
    )
    pr.add_argument(
        "--lens-texts",
        type=at_least(0),
        default=16,
        help="training rows the Jacobian lens of the transport lever is fitted on (0: skip it)",
    )
    add_top(pr, 10, "indices to print")
    add_out(pr, "predict/<emotion>")
    pr.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_host_options(pr)
    pr.set_defaults(func=_cmd_predict)
