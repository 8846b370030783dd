"""Which residual index will an IRM push on? Predictions from the host, before any IRM is trained.

An IRM adds one vector per injected layer to the residual stream (at ``blocks.L.hook_attn_out``).
Its first optimizer steps follow the gradient of the alignment loss with respect to those
vectors at zero. ``bias_gradients`` computes that gradient per training row for a zero per-layer
bias; ``fit_bias`` trains such a bias alone (a steering vector per layer, one minute on CPU);
``host_levers`` reads the host's own levers (final-norm gain, unembedding row norm, the stop
token's weight, massive-activation status). ``predict_index`` ranks the residual indices by each
(summed over the injected layers).

Whether a prediction names the index a trained IRM pushes on is an empirical question:
``validate_prediction`` compares it with trained runs against a random ranking.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from einops import einsum
from jaxtyping import Float
from scipy import stats
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from irm_lens.anatomy import final_gain, unembedding
from irm_lens.data.batches import collate, encode_rows, pad_id
from irm_lens.inject import layer_of, write_hook
from irm_lens.prompts import PromptMode
from irm_lens.training.config import LossKind, Objective
from irm_lens.training.losses import loss_sum, loss_terms, pads_to_max_len

TOP_K = 10
FIT_STEPS = 60


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


@dataclass(frozen=True)
class BiasFit:
    """``fit_bias``'s per-layer vectors ``[n_layers, d_model]`` and its loss at every step."""

    vectors: Tensor
    losses: list[float]


