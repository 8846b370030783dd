"""The Injectable Realignment Model (IRM) and its checkpoints.

The IRM is the paper's position-wise MLP: ``depth`` Linear layers with ReLU between them, hidden
width ``width_mult * d_model``, and one ``d_model`` vector per injected layer out. The flat output
is read with the injected-layer axis varying fastest, exactly as the original ``view(b, s, d, L)``:
flat unit ``u`` is residual index ``u // n_inject`` of injected layer slot ``u % n_inject``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import einops
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn
from transformer_lens.model_bridge import TransformerBridge

from irm_lens.errors import CheckpointError, HostMismatchError, LayerRangeError
from irm_lens.files import save_tensors_atomic
from irm_lens.host import host_name
from irm_lens.rotate import random_rotation
from irm_lens.seeding import seeded
from irm_lens.types import IRMOutput, Residual

LAYOUT_VERSION = 1  # 1 = layer-fastest flat output, as the original view(b, s, d, L)
FLAT_TO_LAYERS = "batch pos (d_model inject) -> inject batch pos d_model"
InitScheme = Literal["paper", "torch"]
_FORMAT = "irm_lens.irm"


@dataclass(frozen=True)
class HostFingerprint:
    """What identifies a host: its name, shapes, a probe of its embedding matrix, and a hash of
    its chat template (None in checkpoints written before it was kept)."""

    name: str
    n_layers: int
    d_model: int
    d_vocab: int
    n_heads: int
    embed_probe: tuple[float, ...]
    chat_template: str | None = None

    @classmethod
    def of(cls, host: TransformerBridge) -> HostFingerprint:
        w_e = host.W_E.detach()
        rows = torch.linspace(0, w_e.shape[0] - 1, 8).long()
        probe = w_e[rows.to(w_e.device), :8].float().flatten().cpu().tolist()
        cfg = host.cfg
        template = getattr(host.tokenizer, "chat_template", None)
        digest = None if template is None else hashlib.sha256(str(template).encode()).hexdigest()
        return cls(
            host_name(host),
            cfg.n_layers,
            cfg.d_model,
            cfg.d_vocab,
            cfg.n_heads,
            tuple(probe),
            None if digest is None else digest[:16],
        )

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> HostFingerprint:
        """The inverse of ``dataclasses.asdict`` (JSON turns the probe into a list)."""
        return cls(**{**raw, "embed_probe": tuple(raw["embed_probe"])})

    def mismatch(self, other: HostFingerprint) -> str | None:
        """A sentence saying how ``other`` differs from this host, or None when it is the same."""
        shapes = ("n_layers", "d_model", "d_vocab", "n_heads")
        diffs = [
            f"{k} {getattr(self, k)} vs {getattr(other, k)}"
            for k in shapes
            if getattr(self, k) != getattr(other, k)
        ]
        if diffs:
            return ", ".join(diffs)
        a, b = torch.tensor(self.embed_probe), torch.tensor(other.embed_probe)
        # Cosine, not equality: the same host in bf16 or another quantization still matches.
        if torch.nn.functional.cosine_similarity(a, b, dim=0) < 0.99:
            return "same shapes but different embedding weights"
        if self.name != other.name:
            return f"host name {self.name!r} vs {other.name!r}"
        if None not in (self.chat_template, other.chat_template) and (
            self.chat_template != other.chat_template
        ):
            return (
                f"the same weights but another chat template ({self.chat_template} vs "
                f"{other.chat_template}): the prompts it was trained on are not the ones it "
                "would now see. Restore the template or train again"
            )
        return None


@dataclass(frozen=True)
class IRMConfig:
    """Architecture of an IRM and the host it was built for.

    Args:
        d_model: residual width of the host.
        layers: injected host layers, in output order.
        width_mult: hidden width is ``width_mult * d_model`` (the paper's "size modifier", 3).
        depth: number of Linear layers (the paper's 5).
        init: ``"paper"`` (weights N(0, 0.02^2), zero biases) or ``"torch"`` (torch defaults).
        n_host_layers: how many layers the host has (to validate ``layers``).
        host: fingerprint of the host, or None when built without one.
        masked: residual indices whose output is held at 0 in every layer (masked retraining:
            what does an IRM do without its dominant index?).
        rotated_output: seed of a fixed random orthogonal ``R_l`` per injected layer: the IRM
            writes ``R_l v_l`` instead of its output ``v_l`` (the control of the residual
            explanation: do stripes form in the residual basis whatever basis the IRM writes
            in?). ``IRM.unrotate`` gives ``v_l`` back. None: no rotation.
    """

    d_model: int
    layers: tuple[int, ...]
    width_mult: int = 3
    depth: int = 5
    init: InitScheme = "paper"
    n_host_layers: int | None = None
    host: HostFingerprint | None = None
    layout_version: int = LAYOUT_VERSION
    masked: tuple[int, ...] = ()
    rotated_output: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "masked", tuple(int(i) for i in self.masked))
        bad = [i for i in self.masked if not 0 <= i < self.d_model]
        if bad or len(set(self.masked)) != len(self.masked):
            raise ValueError(
                f"masked {list(self.masked)}: give distinct residual indices in "
                f"0..{self.d_model - 1}."
            )
        if self.d_model <= 0 or self.width_mult <= 0:
            raise ValueError(f"d_model and width_mult must be positive, got {self}.")
        if self.depth < 2:
            raise ValueError(f"depth must be at least 2 Linear layers, got depth={self.depth}.")
        _check_fits_in_memory(self)
        if self.init not in ("paper", "torch"):
            raise ValueError(f"init={self.init!r}; use 'paper' or 'torch'.")
        if not self.layers:
            raise LayerRangeError("layers is empty: inject into at least one layer.")
        if len(set(self.layers)) != len(self.layers):
            raise LayerRangeError(f"layers {list(self.layers)} contain duplicates.")
        if self.n_host_layers is not None:
            bad = [ly for ly in self.layers if not 0 <= ly < self.n_host_layers]
            if bad:
                raise LayerRangeError(
                    f"layers {bad} are out of range: this host has layers "
                    f"0..{self.n_host_layers - 1} (n_layers={self.n_host_layers})."
                )
        if self.layout_version != LAYOUT_VERSION:
            raise CheckpointError(
                f"IRM layout version {self.layout_version} is not supported by this irm_lens "
                f"(which writes version {LAYOUT_VERSION})."
            )

    @property
    def n_inject(self) -> int:
        return len(self.layers)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> IRMConfig:
        raw = json.loads(text)
        host = raw.pop("host", None)
        raw["layers"] = tuple(raw["layers"])
        raw["masked"] = tuple(raw.get("masked", ()))
        if host is not None:
            raw["host"] = HostFingerprint.from_dict(host)
        return cls(**raw)


class IRM(nn.Module):
    """Injectable Realignment Model: layer-0 residual in, one perturbation per layer out.

    ``irm(resid)`` maps ``[batch, pos, d_model]`` to ``[inject, batch, pos, d_model]`` where the
    ``inject`` axis follows ``irm.layers``. The forward is pure: nothing is kept on the module.

    Example:
        >>> irm = IRM(IRMConfig(d_model=8, layers=(0, 1)))
        >>> irm(torch.zeros(2, 3, 8)).shape
        torch.Size([2, 2, 3, 8])
    """

    def __init__(self, config: IRMConfig) -> None:
        super().__init__()
        self.config = config
        modules: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(itertools.pairwise(_widths(config))):
            modules.append(nn.Linear(d_in, d_out))
            if i < config.depth - 1:
                modules.append(nn.ReLU())
        self.net = nn.Sequential(*modules)
        keep = None
        if config.masked:
            keep = torch.ones(config.d_model)
            keep[list(config.masked)] = 0.0
        self.keep: Tensor | None
        self.register_buffer("keep", keep, persistent=False)  # not saved: rebuilt from config
        rotations = None
        if config.rotated_output is not None:
            rotations = torch.stack(
                [
                    random_rotation(config.d_model, config.rotated_output * 100_003 + slot).float()
                    for slot in range(config.n_inject)
                ]
            )
        self.rotations: Tensor | None
        self.register_buffer("rotations", rotations, persistent=False)
        if config.init == "paper":
            for module in self.net:
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, mean=0.0, std=0.02)
                    nn.init.zeros_(module.bias)

    @property
    def layers(self) -> tuple[int, ...]:
        return self.config.layers

    @property
    def n_inject(self) -> int:
        return self.config.n_inject

    @classmethod
    def for_host(
        cls,
        host: TransformerBridge,
        layers: Sequence[int] | None = None,
        width_mult: int = 3,
        seed: int = 0,
        *,
        depth: int = 5,
        init: InitScheme = "paper",
        masked: Sequence[int] = (),
        rotated_output: int | None = None,
    ) -> IRM:
        """An IRM sized for ``host`` (default: inject into every layer), on the host's device.

        Args:
            host: the host bridge.
            layers: injected layers (default all, ``0..n_layers-1``).
            width_mult: hidden width multiplier (paper: 3).
            seed: initialisation seed (the global RNG is left untouched).
            depth: number of Linear layers (paper: 5).
            init: ``"paper"`` or ``"torch"``.
            masked: residual indices held at 0 (``IRMConfig.masked``).
            rotated_output: seed of the per-layer output rotations (``IRMConfig``).
        """
        n_layers = host.cfg.n_layers
        chosen = tuple(range(n_layers)) if layers is None else tuple(int(x) for x in layers)
        config = IRMConfig(
            d_model=host.cfg.d_model,
            layers=chosen,
            width_mult=width_mult,
            depth=depth,
            init=init,
            n_host_layers=n_layers,
            host=HostFingerprint.of(host),
            masked=tuple(masked),
            rotated_output=rotated_output,
        )
        with seeded(seed):  # built on the CPU, so the same weights on every device
            irm = cls(config)
        return irm.to(host.W_E.device)

    def forward(self, resid: Residual) -> IRMOutput:
        if resid.shape[-1] != self.config.d_model:
            raise HostMismatchError(
                f"IRM expects residual width d_model={self.config.d_model} but got "
                f"{resid.shape[-1]}: it was built for another host."
            )
        flat = self.net(resid)
        out = einops.rearrange(flat, FLAT_TO_LAYERS, inject=self.n_inject)
        out = out if self.keep is None else out * self.keep
        if self.rotations is not None:  # delta_l = R_l v_l
            out = einops.einsum(self.rotations, out, "i e d, i b p d -> i b p e")
        return out

    def unrotate(self, written: Tensor) -> Tensor:
        """The IRM's own outputs ``v_l`` from what it wrote (``[..., inject, d_model]``
        recordings, ``token inject d_model``); unchanged for an IRM without ``rotated_output``."""
        if self.rotations is None:
            return written
        return einops.einsum(self.rotations.to(written.dtype), written, "i e d, ... i e -> ... i d")

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def check_host(self, host: TransformerBridge) -> None:
        """Raise ``HostMismatchError`` unless this IRM fits ``host``."""
        cfg = self.config
        theirs = HostFingerprint.of(host)
        if cfg.host is not None:
            diff = cfg.host.mismatch(theirs)
            if diff:
                raise HostMismatchError(
                    f"This IRM was trained for host {cfg.host.name!r} but is being used with "
                    f"{theirs.name!r} ({diff}). Load the host it was trained for, or build a new "
                    "IRM with IRM.for_host(host)."
                )
        if cfg.d_model != theirs.d_model:
            raise HostMismatchError(
                f"IRM d_model={cfg.d_model} does not match host {theirs.name!r} "
                f"d_model={theirs.d_model}."
            )
        bad = [ly for ly in cfg.layers if not 0 <= ly < theirs.n_layers]
        if bad:
            raise LayerRangeError(
                f"IRM injects into layers {bad}, but host {theirs.name!r} has layers "
                f"0..{theirs.n_layers - 1}."
            )

    def save(self, path: str | Path, state: dict[str, Tensor] | None = None) -> Path:
        """Write weights and config (JSON in the header) to one safetensors file, atomically.

        ``state``: the weights to write instead of ``self.state_dict()`` (the gathered full
        weights of an IRM sharded with FSDP).
        """
        path = Path(path)
        weights = self.state_dict() if state is None else state
        tensors = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
        meta = {"format": _FORMAT, "irm_config": self.config.to_json()}
        save_tensors_atomic(tensors, path, meta)
        return path

    @classmethod
    def load(
        cls,
        path: str | Path,
        host: TransformerBridge | None = None,
        *,
        device: str | torch.device | None = None,
        allow_unverified_host: bool = False,
    ) -> IRM:
        """Load an IRM checkpoint written by ``save``; with ``host``, refuse a mismatched host.

        Every field of the saved host fingerprint is compared (name, shapes, embedding probe).
        A checkpoint without a fingerprint is refused with ``host`` given, unless
        ``allow_unverified_host`` says you know it fits. The IRM lands on ``device``, else on
        the host's device, else on the CPU.
        """
        path = Path(path)
        config = read_config(path)
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path}: cannot read tensors ({exc}).") from exc
        irm = cls(config)
        try:
            irm.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(
                f"{path}: tensors do not match the IRM config in its header ({exc})."
            ) from exc
        if host is not None:
            if config.host is None and not allow_unverified_host:
                raise HostMismatchError(
                    f"{path} carries no host fingerprint, so irm_lens cannot tell which host it "
                    "was trained for. If you know it fits this host, load it with "
                    "IRM.load(path, host, allow_unverified_host=True)."
                )
            irm.check_host(host)
        target = device if device is not None else (host.W_E.device if host is not None else "cpu")
        return irm.to(target)


def read_config(path: str | Path) -> IRMConfig:
    """The ``IRMConfig`` stored in a checkpoint's header, without loading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such IRM checkpoint file.")
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if not 0 < n < 100_000_000:
                raise ValueError("bad header length")
            header = json.loads(fh.read(n))
        meta: dict[str, Any] = header.get("__metadata__") or {}
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({exc}); it may be truncated or corrupt. "
            "Re-save it or point to another checkpoint."
        ) from exc
    if meta.get("format") != _FORMAT or "irm_config" not in meta:
        raise CheckpointError(f"{path}: a safetensors file, but not an irm_lens IRM checkpoint.")
    try:
        return IRMConfig.from_json(meta["irm_config"])
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the IRM config in its header is invalid ({exc}).") from exc


