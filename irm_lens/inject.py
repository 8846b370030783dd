"""Attaching an IRM to a host through TransformerLens hook points.

This module is the only place hook names are spelled.

Where to read and write on a TransformerLens 4.x ``TransformerBridge``:

- The IRM reads layer 0's residual stream right after attention (``blocks.0.hook_resid_mid``).
- It writes by adding to ``blocks.{l}.hook_attn_out``: that is exactly ``resid_mid + delta`` and
  reaches the residual stream. Writing to ``hook_resid_mid`` would NOT: on the bridge it is an
  alias of ``blocks.{l}.ln2.hook_in``, so an edit there changes only what the MLP sees.
- ``blocks.0.hook_attn_out`` fires before ``blocks.0.hook_resid_mid``, so the IRM is evaluated
  inside the block-0 ``attn_out`` hook from ``resid_pre(0) + attn_out(0)`` (stashed from
  ``blocks.0.hook_resid_pre``). At layer 0 the IRM therefore sees the un-injected value.

While attached, the IRM has hook points of its own in the host's ``hook_dict``: ``irm.hook_in``
(what it reads) and ``blocks.{l}.hook_irm_out`` (the delta it adds at layer ``l``), so
``run_with_cache`` caches them by name and an ordinary TransformerLens hook there patches or
ablates the IRM's write at one layer. Its own hooks are permanent for the ``with`` block:
``host.reset_hooks()`` inside it leaves the IRM attached (only ``attach`` removes them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from transformer_lens.ActivationCache import ActivationCache
from transformer_lens.hook_points import HookPoint, LensHandle
from transformer_lens.model_bridge import TransformerBridge
from transformer_lens.utilities import Slice, SliceInput

from irm_lens.irm import IRM
from irm_lens.types import IRMOutput, Residual

READ_HOOK = "blocks.0.hook_resid_mid"
"""The activation the IRM reads (for reading from caches; attach computes it from two hooks)."""

IRM_IN_HOOK = "irm.hook_in"
"""The IRM's own hook point on its input ``[batch, pos, d_model]`` (while attached)."""


def irm_out_hook(layer: int) -> str:
    """The IRM's own hook point on the delta it adds at ``layer`` (``[batch, pos, d_model]``)."""
    return f"blocks.{layer}.hook_irm_out"


HookFn = Callable[..., Tensor | None]


@dataclass(frozen=True)
class Edit:
    """A named edit of the IRM's output ``[inject, batch, pos, d_model]`` (what
    ``attach(..., edit=)`` applies): ``name`` is what tables and provenance files record, e.g.
    ``zero index 270``. Build one with ``zero_index``, ``keep_index``, ``set_index`` or
    ``edit_index``; a plain function of the output is accepted by ``attach`` too."""

    name: str
    index: int | None
    fn: Callable[[IRMOutput], IRMOutput] = field(repr=False, compare=False)

    def __call__(self, out: IRMOutput) -> IRMOutput:
        return self.fn(out)

    def __str__(self) -> str:
        return self.name


EditFn = Edit | Callable[[IRMOutput], IRMOutput]


def resid_pre_hook(layer: int) -> str:
    """Hook name of the residual stream entering ``layer`` (the block's input: writable)."""
    return f"blocks.{layer}.hook_resid_pre"


def resid_mid_hook(layer: int) -> str:
    """Hook name to READ the residual stream after ``layer``'s attention (not for writing)."""
    return f"blocks.{layer}.hook_resid_mid"


def resid_post_hook(layer: int) -> str:
    """Hook name of the residual stream leaving ``layer``."""
    return f"blocks.{layer}.hook_resid_post"


def mlp_post_hook(layer: int) -> str:
    """Hook name of ``layer``'s MLP neuron activations (the down-projection's input)."""
    return f"blocks.{layer}.mlp.hook_post"


def down_proj_hooks(layer: int) -> tuple[str, str]:
    """Hook names of ``layer``'s MLP down-projection input (``[pos, d_mlp]``) and output
    (``[pos, d_model]``): where a super weight turns one neuron into a massive activation."""
    return f"blocks.{layer}.mlp.out.hook_in", f"blocks.{layer}.mlp.out.hook_out"


def attn_z_hook(layer: int) -> str:
    """Hook name of ``layer``'s per-head attention results before the output projection."""
    return f"blocks.{layer}.attn.hook_z"


