"""How one residual index acts on the host: propagation through the layers and effect on logits.

- ``propagation``: add ``delta`` at residual index ``i`` right after layer ``l``'s attention and
  measure, at every later layer, how much of it is still at ``i`` (persistence) and how much has
  leaked into the other indices, for a target index and random controls.
- ``irm_index_propagation``: the same for the IRM's own output restricted to index ``i``.
- ``direct_logit_effect``: the tokens index ``i`` promotes and suppresses through the final norm's
  gain and the unembedding (the host's raw coordinates, RMS scale ignored).
- ``index_in_host``: all of the above for one index, the tables ``irm-lens analyze
  --host-analyses`` writes.
- ``norm_mediated_effect``: next-token entropy and top-1 probability as ``x_i`` is scaled before
  the final norm, where a large ``x_i`` with a small gain acts through the RMS denominator as a
  temperature on every other coordinate.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from irm_lens.anatomy import direct_effect, final_gain, unembedding
from irm_lens.errors import LayerRangeError
from irm_lens.inject import add_at, attach, keep_index, patch, resid_post_hook, write_hook
from irm_lens.irm import IRM


def _check_index(host: TransformerBridge, index: int) -> None:
    if not 0 <= index < host.cfg.d_model:
        raise ValueError(
            f"index {index} is out of range: residual indices are 0..{host.cfg.d_model - 1}."
        )


def _check_layer(host: TransformerBridge, layer: int) -> None:
    if not 0 <= layer < host.cfg.n_layers:
        raise LayerRangeError(
            f"layer {layer} is out of range: this host has layers 0..{host.cfg.n_layers - 1}."
        )


def _resid_posts(
    host: TransformerBridge, tokens: Tensor, intervention: AbstractContextManager[Any] | None = None
) -> Tensor:
    names = [resid_post_hook(layer) for layer in range(host.cfg.n_layers)]
    with torch.no_grad(), intervention or contextlib.nullcontext():
        _, cache = host.run_with_cache(tokens, names_filter=names)
    return torch.stack([cache[n] for n in names]).float()  # [layer, batch, pos, d_model]


def propagation(
    host: TransformerBridge,
    tokens: Tensor,
    *,
    index: int,
    layer: int = 0,
    delta: float = 10.0,
    small: float = 0.1,
    n_random: int = 8,
    seed: int = 0,
) -> pd.DataFrame:
    """Persistence of a residual perturbation at ``index`` (and at random control indices).

    Positions after the first only (the first token's residual carries the host's massive
    activations, where a push of any size is negligible or saturates the norms), medians over
    them; the push is also made ``small`` times as large, as a linearity check.

    Returns:
        Columns ``index, kind, layer, persistence, persistence_small, leak``: for each perturbed
        index (kind ``target`` or ``random``) and each layer from ``layer`` on, ``persistence`` =
        median change of the residual at that index / ``delta``, ``persistence_small`` = the
        same for a push of ``delta * small`` (equal to ``persistence`` where the host reacts
        linearly), ``leak`` = RMS change over all other indices / ``delta``.
    """
    _check_index(host, index)
    _check_layer(host, layer)
    d_model = host.cfg.d_model
    rng = np.random.default_rng(seed)
    others = [i for i in range(d_model) if i != index]
    controls = rng.choice(others, size=min(n_random, len(others)), replace=False).tolist()
    positions = slice(1, None) if tokens.shape[1] > 1 else slice(None)
    clean = _resid_posts(host, tokens)[:, :, positions]

    def change(i: int, size: float) -> Tensor:
        pushed = patch(host, [write_hook(layer)], add_at(i, size))
        return (_resid_posts(host, tokens, pushed)[:, :, positions] - clean) / size

    rows = []
    for kind, i in [("target", index)] + [("random", int(c)) for c in controls]:
        large, little = change(i, delta), change(i, delta * small)
        mask = torch.ones(d_model, dtype=torch.bool)
        mask[i] = False
        for later in range(layer, host.cfg.n_layers):
            rows.append(
                {
                    "index": i,
                    "kind": kind,
                    "layer": later,
                    "persistence": float(large[later, ..., i].median()),
                    "persistence_small": float(little[later, ..., i].median()),
                    "leak": float(large[later][..., mask].pow(2).mean().sqrt()),
                }
            )
    return pd.DataFrame(rows)


def irm_index_propagation(
    host: TransformerBridge, irm: IRM, tokens: Tensor, *, index: int
) -> pd.DataFrame:
    """The IRM's own output at ``index`` alone: how much of it each layer's residual carries.

    Returns:
        Columns ``layer, injected_rms, carried, leak``: the RMS over positions of the IRM's
        index-``index`` outputs injected up to that layer, the regression coefficient of the
        residual's change at ``index`` on that cumulative injection (1 = carried unchanged by the
        skip path), and the RMS change over all other indices relative to ``injected_rms``.
    """
    _check_index(host, index)
    clean = _resid_posts(host, tokens)
    with torch.no_grad(), attach(host, irm, edit=keep_index(index)) as inj:
        edited = _resid_posts(host, tokens)
        out = inj.last
    assert out is not None  # the forward above ran the IRM
    change = edited - clean  # [layer, batch, pos, d_model]
    injected = torch.zeros(change.shape[:-1])
    for slot, layer in enumerate(irm.layers):
        injected[layer] = out[slot, ..., index].float().cpu()
    cumulative = injected.cumsum(0)
    mask = torch.ones(host.cfg.d_model, dtype=torch.bool)
    mask[index] = False
    rows = []
    for layer in range(host.cfg.n_layers):
        cum = cumulative[layer]
        energy = float(cum.pow(2).sum())
        rms = float(cum.pow(2).mean().sqrt())
        moved = change[layer, ..., index]
        rows.append(
            {
                "layer": layer,
                "injected_rms": rms,
                "carried": float((moved * cum).sum()) / energy if energy > 0 else float("nan"),
                "leak": float(change[layer][..., mask].pow(2).mean().sqrt()) / rms
                if rms > 0
                else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def direct_logit_effect(host: TransformerBridge, index: int, *, top: int = 10) -> pd.DataFrame:
    """Tokens promoted and suppressed by residual index ``index`` through final gain and W_U.

    Returns:
        Columns ``direction, rank, token_id, token, effect`` (``effect`` = gain_i * W_U[i, t]),
        ``top`` rows each for ``promoted`` and ``suppressed``.
    """
    _check_index(host, index)
    effect = direct_effect(host, index).cpu()
    rows = []
    for direction, values in (("promoted", effect), ("suppressed", -effect)):
        best = torch.topk(values, k=min(top, len(values)))
        for rank, (tid, _) in enumerate(
            zip(best.indices.tolist(), best.values.tolist(), strict=True), start=1
        ):
            rows.append(
                {
                    "direction": direction,
                    "rank": rank,
                    "token_id": tid,
                    "token": host.tokenizer.decode([tid]),
                    "effect": float(effect[tid]),
                }
            )
    return pd.DataFrame(rows)


def norm_mediated_effect(
    host: TransformerBridge,
    tokens: Tensor,
    *,
    index: int,
    scales: Sequence[float] = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0),
) -> pd.DataFrame:
    """Next-token entropy and top-1 probability when ``x_index`` entering the final norm is scaled.

    Returns:
        Columns ``scale, entropy, top1_prob, rms`` (means over positions and batch; ``rms`` is
        the final norm's input RMS, the denominator that acts as a temperature).
    """
    _check_index(host, index)
    last = resid_post_hook(host.cfg.n_layers - 1)
    rows = []
    for scale in scales:
        seen: dict[str, Tensor] = {}

        def rescale(x: Tensor, _layer: int, scale: float = scale, seen: dict = seen) -> Tensor:
            x[..., index] *= scale
            seen["rms"] = x.float().pow(2).mean(-1).sqrt()
            return x

        with torch.no_grad(), patch(host, [last], rescale):
            logits = host(tokens).float()
        logp = logits.log_softmax(-1)
        entropy = -(logp.exp() * logp).sum(-1)
        rows.append(
            {
                "scale": float(scale),
                "entropy": float(entropy.mean()),
                "top1_prob": float(logp.max(-1).values.exp().mean()),
                "rms": float(seen["rms"].mean()),
            }
        )
    return pd.DataFrame(rows)


def index_logit_attribution(host: TransformerBridge, tokens: Tensor, *, index: int) -> pd.DataFrame:
    """Per position: how much residual index ``index`` adds to the logit of the predicted token.

    Uses TransformerLens's ``ActivationCache.apply_ln_to_stack`` to divide the index's component
    of the final residual by the final norm's actual RMS scale, then the final gain and the
    unembedding: the direct (linear, at fixed scale) part of the index's effect.

    Returns:
        Columns ``position, token, predicted, predicted_logit, contribution, share,
        centred_contribution, centred_share`` for batch row 0 (``share`` = contribution /
        predicted logit; the centred ones subtract the mean over the vocabulary from the
        unembedding row and from the logits, so an offset common to every token, which changes
        no probability, does not count).
    """
    _check_index(host, index)
    with torch.no_grad():
        logits, cache = host.run_with_cache(tokens[:1])
    final = cache[resid_post_hook(host.cfg.n_layers - 1)]
    component = torch.zeros_like(final)
    component[..., index] = final[..., index]
    scaled = cache.apply_ln_to_stack(component[None], layer=None)[0, 0]  # [pos, d_model]
    predicted = logits[0].argmax(-1)
    gain, row = final_gain(host), unembedding(host)[index]
    contribution = scaled[:, index] * gain[index] * row[predicted]
    predicted_logit = logits[0].gather(-1, predicted[:, None])[:, 0]
    # centred on the mean over the vocabulary: a logit's offset does not change any probability
    centred = scaled[:, index] * gain[index] * (row[predicted] - row.mean())
    centred_logit = predicted_logit - logits[0].mean(-1)
    return pd.DataFrame(
        {
            "position": range(tokens.shape[1]),
            "token": [host.tokenizer.decode([t]) for t in tokens[0].tolist()],
            "predicted": [host.tokenizer.decode([t]) for t in predicted.tolist()],
            "predicted_logit": predicted_logit.float().cpu().numpy(),
            "contribution": contribution.float().cpu().numpy(),
            "share": (contribution / predicted_logit).float().cpu().numpy(),
            "centred_contribution": centred.float().cpu().numpy(),
            "centred_share": (centred / centred_logit).float().cpu().numpy(),
        }
    )


def logit_attribution(
    host: TransformerBridge,
    tokens: Tensor,
    *,
    index: int,
    top: int = 10,
    scales: Sequence[float] = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0),
) -> dict[str, pd.DataFrame]:
    """Index ``index``'s effect on the logits in one call: ``direct`` (``direct_logit_effect``),
    ``per_position`` (``index_logit_attribution``) and ``norm`` (``norm_mediated_effect``)."""
    return {
        "direct": direct_logit_effect(host, index, top=top),
        "per_position": index_logit_attribution(host, tokens, index=index),
        "norm": norm_mediated_effect(host, tokens, index=index, scales=scales),
    }


def final_logits(host: TransformerBridge, final: Tensor) -> Tensor:
    """The host's logits from final residuals ``[..., d_model]``: RMS norm (with its eps), gain,
    unembedding; equal to the host's own output at those positions."""
    x = final.float()
    scale = (x.pow(2).mean(-1, keepdim=True) + host.cfg.eps).sqrt()
    return (x / scale * final_gain(host)) @ unembedding(host) + host.b_U.detach().float()


def entropy_lever(
    host: TransformerBridge,
    final: Float[Tensor, "n d_model"],
    *,
    scale: float = 8.0,
    chunk: int = 16,
) -> np.ndarray:
    """Per residual index: the mean |change| of next-token entropy (nats) over ``final``'s
    positions when that index of the final residual is multiplied by ``scale`` before the final
    norm. Every index, so any one index's lever can be ranked against all of them."""
    x = final.detach().float()
    d_model = x.shape[-1]

    def entropy(logits: Tensor) -> Tensor:
        logp = logits.log_softmax(-1)
        return -(logp.exp() * logp).sum(-1)

    with torch.no_grad():
        base = entropy(final_logits(host, x))  # [n]
        shifts = []
        for start in range(0, d_model, chunk):
            idx = torch.arange(start, min(start + chunk, d_model), device=x.device)
            scaled = x.expand(len(idx), *x.shape).clone()  # [chunk, n, d]
            scaled[torch.arange(len(idx)), :, idx] *= scale
            shifts.append((entropy(final_logits(host, scaled)) - base).abs().mean(-1))
    return torch.cat(shifts).cpu().numpy()


def index_in_host(
    host: TransformerBridge, irm: IRM, tokens: Tensor, *, index: int
) -> dict[str, pd.DataFrame]:
    """How ``index`` acts in the host, in one call: ``propagation``, ``irm_index_propagation``
    (``irm``'s own output at the index), ``direct_logit_effect``, ``index_logit_attribution`` and
    ``norm_mediated_effect``, each on ``tokens`` where it runs the host."""
    return {
        "propagation": propagation(host, tokens, index=index),
        "irm_index_propagation": irm_index_propagation(host, irm, tokens, index=index),
        "direct_logit_effect": direct_logit_effect(host, index),
        "index_logit_attribution": index_logit_attribution(host, tokens, index=index),
        "norm_mediated_effect": norm_mediated_effect(host, tokens, index=index),
    }
