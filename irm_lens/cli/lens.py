"""``irm-lens lens decode|attribute|channels``: the neuron-level lenses from the command line.

irm-lens lens decode --index 507                        # a residual index through the LM head
irm-lens lens decode --layer 12 --neuron 5 7 --clamp-prompt "I feel"   # neurons, clamp-checked
irm-lens lens attribute --prompt "The capital of France is"
irm-lens lens channels --index 507
Each writes CSV tables and a figure (PNG + HTML) into --out (default lens/<verb>).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irm_lens.cli.grammar import add_host, add_no_png, add_out, add_top, holding_out
from irm_lens.cli.types import at_least
from irm_lens.errors import IrmLensError

if TYPE_CHECKING:
    import torch


def _out_path(args: argparse.Namespace) -> Path:
    """``--out``, default ``lens/<verb>``."""
    return Path(args.out or f"lens/{args.lens_verb}")


def _out(args: argparse.Namespace) -> Path:
    """``--out``, checked before any work: a folder irm_lens did not write, or another kind of
    result, is refused there, never replaced."""
    from irm_lens.files import check_replaceable

    out = _out_path(args)
    check_replaceable(out, "lens")
    return out


def _host(args: argparse.Namespace) -> Any:
    """The host, with ``--index`` (where the verb takes one) checked against its residual."""
    from irm_lens.host import host_name, load_host

    host = load_host(args.host, device=args.device, dtype=args.dtype)
    index, d_model = getattr(args, "index", None), host.cfg.d_model
    if index is not None and index >= d_model:
        raise IrmLensError(
            f"--index {index} is out of range 0..{d_model - 1} for {host_name(host)}; give a "
            "residual index of this host."
        )
    return host


def _tokens(host: Any, prompt: str) -> torch.Tensor:
    import torch

    from irm_lens.prompts import encode

    if not prompt.strip():
        raise IrmLensError("--prompt is empty; give the text whose next token to explain.")
    ids = encode(host.tokenizer, prompt, mode="plain").prompt_ids
    return torch.tensor([ids], device=host.W_E.device)


def _write(out: Path, tables: dict[str, Any], fig: Any, png: bool) -> None:
    """The tables and figure, swapped in for ``out`` as one unit."""
    from irm_lens.export import save_figure
    from irm_lens.files import write_csv_atomic
    from irm_lens.training.runlock import result_dir

    with result_dir(out, "lens", "lens") as target:
        for name, table in tables.items():
            write_csv_atomic(target / f"{name}.csv", table)
        if fig is not None:
            save_figure(fig, target, "figure", png=png, height=max(650, 60 * len(tables) + 500))
    print(f"wrote {out}")
    print("next: irm-lens lens decode | attribute | channels on another unit, or irm-lens profile")


@holding_out(_out_path, "lens")
def _decode(args: argparse.Namespace) -> int:
    from irm_lens.lenses import clamp_effect, decode_index, decode_neurons
    from irm_lens.plotting.lenses import decode_figure

    if args.all:
        return _decode_all(args)
    if (args.index is None) == (args.layer is None):
        raise IrmLensError(
            "give --index I (a residual index), --layer L [--neuron N...], or --all."
        )
    out = _out(args)
    host = _host(args)
    tables = {}
    if args.index is not None:
        table = decode_index(host, args.index, top=args.top)
    else:
        table = decode_neurons(host, args.layer, args.neuron, top=args.top)
        if args.clamp_prompt is not None:
            if not args.neuron or len(args.neuron) != 1:
                raise IrmLensError("--clamp-prompt checks one neuron: give exactly one --neuron.")
            effect = clamp_effect(
                host, args.layer, args.neuron[0], _tokens(host, args.clamp_prompt)
            )
            tables["clamp"] = effect
            print(effect.to_string(index=False))
    tables["decode"] = table
    print(table[table["rank"] <= 5].to_string(index=False))
    _write(out, tables, decode_figure(table), not args.no_png)
    return 0


def _decode_all(args: argparse.Namespace) -> int:
    from irm_lens.lenses import top_tokens_all, whole_model_table

    if args.index is not None or args.layer is not None or args.clamp_prompt is not None:
        raise IrmLensError("--all decodes every unit: drop --index, --layer and --clamp-prompt.")
    out = _out(args)
    host = _host(args)
    table = whole_model_table(host, top_tokens_all(host, top=args.top, suppressed=True))
    n_units = table["unit"].nunique()
    print(f"decoded {n_units} units (every MLP neuron, then every residual index)")
    _write(out, {"decode_all": table}, None, False)
    return 0


@holding_out(_out_path, "lens")
def _attribute(args: argparse.Namespace) -> int:
    from irm_lens.lenses import activation_x_gradient, log_prob_attribution, query_neurons
    from irm_lens.plotting.lenses import attribution_figure

    out = _out(args)
    host = _host(args)
    tokens = _tokens(host, args.prompt)
    values = log_prob_attribution(host, tokens, base=args.base)
    baseline = activation_x_gradient(host, tokens)
    tables = {"values": values, "activation_x_gradient": baseline}
    if getattr(host.cfg, "gated_mlp", False):
        tables["queries"] = query_neurons(host, tokens, values, top=args.top)
    word = host.tokenizer.decode([values.attrs["predicted"]])
    print(f"predicted next token: {word!r}")
    print(values.head(args.top).to_string(index=False))
    fig = attribution_figure(
        values, baseline, top=args.top, title=f"Which units write {word!r} after {args.prompt!r}"
    )
    _write(out, tables, fig, not args.no_png)
    return 0


@holding_out(_out_path, "lens")
def _channels(args: argparse.Namespace) -> int:
    from irm_lens.lenses import composition_scores, head_svd, index_in_head_subspaces
    from irm_lens.plotting.lenses import subspace_figure

    out = _out(args)
    host = _host(args)
    shares = index_in_head_subspaces(host, args.index)
    tables = {
        "subspaces": shares,
        "ov_svd": head_svd(host, "OV"),
        "composition_v": composition_scores(host, "V").head(200),
    }
    top = shares.sort_values("write", ascending=False).head(5)
    print(f"heads writing most into index {args.index} (chance {shares['chance'].iloc[0]:.3f}):")
    print(top.to_string(index=False))
    _write(out, tables, subspace_figure(shares, index=args.index), not args.no_png)
    return 0


def add_parser(sub: Any, add_host_options: Any) -> None:
    """Register ``irm-lens lens ...`` on the main parser's subcommands."""
    lens = sub.add_parser("lens", help="neuron-level lenses: decode, attribute, channels")
    verbs = lens.add_subparsers(dest="lens_verb", required=True)
    dec = verbs.add_parser("decode", help="residual index or MLP neurons through the LM head")
    dec.add_argument("--index", type=at_least(0), help="residual index (e.g. 1512 on Llama-2-7B)")
    dec.add_argument("--layer", type=at_least(0), help="MLP layer of --neuron")
    dec.add_argument(
        "--neuron", type=at_least(0), nargs="*", help="neurons of --layer (default: all)"
    )
    dec.add_argument("--clamp-prompt", help="clamp the one --neuron on this prompt and report")
    dec.add_argument(
        "--all",
        action="store_true",
        help="every MLP neuron and residual index at once (decode_all.csv, no figure)",
    )
    dec.set_defaults(func=_decode)
    att = verbs.add_parser("attribute", help="which neurons and heads write the next token")
    att.add_argument("--prompt", required=True, help="text whose next token to explain")
    att.add_argument(
        "--base",
        choices=["layer", "final"],
        default="layer",
        help="read a unit at the residual entering its layer (published method) or take it "
        "out of the final residual (direct effect; no small-norm boost for early layers)",
    )
    att.set_defaults(func=_attribute)
    cha = verbs.add_parser("channels", help="a residual index in heads' read/write subspaces")
    cha.add_argument("--index", type=at_least(0), required=True, help="residual index")
    cha.set_defaults(func=_channels)
    for p in (dec, att, cha):
        add_host(p)
        add_host_options(p)
        add_top(p, 10, "rows per table shown / kept")
        add_out(p, "lens/<verb>")
        add_no_png(p, "HTML only")