FINAL_SCALE_HOOK = "ln_final.hook_scale"
"""The final norm's scale, ``sqrt(mean(x^2) + eps)`` per position (writable: the norm divides by
what the hook returns)."""


def write_hook(layer: int) -> str:
    """Hook name where a delta added to the activation lands in ``layer``'s residual stream."""
    return f"blocks.{layer}.hook_attn_out"


@dataclass
class Injection:
    """A live attachment of an IRM to a host, yielded by ``attach``.

    Attributes:
        irm: the attached IRM.
        call: the module run in its place (a ``DistributedDataParallel`` wrapper of ``irm``).
        scale: multiplier on the IRM output before it is added (1.0 = as trained).
        edit: optional function applied to the (scaled) IRM output before injection, e.g. to
            ablate one residual index; it must return a tensor of the same shape.
        keep_history: when True, ``history`` collects a detached CPU copy of every forward's
            IRM output (one per prefill and per generated token under the KV cache).
        last: the IRM output of the most recent forward, as injected, with its autograd graph
            (use it for an output penalty while training).
    """

    irm: IRM
    call: torch.nn.Module | None = None
    scale: float = 1.0
    edit: EditFn | None = None
    keep_history: bool = False
    last: IRMOutput | None = None
    history: list[Tensor] = field(default_factory=list)
    points: dict[str, HookPoint] = field(default_factory=dict)
    _resid_pre: Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        names = [IRM_IN_HOOK, *(irm_out_hook(layer) for layer in self.irm.layers)]
        for name in names:
            point = HookPoint()
            point.name = name
            self.points[name] = point

    def hooks(self) -> list[tuple[str, HookFn]]:
        """The ``(hook_name, fn)`` pairs that realise this injection."""
        pairs: list[tuple[str, HookFn]] = [
            (resid_pre_hook(0), self._stash_resid_pre),
            (write_hook(0), self._run_irm),
        ]
        pairs += [(write_hook(layer), self._inject) for layer in self.irm.layers if layer != 0]
        return pairs

    def irm_output(self, resid_mid0: Residual) -> IRMOutput:
        """The IRM output as this injection adds it (scale and edit applied)."""
        param = next(self.irm.parameters())
        run = self.irm if self.call is None else self.call
        out = run(resid_mid0.to(device=param.device, dtype=param.dtype))
        if self.scale != 1.0:
            out = out * self.scale
        if self.edit is not None:
            edited = self.edit(out)
            if edited.shape != out.shape:
                raise ValueError(
                    f"edit returned shape {tuple(edited.shape)}, expected {tuple(out.shape)}."
                )
            out = edited
        return out

    def _stash_resid_pre(self, resid_pre: Tensor, hook: Any) -> None:  # noqa: ARG002 (TL passes hook=)
        self._resid_pre = resid_pre

    def _run_irm(self, attn_out: Tensor, hook: Any) -> Tensor:  # noqa: ARG002 (TL passes hook=)
        if self._resid_pre is None:
            raise RuntimeError("IRM attach: blocks.0.hook_resid_pre did not fire before attn_out.")
        out = self.irm_output(self.points[IRM_IN_HOOK](self._resid_pre + attn_out))
        self._resid_pre = None
        self.last = out
        if self.keep_history:
            self.history.append(out.detach().to("cpu", copy=True))
        return self._add(attn_out, 0)

    def _inject(self, attn_out: Tensor, hook: Any) -> Tensor:
        return self._add(attn_out, int(hook.name.split(".")[1]))

    def _add(self, attn_out: Tensor, layer: int) -> Tensor:
        if layer not in self.irm.layers:
            return attn_out
        if self.last is None:
            raise RuntimeError(f"IRM attach: layer {layer} fired before the IRM was evaluated.")
        delta = self.points[irm_out_hook(layer)](self.last[self.irm.layers.index(layer)])
        if delta.shape != attn_out.shape:
            raise RuntimeError(
                f"IRM output {tuple(delta.shape)} does not match attn_out {tuple(attn_out.shape)} "
                f"at layer {layer}."
            )
        return attn_out + delta.to(device=attn_out.device, dtype=attn_out.dtype)


