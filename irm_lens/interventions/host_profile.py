"""The host's own residual-stream profile: massive activations, norm gains, unembedding norms.

These are the facts section 7 of the reference asks about any IRM's dominant index: is it one of
the host's massive-activation dims (huge values on the first token and the first "." or newline,
Sun et al. 2024), how strongly does the final norm scale it, and how much does the unembedding
read from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from irm_lens.anatomy import final_gain, unembedding
from irm_lens.inject import down_proj_hooks, resid_post_hook
from irm_lens.prompts import PromptMode, encode

TOKEN_KINDS = ("first", "delimiter", "other")


def token_kinds(tokens: Sequence[str]) -> list[str]:
    """``first`` for position 0, ``delimiter`` for the first token holding "." or a newline,
    ``other`` for the rest."""
    kinds = ["other"] * len(tokens)
    if tokens:
        kinds[0] = "first"
    for pos, text in enumerate(tokens[1:], start=1):
        if "." in text or "\n" in text:
            kinds[pos] = "delimiter"
            break
    return kinds


def residual_profile(
    host: TransformerBridge, prompts: Sequence[str], *, mode: PromptMode = "plain"
) -> pd.DataFrame:
    """Mean |residual| after every layer, per residual index and token kind.

    Returns:
        Columns ``layer, index, token_kind, mean_abs, max_abs, n_tokens, layer_median_abs``
        (kinds: first, delimiter, other), pooled over ``prompts``; ``layer_median_abs`` is the
        median |value| over every token and index of that layer (all kinds).
    """
    if not prompts:
        raise ValueError("residual_profile needs at least one prompt.")
    n_layers, d_model = host.cfg.n_layers, host.cfg.d_model
    names = [resid_post_hook(layer) for layer in range(n_layers)]
    sums = torch.zeros(len(TOKEN_KINDS), n_layers, d_model, dtype=torch.float64)
    maxes = torch.zeros(len(TOKEN_KINDS), n_layers, d_model, dtype=torch.float64)
    counts = torch.zeros(len(TOKEN_KINDS), dtype=torch.long)
    every: list[Tensor] = []  # [tokens, layer, index] per prompt, for the per-layer median
    for prompt in prompts:
        ids = encode(host.tokenizer, prompt, mode=mode).prompt_ids
        if not ids:
            raise ValueError(f"prompt {prompt!r} encodes to no tokens.")
        tokens = [host.tokenizer.decode([t]) for t in ids]
        kinds = torch.tensor([TOKEN_KINDS.index(k) for k in token_kinds(tokens)])
        with torch.no_grad():
            _, cache = host.run_with_cache(
                torch.tensor([ids], device=host.W_E.device), names_filter=names
            )
        stacked = torch.stack([cache[n][0] for n in names], dim=1).abs().double().cpu()
        every.append(stacked.float())
        for k in range(len(TOKEN_KINDS)):
            sel = stacked[kinds == k]  # [tokens_of_kind, layer, index]
            if len(sel):
                sums[k] += sel.sum(0)
                maxes[k] = torch.maximum(maxes[k], sel.max(0).values)
                counts[k] += len(sel)
    layer_median = torch.cat(every).transpose(0, 1).flatten(1).median(dim=1).values.double()
    frames = []
    for k, kind in enumerate(TOKEN_KINDS):
        if counts[k] == 0:
            continue
        mean = sums[k] / counts[k]
        layer, index = torch.meshgrid(torch.arange(n_layers), torch.arange(d_model), indexing="ij")
        frames.append(
            pd.DataFrame(
                {
                    "layer": layer.flatten().numpy(),
                    "index": index.flatten().numpy(),
                    "token_kind": kind,
                    "mean_abs": mean.flatten().numpy(),
                    "max_abs": maxes[k].flatten().numpy(),
                    "n_tokens": int(counts[k]),
                    "layer_median_abs": layer_median[layer.flatten()].numpy(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def massive_dims(profile: pd.DataFrame, *, ratio: float = 100.0) -> pd.DataFrame:
    """Residual indices whose largest |value| is at least ``ratio`` times the median index's.

    Returns:
        Columns ``index, max_abs, median_max_abs, ratio, layer, token_kind`` (where the maximum
        occurs), largest first.
    """
    per_index = profile.loc[profile.groupby("index")["max_abs"].idxmax()]
    median = float(per_index["max_abs"].median())
    out = per_index.assign(median_max_abs=median, ratio=per_index["max_abs"] / median)
    out = out[out["ratio"] >= ratio].sort_values("max_abs", ascending=False)
    return out[["index", "max_abs", "median_max_abs", "ratio", "layer", "token_kind"]].reset_index(
        drop=True
    )


def norm_gains(host: TransformerBridge) -> pd.DataFrame:
    """Per residual index: the final norm's gain, its rank from the smallest, the mean pre-MLP /
    pre-attention norm gains over layers, and the norm of the unembedding's row for that index.

    Returns:
        Columns ``index, final_gain, final_gain_rank, mean_ln1_gain, mean_ln2_gain,
        unembed_norm, unembed_norm_rank`` (ranks: 1 = smallest gain, 1 = largest unembed norm).
    """
    final = final_gain(host).cpu()
    ln1 = torch.stack([b.ln1.weight.detach().float().cpu() for b in host.blocks]).mean(0)
    ln2 = torch.stack([b.ln2.weight.detach().float().cpu() for b in host.blocks]).mean(0)
    unembed = unembedding(host).cpu().norm(dim=1)  # [d_model]
    frame = pd.DataFrame(
        {
            "index": range(len(final)),
            "final_gain": final.numpy(),
            "mean_ln1_gain": ln1.numpy(),
            "mean_ln2_gain": ln2.numpy(),
            "unembed_norm": unembed.numpy(),
        }
    )
    frame["final_gain_rank"] = frame["final_gain"].abs().rank(method="min").astype(int)
    frame["unembed_norm_rank"] = (
        frame["unembed_norm"].rank(ascending=False, method="min").astype(int)
    )
    return frame


PROFILE_RATIO = 20.0
"""``host_profile``'s massive-dim test: a largest |residual| at least this many times the median
index's (looser than Sun et al.'s 1000x, which ``massive_activations`` applies)."""


def host_profile(
    host: TransformerBridge,
    prompts: Sequence[str],
    *,
    mode: PromptMode = "plain",
    ratio: float = PROFILE_RATIO,
) -> dict[str, pd.DataFrame]:
    """The host's profile in one call: ``residual`` (``residual_profile``), ``massive``
    (``massive_dims`` at ``ratio``) and ``gains`` (``norm_gains``)."""
    residual = residual_profile(host, prompts, mode=mode)
    return {
        "residual": residual,
        "massive": massive_dims(residual, ratio=ratio),
        "gains": norm_gains(host),
    }


def _down_proj(host: TransformerBridge, layer: int) -> torch.nn.Linear:
    """The HF ``down_proj`` (``[d_model, d_mlp]`` weight) of ``layer``'s MLP."""
    bridge = getattr(host.blocks[layer].mlp, "out", None)  # the bridge's down-projection
    module = getattr(bridge, "original_component", None)
    if not isinstance(module, torch.nn.Linear):
        raise ValueError(f"layer {layer}'s MLP has no down_proj Linear (a gated MLP is needed).")
    return module