def fit_bias(
    host: TransformerBridge,
    rows: pd.DataFrame,
    *,
    objective: LossKind | Objective = "next-token",
    mode: PromptMode = "chat",
    max_len: int = 128,
    steps: int = FIT_STEPS,
    lr: float = 1e-3,
    batch_size: int = 8,
    grad_accum: int = 1,
    layers: Sequence[int] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> BiasFit:
    """A bias-only "IRM": one vector per layer, added at each of ``layers``' write points (every
    layer by default) with no input, trained with Adam (the IRM's optimizer) on the alignment
    loss for ``steps`` optimizer steps of ``grad_accum`` batches of ``batch_size`` rows drawn
    from ``rows``. Where its |vector| is largest is where a steering vector, and perhaps the
    IRM, pushes. Layers outside ``layers`` keep a zero vector."""
    if rows.empty:
        raise ValueError("fit_bias needs at least one question/answer row.")
    if grad_accum < 1:
        raise ValueError(f"grad_accum={grad_accum}; give at least 1.")
    chosen = range(host.cfg.n_layers) if layers is None else [int(layer) for layer in layers]
    o = objective if isinstance(objective, Objective) else Objective(objective)
    device = host.W_E.device
    bias = torch.zeros(host.cfg.n_layers, host.cfg.d_model, device=device, requires_grad=True)
    opt = torch.optim.Adam([bias], lr=lr)
    examples = encode_rows(host.tokenizer, rows, mode)
    pad, gen = pad_id(host.tokenizer), torch.Generator().manual_seed(seed)

    def add_bias(x: Tensor, hook: object) -> Tensor:
        return x + bias[layer_of(hook.name)].to(x.dtype)  # type: ignore[attr-defined]

    fwd_hooks = [(write_hook(layer), add_bias) for layer in chosen]
    losses = []
    for _ in tqdm(range(steps), desc="bias fit", disable=not progress):
        opt.zero_grad(set_to_none=True)
        step_loss = 0.0
        for _ in range(grad_accum):
            pick = torch.randint(len(examples), (min(batch_size, len(examples)),), generator=gen)
            batch = collate(
                [examples[i] for i in pick.tolist()], pad, max_len, pad_to_max=pads_to_max_len(o)
            ).to(device)
            with host.hooks(fwd_hooks=fwd_hooks):
                logits = host(batch.tokens, attention_mask=batch.attention_mask)
                loss = loss_sum(logits, batch, o) / max(loss_terms(batch, o), 1) / grad_accum
                loss.backward()
            step_loss += float(loss.detach())
        opt.step()
        losses.append(step_loss)
    return BiasFit(bias.detach().float().cpu(), losses)


def host_levers(host: TransformerBridge, massive: Iterable[int] = ()) -> pd.DataFrame:
    """Per residual index: the final norm's gain, the unembedding row norm (W_U[i]), their
    product (``logit_lever``: how far a unit push there moves the logits, before the norm's
    1/rms), the stop lever (|gain x centred unembedding weight of the pad/stop token|: how far
    a push there moves the answer's end) and whether the index holds a massive activation
    (``massive``: e.g. ``host_profile``'s)."""
    gain, w_u = final_gain(host).cpu(), unembedding(host).cpu()
    row_norm = w_u.norm(dim=1)
    stop = pad_id(host.tokenizer)
    stop_lever = (gain * (w_u[:, stop] - w_u.mean(dim=1))).abs()
    big = set(int(i) for i in massive)
    return pd.DataFrame(
        {
            "index": np.arange(len(gain)),
            "final_gain": gain.numpy(),
            "unembed_norm": row_norm.numpy(),
            "logit_lever": (gain.abs() * row_norm).numpy(),
            "stop_lever": stop_lever.numpy(),
            "massive": [i in big for i in range(len(gain))],
        }
    )


def transport_levers(
    host: TransformerBridge,
    texts: Sequence[str],
    *,
    max_seq_len: int = 128,
    skip_first_positions: int = 16,
    progress: bool = False,
) -> Float[Tensor, "n_layers d_model"]:
    """Per layer L and residual index i: how far a unit push at i in the residual leaving block
    L moves the centred logits, carried through the rest of the network by TransformerLens's
    Jacobian lens (``JacobianLens.fit``: the Jacobian from block L's output to the final
    block's output, averaged over the positions of ``texts``), then the final norm's gain and
    the unembedding: ``|| centred W_U^T (gain * J[L] e_i) ||``. The final block's transport is
    the identity (there ``lever`` and this agree up to centring). An IRM writes at
    ``hook_attn_out`` of L, before L's MLP: block L's output is the nearest point the lens
    fits."""
    from transformer_lens.tools.analysis import JacobianLens

    n_layers, d_model = host.cfg.n_layers, host.cfg.d_model
    try:
        lens = JacobianLens.fit(
            host,
            list(texts),
            corpus="irm_lens transport_levers",
            max_seq_len=max_seq_len,
            skip_first_positions=skip_first_positions,
            show_progress=progress,
        )
    except ValueError as exc:  # e.g. every text shorter than the positions it skips
        raise ValueError(
            f"the Jacobian lens could not be fitted on these {len(texts)} texts ({exc}); give "
            f"longer texts (more than {skip_first_positions + 1} tokens each)."
        ) from exc
    gain, w_u = final_gain(host).cpu().double(), unembedding(host).cpu().double()
    centred = w_u - w_u.mean(dim=1, keepdim=True)
    gram = centred @ centred.T  # [d_model, d_model]: |centred W_U^T v|^2 = v^T gram v
    levers = torch.zeros(n_layers, d_model)
    for layer in range(n_layers):
        transport = lens.jacobians.get(layer)
        j = torch.eye(d_model, dtype=torch.float64) if transport is None else transport.double()
        pushed = gain[:, None] * j  # column i: where a unit push at i arrives, times the gain
        levers[layer] = einsum(pushed, gram, pushed, "a i, a b, b i -> i").clamp_min(0).sqrt()
    return levers


def predict_index(
    gradients: Float[Tensor, "row n_layers d_model"],
    layers: Sequence[int] | None = None,
    levers: pd.DataFrame | None = None,
    fitted: Float[Tensor, "n_layers d_model"] | None = None,
    transport: Float[Tensor, "n_layers d_model"] | None = None,
) -> pd.DataFrame:
    """Residual indices ranked by two scores of the per-row bias gradients over ``layers``
    (default all), each summed over those layers:

    - ``score``: the magnitude of the gradient over all rows, |sum over rows| (where plain
      gradient descent, SGD, pushes first); ``share`` is its fraction of the total; ``rank``
      orders by it (1 = the predicted index);
    - ``consistency``: |mean over rows| / root-mean-square over rows, in [0, 1] per layer (how
      consistently the rows agree on the sign: Adam's per-coordinate step moves a coordinate at
      full rate when they do, whatever the size); ``consistency_rank`` orders by it.

    ``fitted`` (``fit_bias``'s vectors) adds ``fit`` (its |vector| summed over ``layers``) and
    ``fit_rank``; ``transport`` (``transport_levers``) adds ``transport`` (summed over
    ``layers``) and ``transport_rank``; ``levers`` columns (``host_levers``) are merged in,
    with ``lever_rank`` and ``stop_rank``."""
    chosen = list(range(gradients.shape[1])) if layers is None else list(layers)
    g = gradients[:, chosen].double()
    score = g.sum(0).abs().sum(0).numpy()
    rms = g.pow(2).mean(0).sqrt()
    consistency = (g.mean(0).abs() / rms.clamp_min(1e-30)).sum(0).numpy()
    table = pd.DataFrame(
        {
            "index": np.arange(len(score)),
            "score": score,
            "share": score / score.sum() if score.sum() > 0 else np.zeros_like(score),
            "consistency": consistency,
        }
    )
    table["rank"] = _rank(table["score"])
    table["consistency_rank"] = _rank(table["consistency"])
    if fitted is not None:
        table["fit"] = fitted[chosen].double().abs().sum(0).numpy()
        table["fit_rank"] = _rank(table["fit"])
    if transport is not None:
        table["transport"] = transport[chosen].double().sum(0).numpy()
        table["transport_rank"] = _rank(table["transport"])
    if levers is not None:
        table = table.merge(levers, on="index", how="left")
        table["lever_rank"] = _rank(table["logit_lever"])
        table["stop_rank"] = _rank(table["stop_lever"])
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