def _widths(config: IRMConfig) -> list[int]:
    """The widths of the IRM's Linear layers, input first: d_model, hidden x (depth - 1), one
    d_model vector per injected layer."""
    hidden = config.width_mult * config.d_model
    return [config.d_model] + [hidden] * (config.depth - 1) + [config.d_model * config.n_inject]


def parameter_count(config: IRMConfig) -> int:
    """How many parameters ``IRM(config)`` holds (weights and biases of its Linear layers)."""
    return sum((a + 1) * b for a, b in itertools.pairwise(_widths(config)))


def _check_fits_in_memory(config: IRMConfig) -> None:
    """Refuse, before anything is allocated, an IRM whose float32 weights alone exceed this
    machine's memory (a typo in --width-mult or --depth should not exhaust it)."""
    need = parameter_count(config) * 4
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on this platform: nothing to compare
        return
    if need > have:
        raise ValueError(
            f"width_mult={config.width_mult}, depth={config.depth}: the IRM would hold "
            f"{parameter_count(config):,} parameters ({need / 2**30:,.0f} GiB in float32), more "
            f"than this machine's {have / 2**30:.0f} GiB of memory. Lower --width-mult or "
            "--depth (the paper's IRM: width_mult 3, depth 5)."
        )


def layer_sets(n_layers: int) -> dict[str, tuple[int, ...]]:
    """The paper's injected layer sets scaled to ``n_layers``: quarters, every 4th, all.

    For Llama-2-7B (32 layers): q1 = 0-7, q2 = 8-15, q3 = 16-23, q4 = 24-31,
    every4 = 3, 7, ..., 31, all = 0-31.
    """
    size = math.ceil(n_layers / 4)
    sets = {f"q{i + 1}": tuple(range(i * size, min((i + 1) * size, n_layers))) for i in range(4)}
    sets["every4"] = tuple(range(3, n_layers, 4)) or (n_layers - 1,)
    sets["all"] = tuple(range(n_layers))
    return sets


