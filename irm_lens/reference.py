"""An independent inline implementation of the paper's injected decoder, for validation.

Written against the Hugging Face Llama modules directly (no TransformerLens, no hooks): the loop
the original code spliced into a copy of the host's source. Tests check ``attach`` against it and
benchmarks time ``attach`` against it. Use it on a raw HF model (``irm_lens.host.load_hf``), not on
one wrapped by a bridge (the bridge replaces the model's submodules in place).
"""

from __future__ import annotations

import torch

from irm_lens.irm import IRM


def injected_logits(
    hf_model, irm: IRM | None, tokens: torch.Tensor, *, delta_into_attn: bool = True
) -> torch.Tensor:
    """Logits of ``hf_model`` on ``tokens`` [batch, pos] with ``irm`` injected after attention.

    ``delta_into_attn`` picks the grouping of the sum ``resid + attn + delta``: True adds the
    delta to the attention output before the residual add, False adds it after (as the original
    code did). The two are the same sum, but fp32 rounds them differently where the residual
    holds massive activations (~2.5e4 in SmolLM2's dim 507), which moves logits by ~1e-4.
    """
    if hf_model.config._attn_implementation != "eager":
        hf_model.set_attn_implementation("eager")  # what the bridge runs; sdpa drifts ~1e-4
    core = hf_model.model
    n_pos = tokens.shape[1]
    hidden = core.embed_tokens(tokens)
    positions = torch.arange(n_pos, device=tokens.device)[None]
    cos_sin = core.rotary_emb(hidden, positions)
    mask = torch.full((n_pos, n_pos), float("-inf"), device=tokens.device).triu(1)[None, None]
    irm_out = None
    for i, layer in enumerate(core.layers):
        attn, _ = layer.self_attn(
            layer.input_layernorm(hidden), position_embeddings=cos_sin, attention_mask=mask
        )
        if irm is not None and i == 0:
            irm_out = irm(hidden + attn)  # reads the un-injected post-attention residual of layer 0
        delta = None
        if irm is not None and irm_out is not None and i in irm.layers:
            delta = irm_out[irm.layers.index(i)]
        if delta is None:
            hidden = hidden + attn
        elif delta_into_attn:
            hidden = hidden + (attn + delta)
        else:
            hidden = (hidden + attn) + delta
        hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
    return hf_model.lm_head(core.norm(hidden))
