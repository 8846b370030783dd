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
from irm_lens.inject import write_hook
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
) -> Float[Tensor, "n_layers d_model"]:
    """The gradient of the mean alignment loss over ``rows`` (question/answer) with respect to a
    zero bias added at every layer's ``hook_attn_out``, the IRM's write point.

    The loss is the training objective (``next-token`` on answer tokens, or the original's
    ``Objective``), averaged over all of the rows' loss terms; the host is not changed."""
    if rows.empty:
        raise ValueError("bias_gradients needs at least one question/answer row.")
    o = objective if isinstance(objective, Objective) else Objective(objective)
    n_layers, d_model = host.cfg.n_layers, host.cfg.d_model
    device = host.W_E.device
    bias = torch.zeros(n_layers, d_model, device=device, dtype=torch.float32, requires_grad=True)
    examples = encode_rows(host.tokenizer, rows, mode)
    pad = pad_id(host.tokenizer)
    batches = [
        collate(examples[i : i + batch_size], pad, max_len, pad_to_max=pads_to_max_len(o))
        for i in range(0, len(examples), batch_size)
    ]
    total = sum(loss_terms(b, o) for b in batches)
    if total == 0:
        raise ValueError("the rows give no loss terms (no answer tokens within max_len).")

    def add_bias(layer: int):  # type: ignore[no-untyped-def]
        def hook(x: Tensor, hook: object) -> Tensor:
            return x + bias[layer].to(x.dtype)

        return hook

    fwd_hooks = [(write_hook(layer), add_bias(layer)) for layer in range(n_layers)]
    for batch in tqdm(batches, desc="bias gradient", disable=not progress):
        batch = batch.to(device)
        with host.hooks(fwd_hooks=fwd_hooks):
            logits = host(batch.tokens, attention_mask=batch.attention_mask)
            (loss_sum(logits, batch, o) / total).backward()
    assert bias.grad is not None
    return bias.grad.detach().float().cpu()


def host_levers(host: TransformerBridge, massive: Iterable[int] = ()) -> pd.DataFrame:
    """Per residual index: the final norm's gain, the unembedding row norm (W_U[i]), their
    product (how far a unit push there moves the logits, before the norm's 1/rms) and whether
    the index holds a massive activation (``massive``: e.g. ``host_profile``'s)."""
    gain = host.ln_final.weight.detach().float().cpu()
    row_norm = host.W_U.detach().float().cpu().norm(dim=1)
    big = set(int(i) for i in massive)
    return pd.DataFrame({
        "index": np.arange(len(gain)), "final_gain": gain.numpy(),
        "unembed_norm": row_norm.numpy(), "logit_lever": (gain.abs() * row_norm).numpy(),
        "massive": [i in big for i in range(len(gain))],
    })  # fmt: skip


def predict_index(
    gradients: Float[Tensor, "n_layers d_model"],
    layers: Sequence[int] | None = None,
    levers: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Residual indices ranked by the bias gradient's magnitude summed over ``layers`` (default
    all): ``index, score, share, rank`` (1 = the predicted index), plus ``levers`` columns and
    their ranks when given."""
    chosen = list(range(gradients.shape[0])) if layers is None else list(layers)
    score = gradients[chosen].abs().sum(0).double().numpy()
    table = pd.DataFrame({"index": np.arange(len(score)), "score": score,
                          "share": score / score.sum()})  # fmt: skip
    table["rank"] = table["score"].rank(ascending=False, method="first").astype(int)
    if levers is not None:
        table = table.merge(levers, on="index", how="left")
        table["lever_rank"] = table["logit_lever"].rank(ascending=False, method="first")
        table["lever_rank"] = table["lever_rank"].astype(int)
    return table.sort_values("rank").reset_index(drop=True)


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


def validate_prediction(ranks: Sequence[int], d_model: int, *, k: int = TOP_K,
                        seed: int = 0) -> Validation:  # fmt: skip
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
    return Validation(len(values), k, hits, k / d_model, p, float(np.median(pct)), float(low),
                      float(high))  # fmt: skip