def _spans(values: Sequence[int]) -> str:
    """``[4, 5, 6, 9]`` as ``4..6, 9``: a long list of layers read at a glance."""
    runs: list[list[int]] = []
    for v in sorted(set(values)):
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in runs)


def parse_layers(spec: str | Sequence[int] | None, n_layers: int) -> tuple[int, ...]:
    """Injected layers from a spec: None/"all", "every4", "q1".."q4", "0-7", "3,7,11", "0-3,8".

    Raises:
        LayerRangeError: a layer outside ``0..n_layers-1`` (the message gives the range).
    """
    if spec is None:
        return tuple(range(n_layers))
    if not isinstance(spec, str):
        chosen = tuple(int(x) for x in spec)
    else:
        named = layer_sets(n_layers)
        text = spec.strip().lower()
        if text in named:
            return named[text]
        spans: list[tuple[int, int]] = []
        try:
            for part in text.split(","):
                lo, _, hi = part.strip().partition("-")
                spans.append((int(lo), int(hi) if hi else int(lo)))
        except ValueError as exc:
            raise LayerRangeError(
                f"layers={spec!r} is not a layer spec; use 'all', 'every4', 'q1'..'q4', a range "
                "like '0-7', or a list like '3,7,11'."
            ) from exc
        # bounded before anything is expanded: "0-2000000000" names its excess, allocates nothing
        outside = [
            (a, b)
            for first, last in spans
            for a, b in ((first, min(last, -1)), (max(first, n_layers), last))
            if a <= b
        ]
        if outside:
            excess = ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in outside)
            raise LayerRangeError(
                f"layers {excess} are out of range: this host has layers 0..{n_layers - 1}."
            )
        chosen = tuple(x for first, last in spans for x in range(first, last + 1))
    bad = [x for x in chosen if not 0 <= x < n_layers]
    if bad:
        raise LayerRangeError(
            f"layers {_spans(bad)} are out of range: this host has layers 0..{n_layers - 1}."
        )
    if not chosen:
        raise LayerRangeError(f"layers={spec!r} selects no layer.")
    return chosen
