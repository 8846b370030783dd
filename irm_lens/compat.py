"""Work-arounds for upstream changes, each with the cause it answers (docs/install.md).

KV-cache generation on transformers >= 5.24 (TransformerLens 4.3.0):
    transformers 5.24 renamed the keyword that carries the KV cache from ``past_key_values`` to
    ``cache`` (``LlamaDecoderLayer`` now calls ``self_attn(..., cache=...)``; the old name is
    accepted by the HF modules until 5.40 with a FutureWarning). TransformerLens 4.3.0 replaces
    each HF attention module with an ``AttentionBridge`` that re-implements attention and looks
    for the cache only under ``past_key_values`` (or ``layer_past``). Under 5.24 it finds none,
    so at every cached decoding step the new token attends to itself alone: greedy answers turn
    into ``'The-----------'`` while uncached forwards stay right. :func:`route_kv_cache` hands the
    cache to every attention bridge under the name it reads; on transformers <= 5.23 the keyword
    is already ``past_key_values`` and it changes nothing.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

_NEW_NAME = "cache"
_OLD_NAME = "past_key_values"


def _cache_under_old_name(
    _module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if kwargs.get(_OLD_NAME) is None and kwargs.get(_NEW_NAME) is not None:
        kwargs = dict(kwargs)
        kwargs[_OLD_NAME] = kwargs.pop(_NEW_NAME)
    return args, kwargs


def route_kv_cache(bridge: torch.nn.Module) -> int:
    """Make every attention bridge of ``bridge`` see the KV cache; returns how many were hooked.

    Idempotent: a bridge already routed is left as it is. The hooks are plain torch forward
    pre-hooks, not TransformerLens hooks, so ``reset_hooks()`` does not remove them. Also
    silences transformers' FutureWarning about the old keyword, which the bridge's own
    ``generate`` passes (removed in transformers 5.40; ``pyproject.toml`` stops below it).
    """
    warnings.filterwarnings(
        "ignore", message="`past_key_values` is deprecated", category=FutureWarning
    )
    count = 0
    for module in bridge.modules():
        if isinstance(module, AttentionBridge) and not getattr(module, "_irm_lens_kv", False):
            module.register_forward_pre_hook(_cache_under_old_name, with_kwargs=True)
            module._irm_lens_kv = True  # type: ignore[assignment]
            count += 1
    return count
