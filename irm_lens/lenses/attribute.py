"""Log-probability attribution: which FFN neurons and attention heads write a prediction.

After Yu and Ananiadou's neuron-level attribution: for a prompt and the token ``w`` predicted at
its last position, a unit's importance is how much adding its contribution to the residual stream
entering its layer raises ``log p(w)`` read through the final norm and unembedding:

    importance(u) = log p(w | h + c_u) - log p(w | h)

with ``h`` the residual before the unit's sublayer (``resid_mid`` for MLP neurons, ``resid_pre``
for heads) and ``c_u`` the unit's output at the last position (a neuron's activation times its
down-projection row; a head's ``z @ W_O``). High scores are "value" units. A "query" neuron is an
earlier MLP neuron that switches a value neuron on: its score is the drop in the value neuron's
activation when the query neuron's contribution is taken out of the value layer's input.
``activation_x_gradient`` is the usual baseline on the same prompt.

Reading an early unit's contribution through the final norm at the small norm of an early
residual stream overstates it (the norm divides by a small number): on SmolLM2 the layer-0 neurons
rank first. ``base="final"`` reads every unit at the final residual's own scale instead, as the
drop in ``log p(w)`` when the unit's contribution is taken out of the final residual
(``log p(w | h_L) - log p(w | h_L - c_u)``: the unit's direct effect).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import einops
import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from irm_lens.inject import (
    attn_z_hook,
    mlp_post_hook,
    resid_mid_hook,
    resid_post_hook,
    resid_pre_hook,
)
from irm_lens.lenses.decode import LensError, d_mlp, decoding_matrix


def _log_prob_gain(
    matrix: Float[Tensor, "d_model d_vocab"],
    eps: float,
    base: Float[Tensor, " d_model"],
    contributions: Float[Tensor, "unit d_model"],
    token: int,
) -> Float[Tensor, " unit"]:
    """log p(token | base + c) - log p(token | base), read through the final RMS norm and
    ``matrix`` (the gain-folded unembedding), for every contribution ``c``."""

    def log_p(resid: Tensor) -> Tensor:
        normed = resid * torch.rsqrt(resid.pow(2).mean(-1, keepdim=True) + eps)
        return F.log_softmax(normed @ matrix, dim=-1)[:, token]

    return log_p(base[None] + contributions) - log_p(base[None])


def _check_tokens(host: TransformerBridge, tokens: Tensor) -> None:
    if tokens.ndim != 2 or tokens.shape[0] != 1:
        raise LensError(f"tokens must be one prompt, shaped [1, pos]; got {list(tokens.shape)}.")
    if tokens.shape[1] > host.cfg.n_ctx:
        raise LensError(
            f"The prompt has {tokens.shape[1]} tokens but the host's context is "
            f"{host.cfg.n_ctx}; shorten it."
        )


def _final_resid(host: TransformerBridge) -> str:
    return resid_post_hook(host.cfg.n_layers - 1)


def _cache(host: TransformerBridge, tokens: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    n = host.cfg.n_layers
    names = [attn_z_hook(layer) for layer in range(n)]
    names += [
        f(layer) for layer in range(n) for f in (mlp_post_hook, resid_mid_hook, resid_pre_hook)
    ]
    names.append(_final_resid(host))
    with torch.no_grad():
        logits, cache = host.run_with_cache(tokens, names_filter=names)
    return logits, {k: cache[k][0, -1].float() for k in names}


def _head_outputs(host: TransformerBridge, z: Tensor, layer: int) -> Float[Tensor, "head d_model"]:
    w_o = host.W_O[layer].detach().float()  # [head, d_head, d_model]
    z = z.reshape(w_o.shape[0], w_o.shape[1])
    return einops.einsum(z, w_o, "head d_head, head d_head d_model -> head d_model")


def log_prob_attribution(
    host: TransformerBridge, tokens: Tensor, *, top: int | None = None, base: str = "layer"
) -> pd.DataFrame:
    """Importance of every MLP neuron and attention head for the predicted next token.

    Args:
        tokens: one prompt ``[1, pos]``; the prediction at its last position is explained.
        top: keep only the ``top`` units by importance (default: all).
        base: ``"layer"`` (the published method: the unit's output added to the residual entering
            its layer) or ``"final"`` (taken out of the final residual: the direct effect, at the
            scale the final norm really sees).

    Returns:
        Columns ``kind`` (``neuron``/``head``), ``layer``, ``unit`` (neuron or head number),
        ``activation`` (neurons; NaN for heads), ``importance`` (nats), ``rank``, and the
        ``predicted`` token id in ``attrs``; sorted by importance, highest first.
    """
    if base not in ("layer", "final"):
        raise LensError(f"base must be 'layer' or 'final', got {base!r}.")
    _check_tokens(host, tokens)
    logits, acts = _cache(host, tokens)
    predicted = int(logits[0, -1].argmax())
    matrix = decoding_matrix(host).to(logits.device)  # once, not per layer
    eps = float(getattr(host.cfg, "eps", 1e-5))
    final = acts[_final_resid(host)]

    def gain_of(entering: Tensor, contributions: Tensor) -> Tensor:
        if base == "layer":
            return _log_prob_gain(matrix, eps, entering, contributions, predicted)
        return -_log_prob_gain(matrix, eps, final, -contributions, predicted)

    def frame(kind: str, layer: int, gain: Tensor, activation: Any) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "kind": kind,
                "layer": layer,
                "unit": range(len(gain)),
                "activation": activation,
                "importance": gain.cpu().numpy(),
            }
        )

    rows = []
    for layer in range(host.cfg.n_layers):
        act = acts[mlp_post_hook(layer)]
        contrib = act[:, None] * host.W_out[layer].detach().float()
        gain = gain_of(acts[resid_mid_hook(layer)], contrib)
        rows.append(frame("neuron", layer, gain, act.cpu().numpy()))
        heads = _head_outputs(host, acts[attn_z_hook(layer)], layer)
        rows.append(frame("head", layer, gain_of(acts[resid_pre_hook(layer)], heads), float("nan")))
    table = pd.concat(rows, ignore_index=True).sort_values("importance", ascending=False)
    table["rank"] = range(1, len(table) + 1)
    table = table.reset_index(drop=True)
    table = table if top is None else table.head(top)
    table.attrs["predicted"] = predicted
    table.attrs["base"] = base
    return table


def _mlp_activation(
    host: TransformerBridge, layer: int, resid: Float[Tensor, "unit d_model"], neurons: Tensor
) -> Float[Tensor, "unit neuron"]:
    """Activations of ``neurons`` of a gated (SiLU) MLP for residual inputs ``resid``."""
    eps = float(getattr(host.cfg, "eps", 1e-5))
    gain = host.blocks[layer].ln2.weight.detach().float()
    normed = resid * torch.rsqrt(resid.pow(2).mean(-1, keepdim=True) + eps) * gain
    assert host.W_gate is not None  # checked by the caller
    w_gate = host.W_gate[layer].detach().float()[:, neurons]
    w_in = host.W_in[layer].detach().float()[:, neurons]
    return F.silu(normed @ w_gate) * (normed @ w_in)


def query_neurons(
    host: TransformerBridge,
    tokens: Tensor,
    values: pd.DataFrame,
    *,
    n_values: int = 10,
    top: int = 20,
) -> pd.DataFrame:
    """Earlier MLP neurons that switch on the top value neurons.

    For value neuron ``v`` in layer ``L`` and earlier neuron ``u``: the drop in ``v``'s
    activation when ``u``'s contribution is removed from ``v``'s input (``resid_mid`` of L), all
    else fixed. Scores are summed over the ``n_values`` top value neurons, each weighted by the
    sign of its activation (so "switches on" means "pushes further in its active direction").

    Args:
        values: a ``log_prob_attribution`` table of the same prompt.

    Returns:
        Columns ``layer, unit, query_score, rank`` of the ``top`` query neurons.
    """
    _check_tokens(host, tokens)
    if not getattr(host.cfg, "gated_mlp", False) or getattr(host, "W_gate", None) is None:
        raise LensError("query_neurons needs a gated (Llama-style) MLP with W_gate.")
    _, acts = _cache(host, tokens)
    chosen = values[values["kind"] == "neuron"].head(n_values)
    width = d_mlp(host)
    score = torch.zeros(host.cfg.n_layers, width)
    for layer, group in chosen.groupby("layer"):
        layer = int(layer)
        if layer == 0:
            continue
        neurons = torch.tensor(group["unit"].astype(int).to_numpy())
        base = acts[resid_mid_hook(layer)]
        now = _mlp_activation(host, layer, base[None], neurons)[0]
        for lower in range(layer):
            contrib = acts[mlp_post_hook(lower)][:, None] * host.W_out[lower].detach().float()
            without = _mlp_activation(host, layer, base[None] - contrib, neurons)
            score[lower] += ((now[None] - without) * torch.sign(now)[None]).sum(-1).cpu()
    flat = einops.rearrange(score, "layer unit -> (layer unit)")
    k = min(top, flat.numel())
    best = flat.topk(k)
    return pd.DataFrame(
        {
            "layer": (best.indices // width).numpy(),
            "unit": (best.indices % width).numpy(),
            "query_score": best.values.numpy(),
            "rank": range(1, k + 1),
        }
    )


def activation_x_gradient(host: TransformerBridge, tokens: Tensor) -> pd.DataFrame:
    """Baseline: activation x d log p(predicted) / d activation, per MLP neuron (last position).

    Returns:
        Columns ``layer, unit, activation, axg, rank`` sorted by ``axg``, highest first.
    """
    _check_tokens(host, tokens)
    stash: dict[int, Tensor] = {}

    def keep(layer: int) -> Callable[[Tensor, object], Tensor]:
        def hook(act: Tensor, hook: object) -> Tensor:  # noqa: ARG001 (TL passes hook=)
            act.retain_grad()
            stash[layer] = act
            return act

        return hook

    def leaf(x: Tensor, hook: object) -> Tensor:  # noqa: ARG001 (TL passes hook=)
        # The host is frozen and its input is token ids: start the graph at the residual stream.
        return x.detach().requires_grad_(True)

    hooks: list[tuple[str, Callable[[Tensor, object], Tensor]]] = [(resid_pre_hook(0), leaf)]
    hooks += [(mlp_post_hook(layer), keep(layer)) for layer in range(host.cfg.n_layers)]
    with torch.enable_grad(), host.hooks(fwd_hooks=hooks):
        logits = host(tokens)
        log_probs = F.log_softmax(logits[0, -1].float(), dim=-1)
        predicted = int(log_probs.argmax())
        log_probs[predicted].backward()
    rows = []
    for layer, act in stash.items():
        assert act.grad is not None  # retain_grad above; the backward reached every layer
        grad = act.grad[0, -1].float()
        value = act.detach()[0, -1].float()
        rows.append(
            pd.DataFrame(
                {
                    "layer": layer,
                    "unit": range(len(value)),
                    "activation": value.cpu().numpy(),
                    "axg": (value * grad).cpu().numpy(),
                }
            )
        )
    table = pd.concat(rows, ignore_index=True).sort_values("axg", ascending=False)
    table["rank"] = range(1, len(table) + 1)
    return table.reset_index(drop=True)
