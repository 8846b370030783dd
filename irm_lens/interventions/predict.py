"""Which residual index will an IRM push on? A prediction from the host alone, with no training.

An IRM adds one vector per injected layer to the residual stream (at ``blocks.L.hook_attn_out``).
Its first optimizer steps follow the gradient of the alignment loss with respect to those
vectors at zero. ``bias_gradients`` computes that gradient for a zero per-layer bias over an
emotion's training rows; ``predict_index`` ranks residual indices by its magnitude summed over the
injected layers (``score``), beside the host properties that could explain a rank (the final
norm's gain, the unembedding row norm, massive-activation status).

Whether the prediction names the index a trained IRM pushes on is an empirical question:
``validate_prediction`` compares it with trained runs against a random ranking.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from scipy import stats
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from irm_lens.data.batches import collate, encode_rows, pad_id
from irm_lens.inject import layer_of, write_hook
from irm_lens.prompts import PromptMode
from irm_lens.training.config import LossKind, Objective
from irm_lens.training.losses import loss_sum, loss_terms, pads_to_max_len

TOP_K = 10


def bias_gradients(
    host: TransformerBridge,
    rows: pd.DataFrame,
    *,
    objective: LossKind | Objective = "next-token",
    mode: PromptMode = "chat",
    max_len: int = 128,
    batch_size: int = 8,
    progress: bool = False,
) -> Float[Tensor, "row n_layers d_model"]:
    """Per row of ``rows`` (question/answer), its share of the gradient of the mean alignment
    loss with respect to a zero bias added at every layer's ``hook_attn_out``, the IRM's write
    point. Summed over rows it is the gradient of the loss over all of them.

    The loss is the training objective (``next-token`` on answer tokens, or the original's
    ``Objective``), averaged over all of the rows' loss terms; the host is not changed. Each row
    gets its own bias, so one backward pass per batch gives every row's gradient."""
    if rows.empty:
        raise ValueError("bias_gradients needs at least one question/answer row.")
    o = objective if isinstance(objective, Objective) else Objective(objective)
    n_layers, d_model = host.cfg.n_layers, host.cfg.d_model
    device = host.W_E.device
    examples = encode_rows(host.tokenizer, rows, mode)
    pad = pad_id(host.tokenizer)
    batches = [
        collate(examples[i : i + batch_size], pad, max_len, pad_to_max=pads_to_max_len(o))
        for i in range(0, len(examples), batch_size)
    ]
    total = sum(loss_terms(b, o) for b in batches)
    if total == 0:
        raise ValueError("the rows give no loss terms (no answer tokens within max_len).")
    grads = []
    for batch in tqdm(batches, desc="bias gradient", disable=not progress):
        batch = batch.to(device)
        bias = torch.zeros(len(batch.tokens), n_layers, d_model, device=device, requires_grad=True)

        def add_bias(x: Tensor, hook: object, bias: Tensor = bias) -> Tensor:
            return x + bias[:, layer_of(hook.name), None, :].to(x.dtype)  # type: ignore[attr-defined]

        fwd_hooks = [(write_hook(layer), add_bias) for layer in range(n_layers)]
        with host.hooks(fwd_hooks=fwd_hooks):
            logits = host(batch.tokens, attention_mask=batch.attention_mask)
            (loss_sum(logits, batch, o) / total).backward()
        assert bias.grad is not None
        grads.append(bias.grad.detach().float().cpu())
    return torch.cat(grads)


def host_levers(host: TransformerBridge, massive: Iterable[int] = ()) -> pd.DataFrame:
    """Per residual index: the final norm's gain, the unembedding row norm (W_U[i]), their
    product (how far a unit push there moves the logits, before the norm's 1/rms) and whether
    the index holds a massive activation (``massive``: e.g. ``host_profile``'s)."""
    gain = host.ln_final.weight.detach().float().cpu()
    row_norm = host.W_U.detach().float().cpu().norm(dim=1)
    big = set(int(i) for i in massive)
    return pd.DataFrame(
        {
            "index": np.arange(len(gain)),
            "final_gain": gain.numpy(),
            "unembed_norm": row_norm.numpy(),
            "logit_lever": (gain.abs() * row_norm).numpy(),
            "massive": [i in big for i in range(len(gain))],
        }
    )


def predict_index(
    gradients: Float[Tensor, "row n_layers d_model"],
    layers: Sequence[int] | None = None,
    levers: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Residual indices ranked by two scores of the per-row bias gradients over ``layers``
    (default all), each summed over those layers:

    - ``score``: the magnitude of the gradient over all rows, |sum over rows| (where plain
      gradient descent, SGD, pushes first); ``share`` is its fraction of the total; ``rank``
      orders by it (1 = the predicted index);
    - ``consistency``: |mean over rows| / root-mean-square over rows, in [0, 1] per layer (how
      consistently the rows agree on the sign: Adam's per-coordinate step moves a coordinate at
      full rate when they do, whatever the size); ``consistency_rank`` orders by it.

    ``levers`` columns (``host_levers``) are merged in, with ``lever_rank``."""
    chosen = list(range(gradients.shape[1])) if layers is None else list(layers)
    g = gradients[:, chosen].double()
    score = g.sum(0).abs().sum(0).numpy()
    rms = g.pow(2).mean(0).sqrt()
    consistency = (g.mean(0).abs() / rms.clamp_min(1e-30)).sum(0).numpy()
    table = pd.DataFrame(
        {
            "index": np.arange(len(score)),
            "score": score,
            "share": score / score.sum(),
            "consistency": consistency,
        }
    )
    table["rank"] = _rank(table["score"])
    table["consistency_rank"] = _rank(table["consistency"])
    if levers is not None:
        table = table.merge(levers, on="index", how="left")
        table["lever_rank"] = _rank(table["logit_lever"])
    return table.sort_values("rank").reset_index(drop=True)


def _rank(values: pd.Series) -> pd.Series:
    return values.rank(ascending=False, method="first").astype(int)


@dataclass(frozen=True)
class Validation:
    """How well a prediction names trained runs' top indices: per run the trained top index's
    rank in the prediction, and over runs the share in the predicted top ``k`` against chance
    (``k / d_model``, a one-sided binomial test) and the median rank percentile with a bootstrap
    95 % CI (a random ranking: 0.5)."""

    n_runs: int
    k: int
    in_top_k: int
    chance: float
    p_value: float
    median_percentile: float
    low: float
    high: float


def validate_prediction(
    ranks: Sequence[int], d_model: int, *, k: int = TOP_K, seed: int = 0
) -> Validation:
    """``Validation`` of the predicted ranks (1 = first) of trained runs' top indices."""
    values = np.asarray(ranks, dtype=float)
    if len(values) == 0:
        nan = math.nan
        return Validation(0, k, 0, k / d_model, nan, nan, nan, nan)
    hits = int((values <= k).sum())
    p = float(stats.binomtest(hits, len(values), k / d_model, alternative="greater").pvalue)
    pct = values / d_model
    rng = np.random.default_rng(seed)
    draws = np.median(pct[rng.integers(0, len(pct), (2000, len(pct)))], axis=1)
    low, high = np.percentile(draws, [2.5, 97.5])
    return Validation(
        len(values), k, hits, k / d_model, p, float(np.median(pct)), float(low), float(high)
    )
