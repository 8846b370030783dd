"""Do two interventions push in the same directions? Their top output subspaces compared with
TransformerLens's projection kernel (``transformer_lens.tools.analysis.projection_kernel``).

An IRM's output subspace is the span of the ``rank`` leading singular directions of its recorded
outputs, every token and injected layer pooled (``[d_model, tokens x layers]``); steering vectors
are one token. The normalized projection kernel of two rank-k subspaces is the cosine between
their projection matrices: 1 for the same subspace, and k / d_model on average for two
independent random ones (``random_projection_kernel_moments``). Two IRMs can share a subspace
and still differ in their top index: the index is one coordinate of that subspace.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from einops import rearrange
from torch import Tensor
from transformer_lens.tools.analysis import (
    SubspaceBasis,
    orthonormal_subspace,
    projection_kernel,
    random_projection_kernel_moments,
)

RANK = 8


def output_subspace(outputs: Sequence[Tensor], rank: int = RANK) -> SubspaceBasis:
    """The ``rank`` leading directions of ``outputs`` (one ``[token, inject, d_model]`` tensor
    per prompt, or one ``[inject, d_model]`` tensor of steering vectors)."""
    if not outputs:
        raise ValueError("output_subspace needs at least one output tensor.")
    pooled = torch.cat([o.double().reshape(-1, o.shape[-1]) for o in outputs])
    full = orthonormal_subspace(rearrange(pooled, "n d -> d n"))
    k = min(rank, full.measured_rank)  # a few steering vectors may span fewer directions
    return dataclasses.replace(full, basis=full.basis[:, :k], rank=k)


def agreement(a: SubspaceBasis, b: SubspaceBasis) -> float:
    """The normalized projection kernel of two subspaces (0 orthogonal, 1 the same)."""
    return float(projection_kernel(a, b).normalized)


def chance(d_model: int, rank: int = RANK) -> float:
    """The normalized projection kernel two independent random rank-``rank`` subspaces have on
    average: ``rank / d_model``."""
    return random_projection_kernel_moments(d_model, rank).mean / rank