@contextlib.contextmanager
def attach(
    host: TransformerBridge,
    irm: IRM,
    *,
    scale: float = 1.0,
    edit: EditFn | None = None,
    keep_history: bool = False,
    call: torch.nn.Module | None = None,
) -> Iterator[Injection]:
    """Attach ``irm`` to ``host`` for the duration of a ``with`` block.

    Inside the block every forward of the host (``host(tokens)``, ``run_with_cache``,
    ``generate`` with or without the KV cache, training with gradients) runs with the IRM's
    perturbations added after each injected layer's attention. The hooks are removed on exit,
    also when the block raises.

    Args:
        host: the host bridge.
        irm: an IRM built for this host (checked).
        scale: multiplier on the IRM output (dose-response; 0 turns the IRM off).
        edit: optional function of the IRM output ``[inject, batch, pos, d_model]``.
        keep_history: keep a CPU copy of every forward's IRM output in ``injection.history``.
        call: run this module instead of ``irm`` (a DDP wrapper of it: distributed training).

    Yields:
        The ``Injection``; ``injection.last`` holds the latest forward's IRM output.

    Example:
        >>> with attach(host, irm) as inj:  # doctest: +SKIP
        ...     logits = host(tokens)
        ...     out = inj.last  # [inject, batch, pos, d_model]
    """
    irm.check_host(host)
    injection = Injection(irm=irm, call=call, scale=scale, edit=edit, keep_history=keep_history)
    hook_dict = host.hook_dict
    taken = [name for name in injection.points if name in hook_dict]
    if taken:
        raise RuntimeError(
            f"attach: the host already has {taken}: another IRM is attached. Attach one IRM at a "
            "time (leave the other's with block first)."
        )
    registry = host._hook_registry  # TransformerLens 4.x: the hook points hook_dict lists
    added: list[tuple[HookPoint, LensHandle]] = []
    try:
        registry.update(injection.points)
        for name, fn in injection.hooks():  # permanent: host.reset_hooks() keeps them
            point = hook_dict[name]
            added.append((point, point.add_hook(fn, is_permanent=True)))
        yield injection
    finally:
        for point, handle in added:
            handle.hook.remove()
            if handle in point.fwd_hooks:
                point.fwd_hooks.remove(handle)
        for name in injection.points:
            registry.pop(name, None)
        injection._resid_pre = None


def active_hook_names(host: TransformerBridge) -> list[str]:
    """Names of hook points that currently carry forward or backward hooks."""
    names = []
    for name, point in host.hook_dict.items():
        if getattr(point, "fwd_hooks", None) or getattr(point, "bwd_hooks", None):
            names.append(name)
            continue
        if point._forward_hooks or point._backward_hooks:
            names.append(name)
    return sorted(set(names))


# ----------------------------------------------------------------------- the vocabulary of edits
#
# Two kinds of intervention, used by every analysis, lens and ablation:
# - IRM-output edits (``Edit``, passed to ``attach(..., edit=...)``): functions of the IRM's
#   output ``[inject, batch, pos, d_model]``;
# - host patches (``patch(host, points, fn)``): a scoped rewrite of host activations at hook
#   points, ``fn(activation, layer)`` receiving a copy it may change in place.


@dataclass(frozen=True)
class Patch:
    """A named rewrite of a host activation, ``fn(copy, layer)`` (what ``patch`` applies):
    ``name`` is what tables record, e.g. ``set channel 507 to 0``. Build one with ``set_at`` or
    ``add_at``; a plain function ``(activation, layer) -> activation`` is accepted too."""

    name: str
    index: int | None
    fn: Callable[[Tensor, int], Tensor] = field(repr=False, compare=False)

    def __call__(self, x: Tensor, layer: int) -> Tensor:
        return self.fn(x, layer)

    def __str__(self) -> str:
        return self.name


PatchFn = Patch | Callable[[Tensor, int], Tensor]


