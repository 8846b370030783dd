"""When and where the IRM writes: top-k timing by token (paper Fig. 3), by layer, and sparsity."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from irm_lens.measures.maps import Recorded, check_kinds, check_layers


def _topk_flat(outputs: Recorded, k: int) -> tuple[torch.Tensor, int]:
    """Flat indices (into ``outputs``) of the ``k`` largest ``|values|``, and the k used."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    k_used = min(k, outputs.numel())
    flat = outputs.detach().abs().flatten()
    return torch.topk(flat, k_used).indices.cpu(), k_used


def topk_timing(outputs: Recorded, kinds: Sequence[str], k: int = 1000) -> pd.DataFrame:
    """Count the ``k`` largest ``|outputs|`` (tokens x layers x indices) per token position.

    Args:
        outputs: ``[token, inject, d_model]`` recorded IRM outputs of one prompt.
        kinds: ``"prompt"`` or ``"generated"`` per token.
        k: how many of the largest values to count (the paper: 1000); ties as ``torch.topk``.

    Returns:
        One row per token position, zeros included: ``token`` (position), ``kind``, ``count``
        (top-k values at that token), ``k_used`` (``min(k, outputs.numel())``, what was counted).
    """
    check_kinds(outputs, kinds)
    top, k_used = _topk_flat(outputs, k)
    n_tokens, n_inject, d_model = outputs.shape
    token = top // (n_inject * d_model)
    counts = torch.bincount(token, minlength=n_tokens)
    return pd.DataFrame(
        {
            "token": np.arange(n_tokens, dtype=np.int64),
            "kind": list(kinds),
            "count": counts.numpy().astype(np.int64),
            "k_used": k_used,
        }
    )


def file_order(n_prompt: int, n_tokens: int) -> np.ndarray:
    """Where each token (in sequence order) stands on the original code's timing histogram.

    The original writes one CSV per token and plots them in natural-sorted file-name order. Its
    names count prompt tokens from 1 but call the prompt's last token ``generated_token_1``
    (``tensor_logger.write_csv``), so the order is: the prompt's last token, the generated
    tokens, then the prompt from BOS up to its second-to-last token. That is a rotation of the
    sequence by ``n_prompt - 1``.
    """
    if not 1 <= n_prompt <= n_tokens:
        raise ValueError(f"need 1 <= n_prompt <= n_tokens, got {n_prompt} and {n_tokens}.")
    return (np.arange(n_tokens) - (n_prompt - 1)) % n_tokens


def layer_topk(outputs: Recorded, layers: Sequence[int], k: int = 100) -> pd.DataFrame:
    """Count the ``k`` largest ``|outputs|`` (tokens x layers x indices) per injected layer.

    Args:
        outputs: ``[token, inject, d_model]`` recorded IRM outputs of one prompt.
        layers: host layer of each inject slot.
        k: how many of the largest values to count (the original: 100); ties as ``torch.topk``.

    Returns:
        One row per inject slot, zeros included: ``layer`` (host layer), ``count``, ``k_used``
        (``min(k, outputs.numel())``).
    """
    check_layers(outputs, layers)
    top, k_used = _topk_flat(outputs, k)
    _, n_inject, d_model = outputs.shape
    slot = (top // d_model) % n_inject
    counts = torch.bincount(slot, minlength=n_inject)
    return pd.DataFrame(
        {
            "layer": np.asarray(layers, dtype=np.int64),
            "count": counts.numpy().astype(np.int64),
            "k_used": k_used,
        }
    )


def sparsity_by_layer(
    outputs: Recorded, layers: Sequence[int], threshold: float = 1e-4
) -> pd.DataFrame:
    """Fraction of near-zero IRM outputs per layer: ``|value| < threshold`` over tokens x indices.

    Args:
        outputs: ``[token, inject, d_model]`` recorded IRM outputs of one prompt.
        layers: host layer of each inject slot.
        threshold: values with ``|value|`` below it count as zero (the original: 1e-4).

    Returns:
        One row per inject slot: ``layer``, ``sparsity`` (fraction in [0, 1]), ``threshold``.
    """
    check_layers(outputs, layers)
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}.")
    small = (outputs.detach().abs() < threshold).double()
    sparsity = small.mean(dim=(0, 2))
    return pd.DataFrame(
        {
            "layer": np.asarray(layers, dtype=np.int64),
            "sparsity": sparsity.cpu().numpy(),
            "threshold": float(threshold),
        }
    )