def super_weights(
    host: TransformerBridge, prompt: str, *, mode: PromptMode = "plain", ratio: float = 10.0
) -> pd.DataFrame:
    """Super-weight candidates by Yu et al. (2024)'s one-prompt procedure: in every layer, the
    largest |output| of ``down_proj`` over the prompt's tokens and residual dims, and at that
    token the largest |input| (the MLP neuron). A layer whose output peak is at least ``ratio``
    times the median layer's peak holds a super weight at ``[row, col]`` = ``[output dim, input
    neuron]`` of its ``down_proj``.

    Returns:
        One row per layer: ``layer, row, col, position, output_value, input_value,
        over_median, super`` (``super``: the ratio test passed).
    """
    ids = encode(host.tokenizer, prompt, mode=mode).prompt_ids
    if not ids:
        raise ValueError(f"prompt {prompt!r} encodes to no tokens.")
    n_layers = host.cfg.n_layers
    names = [name for layer in range(n_layers) for name in down_proj_hooks(layer)]
    with torch.no_grad():
        _, cache = host.run_with_cache(
            torch.tensor([ids], device=host.W_E.device), names_filter=lambda n: n in names
        )
    rows = []
    for layer in range(n_layers):
        hook_in, hook_out = down_proj_hooks(layer)
        out = cache[hook_out][0].float().abs()  # [pos, d_model]
        inp = cache[hook_in][0].float()  # [pos, d_mlp]
        pos, row = divmod(int(out.argmax()), out.shape[1])
        col = int(inp[pos].abs().argmax())
        values = {"output_value": float(out[pos, row]), "input_value": float(inp[pos, col])}
        rows.append({"layer": layer, "row": row, "col": col, "position": pos, **values})
    table = pd.DataFrame(rows)
    table["over_median"] = table["output_value"] / float(table["output_value"].median())
    table["super"] = table["over_median"] >= ratio
    return table


