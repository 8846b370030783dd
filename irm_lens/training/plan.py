"""Memory per process for training an IRM: one process, DDP and FSDP (``irm-lens plan``).

An estimate from shapes alone (no weights loaded for the paper's host), in bytes:

- host weights: its parameters at the host dtype, on every rank (the frozen host is never
  sharded);
- IRM weights, gradients and Adam's two moments, fp32: all of them on every rank under DDP;
  a 1/N shard of each under FSDP, plus the full weights and gradient of the largest Linear
  while it runs (the IRM is sharded one Linear at a time);
- activations kept for the backward pass, per row-token of a rank's share of the batch: per
  host layer ``3 d_mlp + 5 d_model + n_heads * seq`` values at the host dtype (gate, up and
  product of the MLP; the normed inputs, queries, keys, values, attention output; the attention
  probabilities), fp32 log-probabilities over the vocabulary, and the IRM's hidden activations;
  with ``checkpoint_host`` only each block's input is kept (block 0 whole), and one block is
  recomputed at a time during the backward pass;
- the IRM's output (one ``d_model`` vector per injected layer and token) and its gradient,
  and the logits with their gradient at the loss.

``tests/test_plan.py`` checks the activation term against the bytes autograd actually keeps on
three hosts; ``tests/test_cuda.py`` checks the total against the peak CUDA memory.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import nn

GIB = 1024**3
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


@dataclass(frozen=True)
class HostShape:
    """The sizes of a host that memory depends on."""

    name: str
    n_params: int
    n_layers: int
    d_model: int
    d_mlp: int
    n_heads: int
    d_vocab: int

    @classmethod
    def of(cls, host: Any, name: str | None = None) -> HostShape:
        """The shape of a loaded host (a ``TransformerBridge``)."""
        cfg = host.cfg
        n_params = sum(p.numel() for p in host.parameters())
        label = name or str(getattr(cfg, "model_name", "host"))
        return cls(label, n_params, cfg.n_layers, cfg.d_model, cfg.d_mlp, cfg.n_heads, cfg.d_vocab)

    @classmethod
    def of_hf_config(cls, config: Any, name: str) -> HostShape:
        """The shape of a Hugging Face causal LM config, its parameters counted on the meta
        device (nothing allocated)."""
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        n_params = sum(p.numel() for p in model.parameters())
        return cls(
            name,
            n_params,
            config.num_hidden_layers,
            config.hidden_size,
            config.intermediate_size,
            config.num_attention_heads,
            config.vocab_size,
        )


# The paper's host, from its published config.json (hidden 4096, intermediate 11008, 32 layers
# and heads, vocabulary 32000; 6,738,415,616 parameters): planned without its weights.
LLAMA_2_7B = HostShape("meta-llama/Llama-2-7b-chat-hf", 6_738_415_616, 32, 4096, 11008, 32, 32000)
KNOWN_SHAPES = {
    "meta-llama/Llama-2-7b-chat-hf": LLAMA_2_7B,
    "meta-llama/Llama-2-7b-hf": LLAMA_2_7B,
}


def host_shape(name: str | None) -> HostShape:
    """A host's shape: the paper's host by id; a built-in host (loaded); else its config.json
    (a local directory or the Hugging Face cache), counted on the meta device."""
    from irm_lens.host import BUILTIN_HOSTS, EMBEDDED, load_host

    if name in KNOWN_SHAPES:
        return KNOWN_SHAPES[name]
    if name is None or name in BUILTIN_HOSTS:
        label = name or EMBEDDED
        return HostShape.of(load_host(label, device="cpu"), label)
    from transformers import AutoConfig

    from irm_lens.errors import HostNotFoundError

    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise HostNotFoundError(
            f"No config.json found for host {name!r} ({exc}). Pass a local model directory, a "
            f"Hugging Face id in the local cache, one of {sorted(KNOWN_SHAPES)}, or a built-in "
            f"host {list(BUILTIN_HOSTS)}."
        ) from None
    return HostShape.of_hf_config(config, name)


def irm_linear_sizes(d_model: int, n_inject: int, width_mult: int = 3, depth: int = 5) -> list[int]:
    """Parameters of each of the IRM's Linear layers (weights and biases), first to last."""
    hidden = width_mult * d_model
    widths = [d_model] + [hidden] * (depth - 1) + [d_model * n_inject]
    return [a * b + b for a, b in itertools.pairwise(widths)]


def layer_bytes_per_token(shape: HostShape, seq: int, dtype: str = "float32") -> int:
    """Bytes one host block keeps for its backward pass per row-token."""
    return (3 * shape.d_mlp + 5 * shape.d_model + shape.n_heads * seq) * _DTYPE_BYTES[dtype]


def activation_bytes_per_token(
    shape: HostShape,
    seq: int,
    *,
    dtype: str = "float32",
    width_mult: int = 3,
    depth: int = 5,
    checkpoint_host: bool = False,
) -> int:
    """Bytes autograd keeps for the backward pass per row-token (see the module docstring); a
    checkpointed block's recomputation is transient (``rank_bytes`` adds it)."""
    size = _DTYPE_BYTES[dtype]
    layer = layer_bytes_per_token(shape, seq, dtype)
    if checkpoint_host:  # block 0 whole and the other blocks' inputs
        host = layer + (shape.n_layers - 1) * shape.d_model * size
    else:
        host = shape.n_layers * layer
    log_probs = shape.d_vocab * 4
    irm = shape.d_model * (1 + (depth - 1) * width_mult) * 4
    return host + log_probs + irm


