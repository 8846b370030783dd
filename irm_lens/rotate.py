"""A host with its residual stream in a random basis: the same function, no privileged coordinates.

Computational invariance (as in SliceGPT and QuaRot): fold every RMSNorm's gain into the weights
that read its output, then rotate the residual stream by a fixed orthogonal ``R``. An RMSNorm with
unit gain commutes with ``R`` (it divides by the vector's length), so with

    W_E' = W_E R,   W_in' = W_in diag(g) R   (q, k, v, gate, up; lm_head with the final gain),
    W_out' = R^T W_out                       (o_proj, down_proj; a bias b becomes b R)

the model computes the same logits while every residual coordinate of the original is spread over
all coordinates of the new one. Massive activations, norm gains and anything else that made one
coordinate special are gone from the basis an IRM writes in. ``load_host("<host>+rotated")``
builds it (``+rotated7``: the rotation of seed 7); the rotation is computed in float64.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor, nn

SUFFIX = re.compile(r"^(?P<base>.+)\+rotated(?P<seed>\d*)$")


def split_rotated(name: str | None) -> tuple[str | None, int | None]:
    """``"smollm2-135m-instruct+rotated3"`` -> (``"smollm2-135m-instruct"``, 3); a name without the
    suffix -> (name, None). ``+rotated`` alone is seed 0."""
    match = SUFFIX.match(name or "")
    if match is None:
        return name, None
    return match["base"], int(match["seed"] or 0)


def random_rotation(d: int, seed: int) -> Tensor:
    """A Haar-random ``[d, d]`` orthogonal matrix (float64), the same for the same ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))  # the sign fix makes the distribution Haar


def _layers(model: Any) -> tuple[Any, list[Any]]:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    needed = ("embed_tokens", "norm")
    if (
        layers is None
        or not all(hasattr(inner, n) for n in needed)
        or not hasattr(model, "lm_head")
    ):
        raise ValueError(
            f"Rotating the residual basis needs a Llama-style model (model.embed_tokens, "
            f"model.layers, model.norm, lm_head); got {type(model).__name__}."
        )
    return inner, list(layers)


def _read(linear: nn.Linear, gain: Tensor, rotation: Tensor) -> None:
    """A layer reading the residual through a norm of gain ``gain``: W <- W diag(g) R."""
    w = linear.weight.double()
    linear.weight.data = ((w * gain) @ rotation).to(linear.weight.dtype)


def _write(linear: nn.Linear, rotation: Tensor) -> None:
    """A layer writing into the residual: W <- R^T W, b <- b R."""
    dtype = linear.weight.dtype
    linear.weight.data = (rotation.T @ linear.weight.double()).to(dtype)
    if linear.bias is not None:
        linear.bias.data = (linear.bias.double() @ rotation).to(dtype)


def _unit_gain(norm: Any) -> Tensor:
    gain = norm.weight.detach().double().clone()
    if getattr(norm, "bias", None) is not None:
        raise ValueError("Rotating the residual basis needs RMSNorm (no bias); this norm has one.")
    norm.weight.data = torch.ones_like(norm.weight)
    return gain


@torch.no_grad()
def rotate_residual_basis(model: Any, rotation: Tensor) -> Any:
    """Fold the norm gains and rotate ``model``'s residual stream by ``rotation`` (in place).

    The input and output embeddings are untied (they differ once the final gain is folded).

    Returns:
        ``model``, computing the same function in the rotated basis.
    """
    inner, layers = _layers(model)
    d = inner.embed_tokens.weight.shape[1]
    if rotation.shape != (d, d):
        raise ValueError(f"rotation must be [{d}, {d}] for this model, got {list(rotation.shape)}.")
    rotation = rotation.double().to(inner.embed_tokens.weight.device)
    embed = inner.embed_tokens.weight
    lm_head = model.lm_head.weight.detach().clone()  # a copy: it may be tied to the embedding
    inner.embed_tokens.weight = nn.Parameter((embed.double() @ rotation).to(embed.dtype))
    for layer in layers:
        attn, mlp = layer.self_attn, layer.mlp
        gain = _unit_gain(layer.input_layernorm)
        for linear in (attn.q_proj, attn.k_proj, attn.v_proj):
            _read(linear, gain, rotation)
        _write(attn.o_proj, rotation)
        gain = _unit_gain(layer.post_attention_layernorm)
        for linear in (mlp.gate_proj, mlp.up_proj):
            _read(linear, gain, rotation)
        _write(mlp.down_proj, rotation)
    gain = _unit_gain(inner.norm)
    head = ((lm_head.double() * gain) @ rotation).to(lm_head.dtype)
    model.lm_head.weight = nn.Parameter(head)
    model.config.tie_word_embeddings = False
    return model