def decompose_resid(
    cache: ActivationCache,
    layer: int | None = None,
    *,
    mlp_input: bool = False,
    pos_slice: SliceInput = None,
    apply_ln: bool = False,
) -> tuple[Tensor, list[str]]:
    """``cache.decompose_resid`` with the IRM as a component of its own.

    The IRM adds its delta to ``blocks.{l}.hook_attn_out``, so TransformerLens's decomposition
    credits it to attention. When ``cache`` was taken with an IRM attached (its
    ``blocks.{l}.hook_irm_out`` are in the cache), each injected layer's ``{l}_attn_out`` is
    split into attention alone and ``{l}_irm_out``; the components still sum to the residual
    stream. Arguments as ``ActivationCache.decompose_resid``; returns ``(components, labels)``,
    components ``[component, *batch_and_pos, d_model]``.
    """
    where = Slice(pos_slice)
    parts, labels = cache.decompose_resid(
        layer, mlp_input=mlp_input, pos_slice=where, return_labels=True
    )
    split, names = [], []
    for part, label in zip(parts, labels, strict=True):
        number, _, kind = label.partition("_")
        delta_name = irm_out_hook(int(number)) if kind == "attn_out" else ""
        if delta_name in cache:
            delta = where.apply(cache[delta_name], dim=-2).to(part)
            split += [part - delta, delta]
            names += [label, f"{number}_irm_out"]
        else:
            split.append(part)
            names.append(label)
    stack = torch.stack(split)
    if apply_ln:
        stack = cache.apply_ln_to_stack(stack, layer, pos_slice=where, mlp_input=mlp_input)
    return stack, names


def layer_of(hook_name: str) -> int:
    """The layer a ``blocks.{layer}....`` hook name belongs to (-1 outside the blocks, e.g. the
    final norm)."""
    parts = hook_name.split(".")
    return int(parts[1]) if parts[0] == "blocks" else -1


@contextlib.contextmanager
def patch(host: TransformerBridge, points: Sequence[str], fn: PatchFn) -> Iterator[None]:
    """Within the block, each activation at ``points`` is replaced by ``fn(copy, layer)``.

    The copy is the activation cloned (so ``fn`` may write into it); ``layer`` comes from the hook
    name. Hooks are removed on exit, also when the block raises.
    """

    def hook(x: Tensor, hook: Any) -> Tensor:
        return fn(x.clone(), layer_of(hook.name))

    with host.hooks(fwd_hooks=[(name, hook) for name in points]):
        yield


def set_at(
    index: int,
    value: float | Tensor | Callable[[int], float | Tensor],
    *,
    label: str | None = None,
) -> Patch:
    """A patch setting channel ``index`` of the activation to ``value`` (or ``value(layer)``);
    ``label`` names the value in the patch's name (default: the number, or "per-layer values")."""

    def fn(x: Tensor, layer: int) -> Tensor:
        v = value(layer) if callable(value) else value
        x[..., index] = v.to(x.device, x.dtype) if isinstance(v, Tensor) else v
        return x

    shown = label or (f"{value:g}" if isinstance(value, int | float) else "per-layer values")
    return Patch(f"set channel {index} to {shown}", index, fn)


def add_at(index: int, delta: float) -> Patch:
    """A patch adding ``delta`` to channel ``index`` of the activation."""

    def fn(x: Tensor, _layer: int) -> Tensor:
        x[..., index] += delta
        return x

    return Patch(f"add {delta:g} to channel {index}", index, fn)


def edit_index(index: int, fn: Callable[[Tensor], Tensor], *, name: str | None = None) -> Edit:
    """An IRM-output edit replacing residual index ``index`` (its ``[inject, batch, pos]`` slice)
    by ``fn(slice)``; the other indices pass unchanged."""

    def edit(out: IRMOutput) -> IRMOutput:
        out = out.clone()
        out[..., index] = fn(out[..., index])
        return out

    return Edit(name or f"edit index {index}", index, edit)


def zero_index(index: int) -> Edit:
    """An ``edit`` that zeroes residual index ``index`` of the IRM output at every layer."""
    return edit_index(index, torch.zeros_like, name=f"zero index {index}")


def keep_index(index: int) -> Edit:
    """An ``edit`` keeping only residual index ``index`` of the IRM output (others zeroed)."""

    def edit(out: IRMOutput) -> IRMOutput:
        mask = torch.zeros(out.shape[-1], device=out.device, dtype=out.dtype)
        mask[index] = 1
        return out * mask

    return Edit(f"keep only index {index}", index, edit)


def set_index(index: int, values: Tensor, *, label: str = "given values") -> Edit:
    """An ``edit`` setting residual index ``index`` to ``values[slot]`` in each injected layer's
    slot (``values``: one number per injected layer); ``label`` names them (``its mean``)."""
    return edit_index(
        index,
        lambda col: values.to(col.device, col.dtype)[:, None, None].expand_as(col),
        name=f"set index {index} to {label}",
    )
