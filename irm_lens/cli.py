"""The ``irm-lens`` command line.

irm-lens info [HOST]
irm-lens generate --prompt TEXT [--host HOST] [--irm PATH] [--greedy | --temperature T --seed S]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from typing import cast

import torch

from irm_lens.errors import IrmLensError
from irm_lens.prompts import PROMPT_MODES

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
