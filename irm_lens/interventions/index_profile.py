"""Everything the host says about one residual index, with no IRM and no training.

Why would an IRM lean on one index (1512 in Llama-2-7B)? The candidate reasons are properties of
the host at that index, and each is compared with other indices, never read alone:

- ``norm_gain_table``: the index's gain in every layer's input norm (``ln1``), post-attention norm
  (``ln2``) and the final norm, ranked among all indices (rank 1 = smallest |gain|).
- ``magnitude_table``: mean and max |residual| at the index by layer and token kind (first token,
  first "." or newline, other), beside the median index of the same layer and kind.
- ``massive_activations``: the host's massive-activation dims under Sun et al. (2024)'s criterion:
  some |activation| above ``threshold`` (100) and ``ratio`` (1000) times the median |activation| of
  its layer's hidden states.
- ``norm_lever``: scale the index by ``s`` in the residual stream entering layer ``l`` (for every
  ``l``) and measure every later norm's input RMS (the denominator of its scale) and the next-token
  entropy, against control indices matched on the host's magnitude at them.

``index_profile`` runs all of it and returns an ``IndexProfile``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from irm_lens.anatomy import final_gain, unembedding
from irm_lens.host import host_name
from irm_lens.inject import patch, resid_mid_hook, resid_post_hook, resid_pre_hook
from irm_lens.interventions.host_profile import TOKEN_KINDS, residual_profile, token_kinds
from irm_lens.prompts import PromptMode, encode

DEFAULT_SCALES = (0.0, 2.0)
"""Removing the index (0) and doubling it (2): the two ends of the lever."""


def _gain_vectors(host: TransformerBridge) -> dict[str, Tensor]:
    gains = {"final": final_gain(host).cpu()[None]}
    for name in ("ln1", "ln2"):
        gains[name] = torch.stack(
            [getattr(b, name).weight.detach().float().cpu() for b in host.blocks]
        )
    return gains  # norm -> [layer, d_model]


def norm_gain_table(host: TransformerBridge, indices: Sequence[int]) -> pd.DataFrame:
    """Gains at ``indices`` in every norm of the host.

    Returns:
        Columns ``norm, layer, index, gain, gain_rank, median_gain`` (``norm``: ln1, ln2, final;
        the final norm's ``layer`` is ``n_layers``; ``gain_rank``: 1 = smallest |gain| of that
        norm; ``median_gain``: the median gain of that norm over all indices).
    """
    rows = []
    for norm, table in _gain_vectors(host).items():
        ranks = table.abs().argsort(dim=1).argsort(dim=1) + 1
        for row, (gain, rank) in enumerate(zip(table, ranks, strict=True)):
            layer = host.cfg.n_layers if norm == "final" else row
            median = float(gain.median())
            for index in indices:
                rows.append(
                    {
                        "norm": norm,
                        "layer": layer,
                        "index": int(index),
                        "gain": float(gain[index]),
                        "gain_rank": int(rank[index]),
                        "median_gain": median,
                    }
                )
    return pd.DataFrame(rows)


def magnitude_table(residual: pd.DataFrame, indices: Sequence[int]) -> pd.DataFrame:
    """|residual| at ``indices`` by layer and token kind, with the median index beside each.

    Args:
        residual: ``residual_profile``'s table.

    Returns:
        Columns ``layer, token_kind, index, mean_abs, max_abs, median_mean_abs,
        median_max_abs`` (medians over all indices of the same layer and token kind).
    """
    medians = residual.groupby(["layer", "token_kind"], as_index=False)[["mean_abs", "max_abs"]]
    medians = medians.median().rename(
        columns={"mean_abs": "median_mean_abs", "max_abs": "median_max_abs"}
    )
    chosen = residual[residual["index"].isin([int(i) for i in indices])]
    out = chosen[["layer", "token_kind", "index", "mean_abs", "max_abs"]].merge(
        medians, on=["layer", "token_kind"]
    )
    return out.sort_values(["index", "token_kind", "layer"]).reset_index(drop=True)


def massive_activations(
    residual: pd.DataFrame, *, threshold: float = 100.0, ratio: float = 1000.0
) -> pd.DataFrame:
    """Residual indices holding a massive activation (Sun et al. 2024): some |value| above
    ``threshold`` and above ``ratio`` times the median |value| of that layer's hidden states.

    Args:
        residual: ``residual_profile``'s table (needs its ``layer_median_abs`` column).

    Returns:
        One row per qualifying index: ``index, max_abs, layer, token_kind, layer_median_abs,
        times_median``, at the layer where ``times_median`` is largest; largest first.
    """
    table = residual.assign(times_median=residual["max_abs"] / residual["layer_median_abs"])
    hits = table[(table["max_abs"] > threshold) & (table["times_median"] > ratio)]
    if hits.empty:
        return pd.DataFrame(
            columns=["index", "max_abs", "layer", "token_kind", "layer_median_abs", "times_median"]
        )
    best = hits.loc[hits.groupby("index")["times_median"].idxmax()]
    best = best.sort_values("max_abs", ascending=False)
    columns = ["index", "max_abs", "layer", "token_kind", "layer_median_abs", "times_median"]
    return best[columns].reset_index(drop=True)


def matched_controls(
    residual: pd.DataFrame, index: int, *, n: int = 8, window: int = 4, seed: int = 0
) -> list[int]:
    """``n`` indices drawn (seeded) from the ``window * n`` indices nearest ``index`` in mean
    |residual| over every layer and token; ``index`` itself is never drawn."""
    magnitude = residual.groupby("index")["mean_abs"].mean()
    if index not in magnitude.index:
        raise ValueError(f"index {index} is not in the residual profile (0..{len(magnitude) - 1}).")
    others = magnitude.drop(index)
    nearest = (others - magnitude[index]).abs().sort_values().index[: window * n]
    rng = np.random.default_rng(seed)
    return sorted(
        int(i) for i in rng.choice(np.asarray(nearest), size=min(n, len(nearest)), replace=False)
    )


def _norm_inputs(host: TransformerBridge) -> list[tuple[str, int, str]]:
    """(norm, layer, hook) of every norm's input, in forward order."""
    points = []
    for layer in range(host.cfg.n_layers):
        points.append(("ln1", layer, resid_pre_hook(layer)))
        points.append(("ln2", layer, resid_mid_hook(layer)))
    points.append(("final", host.cfg.n_layers, resid_post_hook(host.cfg.n_layers - 1)))
    return points