@dataclass(frozen=True)
class PlanInputs:
    """What one rank trains: the host, the IRM, and a batch."""

    shape: HostShape
    n_inject: int
    batch: int = 8
    seq: int = 128
    dtype: str = "float32"
    width_mult: int = 3
    depth: int = 5


def rank_bytes(
    inputs: PlanInputs, mode: str, procs: int = 1, checkpoint_host: bool = False
) -> dict[str, int]:
    """Estimated bytes per rank by component for ``mode`` in ``one``, ``ddp``, ``fsdp``."""
    if mode not in ("one", "ddp", "fsdp"):
        raise ValueError(f"mode {mode!r}: one of one, ddp, fsdp.")
    n = 1 if mode == "one" else procs
    shape, size = inputs.shape, _DTYPE_BYTES[inputs.dtype]
    linears = irm_linear_sizes(shape.d_model, inputs.n_inject, inputs.width_mult, inputs.depth)
    irm = sum(linears)
    tokens = math.ceil(inputs.batch / n) * inputs.seq
    if mode == "fsdp":  # a shard of everything, plus one whole Linear (weights and gradient)
        weights, grads = 4 * irm // n + 4 * max(linears), 4 * irm // n + 4 * max(linears)
        adam = 8 * irm // n
    else:
        weights, grads, adam = 4 * irm, 4 * irm, 8 * irm
    acts = tokens * activation_bytes_per_token(
        shape,
        inputs.seq,
        dtype=inputs.dtype,
        width_mult=inputs.width_mult,
        depth=inputs.depth,
        checkpoint_host=checkpoint_host,
    )
    transient = tokens * (2 * 4 * shape.d_model * inputs.n_inject + shape.d_vocab * (size + 4))
    if checkpoint_host:  # one block recomputed at a time in the backward pass
        transient += tokens * layer_bytes_per_token(shape, inputs.seq, inputs.dtype)
    return {
        "host": shape.n_params * size,
        "irm weights": weights,
        "irm gradients": grads,
        "adam": adam,
        "activations": acts,
        "outputs and logits": transient,
    }


def plan_table(
    inputs: PlanInputs, procs: int, device_gib: float | int | None = None
) -> tuple[pd.DataFrame, str]:
    """Per-rank GiB of each component under each strategy, and the recommendation."""
    rows = []
    options = [
        ("one", 1, False),
        ("ddp", procs, False),
        ("fsdp", procs, False),
        ("fsdp", procs, True),
    ]
    for mode, n, ckpt in options:
        parts = rank_bytes(inputs, mode, n, ckpt)
        label = {"one": "one process", "ddp": f"DDP x{n}", "fsdp": f"FSDP x{n}"}[mode]
        label += " + --checkpoint-host" if ckpt else ""
        row: dict[str, Any] = {"strategy": label}
        row.update({k: v / GIB for k, v in parts.items()})
        row["total"] = sum(parts.values()) / GIB
        rows.append(row)
    table = pd.DataFrame(rows)
    if device_gib is None:
        return table, "give --device-gib (memory of one GPU) for a recommendation."
    fits = table[table["total"] <= 0.9 * device_gib]  # 10 % for the allocator and CUDA context
    if fits.empty:
        return table, (
            f"nothing fits in {device_gib:g} GiB per device at batch {inputs.batch} x "
            f"{inputs.seq}: lower --batch-size (with --grad-accum to keep the rows per step), "
            "inject fewer layers, or use more processes."
        )
    best = fits.iloc[0]["strategy"]
    if best == "one process" and procs > 1 and len(fits) > 1:
        best = fits.iloc[1]["strategy"]  # as small per rank, and N times the throughput
    return table, f"{best}: {fits.set_index('strategy').loc[best, 'total']:.1f} GiB per rank."


def saved_activation_bytes(
    host: Any, irm: nn.Module, tokens: torch.Tensor, *, checkpoint_host: bool = False
) -> int:
    """What autograd keeps for one training forward (host + IRM + next-token loss), in bytes:
    the distinct storages saved for backward, parameters excluded. Measures the activation term."""
    from irm_lens.data.batches import Batch
    from irm_lens.inject import attach
    from irm_lens.training.losses import loss_sum
    from irm_lens.training.memory import checkpoint_blocks

    params = {p.untyped_storage().data_ptr() for p in [*host.parameters(), *irm.parameters()]}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    batch = Batch(tokens, torch.ones_like(tokens), torch.ones_like(tokens))
    with (
        checkpoint_blocks(host) if checkpoint_host else torch.enable_grad(),
        attach(host, irm),  # type: ignore[arg-type]
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
    ):
        loss_sum(host(tokens), batch, "next-token")
    return sum(seen.values())


def predict_bytes(
    shape: HostShape, batch: int = 8, seq: int = 128, dtype: str = "float32", rows: int = 64
) -> dict[str, int]:
    """Estimated bytes of ``irm-lens predict``: the host, one batch's backward pass through it
    (no IRM, no optimizer), its logits, and the per-row bias gradients it keeps (fp32)."""
    size, tokens = _DTYPE_BYTES[dtype], batch * seq
    return {
        "host": shape.n_params * size,
        "activations": tokens * shape.n_layers * layer_bytes_per_token(shape, seq, dtype),
        "logits": tokens * shape.d_vocab * (size + 4),
        "bias gradients": (rows + batch) * shape.n_layers * shape.d_model * 4,
    }