def perplexity_without(
    host: TransformerBridge, texts: Sequence[str], layer: int, row: int, col: int
) -> tuple[float, float]:
    """Perplexity of the host on ``texts`` (plain, next-token) as it is and with
    ``down_proj[row, col]`` of ``layer`` set to zero; the weight is restored afterwards."""
    weight = _down_proj(host, layer).weight

    def perplexity() -> float:
        total, count = 0.0, 0
        for text in texts:
            ids = encode(host.tokenizer, text, mode="plain").prompt_ids
            if len(ids) < 2:
                continue
            tokens = torch.tensor([ids], device=host.W_E.device)
            with torch.no_grad():
                logits = host(tokens).float()
            nll = torch.nn.functional.cross_entropy(logits[0, :-1], tokens[0, 1:], reduction="sum")
            total, count = total + float(nll), count + len(ids) - 1
        if count == 0:
            raise ValueError("the texts give no token to predict.")
        return float(torch.exp(torch.tensor(total / count)))

    base = perplexity()
    saved = weight.data[row, col].clone()
    try:
        with torch.no_grad():
            weight.data[row, col] = 0
        zeroed = perplexity()
    finally:
        with torch.no_grad():
            weight.data[row, col] = saved
    return base, zeroed


ABLATIONS = ("none", "zero", "mean")


def massive_ablation(
    host: TransformerBridge,
    texts: Sequence[str],
    dims: Sequence[int],
    *,
    threshold: float = 100.0,
    ratio: float = 1000.0,
) -> pd.DataFrame:
    """Do the massive activations of ``dims`` matter, and does their exact value (Sun et al.
    2024's test)? In every layer's output residual (``hook_resid_post``), the values of
    ``dims`` at the tokens where the clean run holds them massive (|h| above ``threshold`` and
    above ``ratio`` times that layer's median |h| on the text) are set to zero, or to their
    mean over every such token of ``texts`` (per layer and dim); perplexity of the host on
    ``texts`` (plain text, next token) as it is and each way.

    Returns:
        One row per ablation (``none``, ``zero``, ``mean``): ``ablation, perplexity,
        n_values`` (how many residual values were replaced).
    """
    if not dims:
        raise ValueError("massive_ablation needs at least one residual dim.")
    n_layers = host.cfg.n_layers
    names = [resid_post_hook(layer) for layer in range(n_layers)]
    index = torch.tensor(list(dims))
    encoded = [encode(host.tokenizer, t, mode="plain").prompt_ids for t in texts]
    encoded = [ids for ids in encoded if len(ids) >= 2]
    if not encoded:
        raise ValueError("the texts give no token to predict.")
    masks, total, count = [], torch.zeros(n_layers, len(dims)), torch.zeros(n_layers, len(dims))
    for ids in encoded:  # the clean run: where each dim is massive, and its mean value there
        with torch.no_grad():
            _, cache = host.run_with_cache(
                torch.tensor([ids], device=host.W_E.device), names_filter=names
            )
        h = torch.stack([cache[n][0].float().cpu() for n in names])  # [layer, pos, d_model]
        median = h.abs().flatten(1).median(dim=1).values  # [layer]
        picked = h[..., index]  # [layer, pos, dims]
        mask = (picked.abs() > threshold) & (picked.abs() > ratio * median[:, None, None])
        masks.append(mask)
        total += (picked * mask).sum(1)
        count += mask.sum(1)
    means = total / count.clamp(min=1)

    def perplexity(how: str) -> float:
        nll, n = 0.0, 0
        for ids, mask in zip(encoded, masks, strict=True):

            def replacer(layer: int, mask: Tensor = mask) -> Any:
                def replace(x: Tensor, hook: Any) -> Tensor:  # noqa: ARG001 (TL passes hook=)
                    m, at = mask[layer].to(x.device), index.to(x.device)  # m: [pos, dims]
                    if how == "zero":
                        value = torch.zeros_like(m, dtype=x.dtype)
                    else:
                        value = means[layer].to(x.device, x.dtype).expand_as(m)
                    x = x.clone()
                    x[0, :, at] = torch.where(m, value, x[0, :, at])
                    return x

                return replace

            hooks = [] if how == "none" else [(n, replacer(i)) for i, n in enumerate(names)]
            tokens = torch.tensor([ids], device=host.W_E.device)
            with torch.no_grad(), host.hooks(fwd_hooks=hooks):
                logits = host(tokens).float()
            loss = torch.nn.functional.cross_entropy(logits[0, :-1], tokens[0, 1:], reduction="sum")
            nll, n = nll + float(loss), n + len(ids) - 1
        return float(torch.exp(torch.tensor(nll / n)))

    replaced = int(sum(int(m.sum()) for m in masks))
    return pd.DataFrame(
        [
            {
                "ablation": how,
                "perplexity": perplexity(how),
                "n_values": 0 if how == "none" else replaced,
            }
            for how in ABLATIONS
        ]
    )