def _rms_and_entropy(
    host: TransformerBridge, tokens: Tensor, mask: Tensor, scale_at: tuple[str, int, float] | None
) -> tuple[Tensor, Tensor]:
    """Per norm input: the RMS at every kept token ``[norm_point, kept]``; next-token entropy
    ``[kept]``. ``scale_at``: (hook, index, scale) applied to the residual there first."""
    names = [hook for _, _, hook in _norm_inputs(host)]
    hook, index, scale = scale_at or ("", 0, 1.0)

    def rescale(x: Tensor, _layer: int) -> Tensor:
        x[..., index] *= scale
        return x

    hooks = [hook] if scale_at is not None else []
    with torch.no_grad(), patch(host, hooks, rescale):
        logits, cache = host.run_with_cache(tokens, names_filter=names)
    rms = torch.stack([cache[n].double().pow(2).mean(-1).sqrt()[mask] for n in names])
    logp = logits.double().log_softmax(-1)[mask]
    return rms, -(logp.exp() * logp).sum(-1)


def _batch(
    host: TransformerBridge, prompts: Sequence[str], mode: PromptMode
) -> tuple[Tensor, Tensor]:
    """Prompts right-padded into one batch (causal attention: padding after a token cannot change
    it) and the mask of real tokens."""
    ids = [encode(host.tokenizer, p, mode=mode).prompt_ids for p in prompts]
    width = max(len(i) for i in ids)
    tokens = torch.zeros(len(ids), width, dtype=torch.long)
    mask = torch.zeros(len(ids), width, dtype=torch.bool)
    for row, seq in enumerate(ids):
        tokens[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = True
    return tokens.to(host.W_E.device), mask.to(host.W_E.device)


def norm_lever(
    host: TransformerBridge,
    prompts: Sequence[str],
    indices: Sequence[int],
    *,
    scales: Sequence[float] = DEFAULT_SCALES,
    layers: Sequence[int] | None = None,
    mode: PromptMode = "plain",
    progress: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scale each of ``indices`` by each of ``scales`` in the residual entering each of ``layers``
    (default: all) and measure what every later norm and the next-token distribution see.

    Returns:
        ``(rms, entropy)``. ``rms``: columns ``index, scale, scaled_layer, norm, norm_layer,
        log_rms_ratio`` (mean over tokens of log(RMS scaled / RMS unchanged) at that norm's input,
        for every norm at or after the scaled point). ``entropy``: columns ``index, scale,
        scaled_layer, entropy_change`` (mean over tokens, nats).
    """
    tokens, mask = _batch(host, prompts, mode)
    points = _norm_inputs(host)
    base_rms, base_entropy = _rms_and_entropy(host, tokens, mask, None)
    rms_rows, entropy_rows = [], []
    chosen = list(range(host.cfg.n_layers) if layers is None else layers)
    for layer in tqdm(chosen, desc="norm lever (layers)", disable=not progress, leave=False):
        later = [k for k, (_, at, _) in enumerate(points) if at >= layer]
        for index in indices:
            for scale in scales:
                rms, entropy = _rms_and_entropy(
                    host, tokens, mask, (resid_pre_hook(layer), int(index), float(scale))
                )
                ratio = (rms / base_rms).log().mean(-1)
                for k in later:
                    norm, norm_layer, _ = points[k]
                    rms_rows.append(
                        {
                            "index": int(index),
                            "scale": float(scale),
                            "scaled_layer": layer,
                            "norm": norm,
                            "norm_layer": norm_layer,
                            "log_rms_ratio": float(ratio[k]),
                        }
                    )
                entropy_rows.append(
                    {
                        "index": int(index),
                        "scale": float(scale),
                        "scaled_layer": layer,
                        "entropy_change": float((entropy - base_entropy).mean()),
                    }
                )
    return pd.DataFrame(rms_rows), pd.DataFrame(entropy_rows)


@dataclass(frozen=True)
class IndexFacts:
    """The headline numbers of one index (``final_*``: the final norm; ranks 1 = smallest |gain|,
    1 = largest unembedding row norm)."""

    index: int
    final_gain: float
    final_gain_rank: int
    median_final_gain: float
    unembed_norm: float
    unembed_norm_rank: int
    peak_abs: float
    peak_layer: int
    peak_token_kind: str
    peak_over_median: float
    massive: bool
    final_rms_effect: dict[str, float]
    """Per scale: |log RMS ratio| at the final norm, median over scaled layers, index / median of
    the controls (>1: this index moves the final norm more than magnitude-matched indices)."""
    entropy_effect: dict[str, float]
    """Per scale: the entropy change (nats), median over scaled layers, minus the controls'."""


@dataclass(frozen=True)
class IndexProfile:
    """``index_profile``'s result: the tables (long format, controls included) and the facts."""

    host: str
    index: int
    controls: tuple[int, ...]
    scales: tuple[float, ...]
    n_prompts: int
    gains: pd.DataFrame
    magnitude: pd.DataFrame
    massive: pd.DataFrame
    lever_rms: pd.DataFrame
    lever_entropy: pd.DataFrame
    facts: IndexFacts

    def tables(self) -> dict[str, pd.DataFrame]:
        """Name -> table, for writing one CSV each."""
        return {
            "gains": self.gains,
            "magnitude": self.magnitude,
            "massive": self.massive,
            "lever_rms": self.lever_rms,
            "lever_entropy": self.lever_entropy,
        }

    def summary(self) -> dict[str, object]:
        """JSON-ready: the settings and the facts."""
        return {
            "host": self.host,
            "index": self.index,
            "controls": list(self.controls),
            "scales": list(self.scales),
            "n_prompts": self.n_prompts,
            **dataclasses.asdict(self.facts),
        }


def _lever_effects(
    profile_rms: pd.DataFrame, entropy: pd.DataFrame, index: int, scales: Sequence[float]
) -> tuple[dict[str, float], dict[str, float]]:
    final = profile_rms[profile_rms["norm"] == "final"]
    rms_effect, entropy_effect = {}, {}
    for scale in scales:
        at = final[final["scale"] == scale]
        per = at.assign(size=at["log_rms_ratio"].abs()).groupby("index")["size"].median()
        controls = per.drop(index)
        rms_effect[f"{scale:g}"] = float(per[index] / max(float(controls.median()), 1e-12))
        ent = entropy[entropy["scale"] == scale].groupby("index")["entropy_change"].median()
        entropy_effect[f"{scale:g}"] = float(ent[index] - ent.drop(index).median())
    return rms_effect, entropy_effect


def index_profile(
    host: TransformerBridge,
    prompts: Sequence[str],
    index: int,
    *,
    n_controls: int = 8,
    scales: Sequence[float] = DEFAULT_SCALES,
    layers: Sequence[int] | None = None,
    mode: PromptMode = "plain",
    seed: int = 0,
    progress: bool = False,
) -> IndexProfile:
    """Profile residual ``index`` of ``host`` on ``prompts`` (see the module docstring).

    Args:
        n_controls: control indices matched on mean |residual| (``matched_controls``).
        scales: factors for the norm lever (1.0 would change nothing).
        layers: layers whose incoming residual is scaled (default: every layer).
        seed: draws the controls.
        progress: a progress bar over the norm lever's layers.
    """
    d_model = host.cfg.d_model
    if not 0 <= index < d_model:
        raise ValueError(
            f"--index {index} is out of range: this host's residual indices are 0..{d_model - 1}."
        )
    if n_controls < 1:
        raise ValueError("index_profile needs at least one control index (n_controls >= 1).")
    residual = residual_profile(host, prompts, mode=mode)
    controls = matched_controls(residual, index, n=n_controls, seed=seed)
    chosen = [index, *controls]
    gains = norm_gain_table(host, chosen)
    magnitude = magnitude_table(residual, chosen)
    massive = massive_activations(residual)
    lever_rms, lever_entropy = norm_lever(
        host, prompts, chosen, scales=scales, layers=layers, mode=mode, progress=progress
    )
    facts = _facts(host, residual, gains, massive, index, lever_rms, lever_entropy, scales)
    return IndexProfile(
        host=host_name(host),
        index=index,
        controls=tuple(controls),
        scales=tuple(float(s) for s in scales),
        n_prompts=len(prompts),
        gains=gains,
        magnitude=magnitude,
        massive=massive,
        lever_rms=lever_rms,
        lever_entropy=lever_entropy,
        facts=facts,
    )


def _facts(
    host: TransformerBridge,
    residual: pd.DataFrame,
    gains: pd.DataFrame,
    massive: pd.DataFrame,
    index: int,
    lever_rms: pd.DataFrame,
    lever_entropy: pd.DataFrame,
    scales: Sequence[float],
) -> IndexFacts:
    final = gains[(gains["norm"] == "final") & (gains["index"] == index)].iloc[0]
    unembed = unembedding(host).cpu().norm(dim=1)
    unembed_rank = int((unembed > unembed[index]).sum()) + 1
    at = residual[residual["index"] == index]
    peak = at.loc[at["max_abs"].idxmax()]
    layer_median = residual.groupby("layer")["max_abs"].median()
    rms_effect, entropy_effect = _lever_effects(lever_rms, lever_entropy, index, scales)
    return IndexFacts(
        index=index,
        final_gain=float(final["gain"]),
        final_gain_rank=int(final["gain_rank"]),
        median_final_gain=float(final["median_gain"]),
        unembed_norm=float(unembed[index]),
        unembed_norm_rank=unembed_rank,
        peak_abs=float(peak["max_abs"]),
        peak_layer=int(peak["layer"]),
        peak_token_kind=str(peak["token_kind"]),
        peak_over_median=float(peak["max_abs"] / layer_median[int(peak["layer"])]),
        massive=bool(index in set(massive["index"].astype(int))),
        final_rms_effect=rms_effect,
        entropy_effect=entropy_effect,
    )


__all__ = [
    "DEFAULT_SCALES",
    "TOKEN_KINDS",
    "IndexFacts",
    "IndexProfile",
    "index_profile",
    "magnitude_table",
    "massive_activations",
    "matched_controls",
    "norm_gain_table",
    "norm_lever",
    "token_kinds",
]
