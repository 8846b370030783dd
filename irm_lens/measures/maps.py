"""Heat maps of recorded IRM outputs: per (injected layer, residual index), averaged or per token.

A recorded prompt is ``outputs: [token, inject, d_model]`` (the IRM output at every prompt token,
then every generated token), ``kinds`` (``"prompt"`` or ``"generated"`` per token) and ``layers``
(the host layer of each inject slot). This module also holds the input checks the other analysis
modules share.
"""

from __future__ import annotations

from collections.abc import Sequence

import einops
import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

Recorded = Float[Tensor, "token inject d_model"]

PAPER_TOKEN_SET = "paper"
TOKEN_SETS = ("paper", "prompt", "generated", "all")
KINDS = ("prompt", "generated")


def check_outputs(outputs: Tensor, name: str = "outputs") -> None:
    if outputs.ndim != 3:
        raise ValueError(
            f"{name} must be [token, inject, d_model] (3-D), got shape {tuple(outputs.shape)}."
        )
    if outputs.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(outputs.shape)}): record some tokens.")


def _check_one_per(
    outputs: Tensor, entries: Sequence[object], name: str, axis: int, unit: str, hint: str
) -> None:
    """Check ``outputs``, then that ``entries`` (the argument ``name``) holds one entry per
    ``unit`` of ``outputs``, i.e. per index along ``axis``; ``hint`` says what to give."""
    check_outputs(outputs)
    if len(entries) != outputs.shape[axis]:
        raise ValueError(
            f"{name} has {len(entries)} entries but outputs has {outputs.shape[axis]} {unit}: "
            f"{hint}"
        )


def check_kinds(outputs: Tensor, kinds: Sequence[str]) -> None:
    hint = "give one kind ('prompt' or 'generated') per recorded token."
    _check_one_per(outputs, kinds, "kinds", 0, "tokens", hint)
    bad = sorted({k for k in kinds if k not in KINDS})
    if bad:
        raise ValueError(f"kinds contains {bad}; every entry must be one of {list(KINDS)}.")


def check_layers(outputs: Tensor, layers: Sequence[int]) -> None:
    hint = "give the host layer of every inject slot (IRM.layers)."
    _check_one_per(outputs, layers, "layers", 1, "inject slots", hint)
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers {list(layers)} contains duplicates.")


def _long_frame(matrix: Tensor, layers: Sequence[int]) -> pd.DataFrame:
    """``[inject, d_model]`` -> long frame with columns ``layer, index, value`` (layer-major)."""
    n_inject, d_model = matrix.shape
    values = einops.rearrange(matrix, "inject d_model -> (inject d_model)")
    return pd.DataFrame(
        {
            "layer": np.repeat(np.asarray(layers, dtype=np.int64), d_model),
            "index": np.tile(np.arange(d_model, dtype=np.int64), n_inject),
            "value": values.detach().cpu().double().numpy(),
        }
    )


def token_mask(
    kinds: Sequence[str], token_set: str = PAPER_TOKEN_SET, n_generated: int = 10
) -> Bool[Tensor, " token"]:
    """Which recorded tokens a named token set selects.

    Args:
        kinds: ``"prompt"`` or ``"generated"`` per recorded token.
        token_set: ``"paper"`` (every prompt token plus the first ``n_generated`` generated
            tokens, the original's "average heat map" set), ``"prompt"``, ``"generated"`` or
            ``"all"``.
        n_generated: how many generated tokens the ``"paper"`` set keeps (the original: 10).

    Returns:
        Bool tensor ``[token]``, True where the token is selected.

    Example:
        >>> token_mask(["prompt", "generated", "generated"], n_generated=1).tolist()
        [True, True, False]
    """
    if token_set not in TOKEN_SETS:
        raise ValueError(f"token_set={token_set!r} is unknown; use one of {list(TOKEN_SETS)}.")
    if n_generated < 0:
        raise ValueError(f"n_generated must be >= 0, got {n_generated}.")
    bad = sorted({k for k in kinds if k not in KINDS})
    if bad:
        raise ValueError(f"kinds contains {bad}; every entry must be one of {list(KINDS)}.")
    is_prompt = torch.tensor([k == "prompt" for k in kinds], dtype=torch.bool)
    is_generated = ~is_prompt
    if token_set == "prompt":
        return is_prompt
    if token_set == "generated":
        return is_generated
    if token_set == "all":
        return torch.ones_like(is_prompt)
    # 1-based rank of each generated token among the generated tokens, in recording order.
    generated_rank = torch.cumsum(is_generated.long(), dim=0)
    return is_prompt | (is_generated & (generated_rank <= n_generated))


def heatmap(
    outputs: Recorded,
    kinds: Sequence[str],
    layers: Sequence[int],
    *,
    token_set: str = PAPER_TOKEN_SET,
    n_generated: int = 10,
    absolute: bool = False,
) -> pd.DataFrame:
    """Average heat map (paper Fig. 2): mean IRM output per (layer, residual index).

    Args:
        outputs: ``[token, inject, d_model]`` recorded IRM outputs of one prompt.
        kinds: ``"prompt"`` or ``"generated"`` per token.
        layers: host layer of each inject slot.
        token_set: tokens averaged over (see ``token_mask``); the paper's is ``"paper"``.
        n_generated: generated tokens kept by the ``"paper"`` set.
        absolute: average ``|output|`` instead of the signed output.

    Returns:
        One row per (layer, index): ``layer`` (host layer), ``index`` (residual index),
        ``value`` (the mean), ``stat`` (``"mean"`` or ``"mean_abs"``), ``n_tokens`` (how many
        tokens were averaged).
    """
    check_kinds(outputs, kinds)
    check_layers(outputs, layers)
    mask = token_mask(kinds, token_set, n_generated).to(outputs.device)
    n_tokens = int(mask.sum())
    if n_tokens == 0:
        raise ValueError(
            f"token_set={token_set!r} with n_generated={n_generated} selects none of the "
            f"{len(kinds)} recorded tokens ({sum(k == 'prompt' for k in kinds)} prompt, "
            f"{sum(k == 'generated' for k in kinds)} generated); pick another token set."
        )
    selected = outputs[mask].double()
    if absolute:
        selected = selected.abs()
    frame = _long_frame(selected.mean(dim=0), layers)
    frame["stat"] = "mean_abs" if absolute else "mean"
    frame["n_tokens"] = n_tokens
    return frame


def token_map(outputs: Recorded, layers: Sequence[int], token: int) -> pd.DataFrame:
    """Per-token heat map: the signed IRM output at one token position.

    Args:
        outputs: ``[token, inject, d_model]`` recorded IRM outputs of one prompt.
        layers: host layer of each inject slot.
        token: token position, ``0 .. n_tokens - 1``.

    Returns:
        One row per (layer, index): ``layer``, ``index``, ``value`` (the output at ``token``).
    """
    check_layers(outputs, layers)
    n_tokens = outputs.shape[0]
    if not 0 <= token < n_tokens:
        raise ValueError(f"token={token} is out of range: outputs has tokens 0..{n_tokens - 1}.")
    return _long_frame(outputs[token], layers)
