"""Low-rank channels between layers (after Merullo et al., "Talking Heads").

Attention heads read from and write to low-rank subspaces of the residual stream. This module
gives the singular values of each head's OV and QK circuits, the composition scores between
heads of different layers (how much an earlier head's output subspace feeds a later head's
query, key or value input), and how much of a residual index (the IRM's dominant index, the
host's massive dims) lies in the subspaces each head writes to and reads from.
"""

from __future__ import annotations

from typing import Literal

import einops
import pandas as pd
import torch
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from irm_lens.lenses.decode import LensError

Circuit = Literal["OV", "QK"]
Mode = Literal["Q", "K", "V"]


def _kv_weights(host: TransformerBridge, name: str) -> Tensor:
    """``W_K``/``W_V`` expanded to one matrix per query head (grouped-query attention)."""
    weight = getattr(host, name).detach().float()  # [layer, kv_head, d_model, d_head]
    repeat = host.cfg.n_heads // weight.shape[1]
    return weight.repeat_interleave(repeat, dim=1)


def _weights(host: TransformerBridge) -> dict[str, Tensor]:
    """Per-head weights with the pre-attention norm's gain folded into the read side."""
    gain = torch.stack([b.ln1.weight.detach().float() for b in host.blocks])  # [layer, d_model]
    fold = gain[:, None, :, None]
    return {
        "Q": host.W_Q.detach().float() * fold,
        "K": _kv_weights(host, "W_K") * fold,
        "V": _kv_weights(host, "W_V") * fold,
        "O": host.W_O.detach().float(),  # [layer, head, d_head, d_model]
    }


def head_svd(host: TransformerBridge, circuit: Circuit = "OV") -> pd.DataFrame:
    """Singular values of every head's OV (``W_V W_O``) or QK (``W_Q W_K^T``) circuit.

    Returns:
        Columns ``layer, head, rank, singular_value, share`` (share of the squared Frobenius
        norm carried by that direction; low effective rank = few dominant rows).
    """
    if circuit not in ("OV", "QK"):
        raise LensError(f"circuit={circuit!r}; use 'OV' or 'QK'.")
    w = _weights(host)
    left, right = (w["V"], w["O"]) if circuit == "OV" else (w["Q"], w["K"].transpose(-1, -2))
    # Both factors have rank <= d_head: the SVD of the small core gives the circuit's spectrum.
    values = torch.linalg.svdvals(
        torch.linalg.qr(left).R @ torch.linalg.qr(right.transpose(-1, -2)).R.transpose(-1, -2)
    )  # [layer, head, d_head]
    share = values.pow(2) / values.pow(2).sum(-1, keepdim=True)
    n_layers, n_heads, d_head = values.shape
    index = pd.MultiIndex.from_product(
        [range(n_layers), range(n_heads), range(1, d_head + 1)], names=["layer", "head", "rank"]
    )
    return pd.DataFrame(
        {"singular_value": values.flatten().numpy(), "share": share.flatten().numpy()}, index=index
    ).reset_index()


def composition_scores(host: TransformerBridge, mode: Mode = "V") -> pd.DataFrame:
    """How much each head's output feeds a later head's ``mode`` input (Q, K or V).

    Score (Elhage et al.): ``||W_OV^A W_mode^B||_F / (||W_OV^A||_F ||W_mode^B||_F)``, with the
    later head's norm gain folded in; only pairs with ``layer_a < layer_b``.

    Returns:
        Columns ``layer_a, head_a, layer_b, head_b, score``, highest first.
    """
    if mode not in ("Q", "K", "V"):
        raise LensError(f"mode={mode!r}; use 'Q', 'K' or 'V'.")
    w = _weights(host)
    ov = einops.einsum(w["V"], w["O"], "l h m d, l h d n -> l h m n")  # writer: d_model -> d_model
    reader = w[mode]  # [layer, head, d_model, d_head]
    rows = []
    for la in range(host.cfg.n_layers - 1):
        for lb in range(la + 1, host.cfg.n_layers):
            prod = einops.einsum(ov[la], reader[lb], "ha m n, hb n d -> ha hb m d")
            score = prod.flatten(2).norm(dim=-1) / (
                ov[la].flatten(1).norm(dim=-1)[:, None] * reader[lb].flatten(1).norm(dim=-1)[None]
            )
            for ha in range(score.shape[0]):
                for hb in range(score.shape[1]):
                    rows.append((la, ha, lb, hb, float(score[ha, hb])))
    table = pd.DataFrame(rows, columns=["layer_a", "head_a", "layer_b", "head_b", "score"])
    return table.sort_values("score", ascending=False, ignore_index=True)


def _subspace_share(basis_rows: Tensor, index: int) -> Tensor:
    """Squared norm of ``e_index`` projected onto the span of each matrix's rows."""
    q = torch.linalg.qr(basis_rows.transpose(-1, -2)).Q  # [..., d_model, d_head], orthonormal
    return q[..., index, :].pow(2).sum(-1)


def index_in_head_subspaces(host: TransformerBridge, index: int) -> pd.DataFrame:
    """How much of residual index ``index`` lies in each head's write and read subspaces.

    Returns:
        Columns ``layer, head, write, read_q, read_k, read_v, chance``: the squared length of
        the unit vector ``e_index`` projected onto the span of the head's ``W_O`` rows (what it
        writes) and of its (gain-folded) ``W_Q``/``W_K``/``W_V`` columns (what it reads);
        ``chance`` = d_head / d_model, the expected value for a random direction.
    """
    if not 0 <= index < host.cfg.d_model:
        raise LensError(f"index {index} is out of range 0..{host.cfg.d_model - 1}.")
    w = _weights(host)
    parts = {"write": _subspace_share(w["O"], index)}
    for mode in ("Q", "K", "V"):
        parts[f"read_{mode.lower()}"] = _subspace_share(w[mode].transpose(-1, -2), index)
    n_layers, n_heads = parts["write"].shape
    layer, head = torch.meshgrid(torch.arange(n_layers), torch.arange(n_heads), indexing="ij")
    table = pd.DataFrame(
        {
            "layer": layer.flatten().numpy(),
            "head": head.flatten().numpy(),
            **{k: v.flatten().numpy() for k, v in parts.items()},
        }
    )
    table["chance"] = host.cfg.d_head / host.cfg.d_model
    return table
