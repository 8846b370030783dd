"""The configuration of a training run: one frozen dataclass, saved as ``config.json``."""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from irm_lens.data.datasets import EMOTIONS, load_dataset
from irm_lens.errors import IrmLensError
from irm_lens.prompts import PromptMode
from irm_lens.training.modes import (
    MAX_SEED,
    PADDING_RULES,
    PAPER_OFFSETS,
    PRESET_NAMES,
    InitKind,
    LossKind,
    OptimizerKind,
    PaddingRule,
)

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from irm_lens.irm import IRM


@dataclass(frozen=True)
class Objective:
    """What a run is trained to predict: ``next-token`` (each answer token from the one before
    it), or the original's ``paper`` loss, every position predicting the token ``offset`` ahead
    (2 as it ran: its dataset and its model each shifted the labels once) with the padding
    positions ``counted`` (as it ran: rows EOS-padded to 128 tokens) or ``masked`` (only real
    tokens as targets). The two quirks of the original, separated."""

    kind: LossKind = "next-token"
    offset: int = 2
    padding: PaddingRule = "counted"

    def __post_init__(self) -> None:
        if self.offset not in PAPER_OFFSETS:
            raise ValueError(f"offset={self.offset}; the paper loss predicts 1 or 2 tokens ahead.")
        if self.padding not in PADDING_RULES:
            raise ValueError(f"padding={self.padding!r}; use 'counted' or 'masked'.")


class RunDirError(IrmLensError, FileExistsError):
    """A run directory that cannot be used as asked (exists, or has no run to resume)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (saved as ``config.json``).

    Args:
        emotion: bundled dataset to align to (``anger``, ``sadness``, ``neutral``, ``joy``), or
            the label of the rows in ``data``.
        data_sha256: the SHA-256 of ``data`` when the run started (``pin_data`` fills it in):
            rows read for the run later are refused if the file changed, since its 90/5/5
            split would move trained-on questions into the held-out ones.
        data: a question/answer CSV to train on instead of a bundled dataset (see
            ``irm_lens.data.importers.read_qa_csv``; split by question id).
        host: host name for ``load_host`` (None = embedded SmolLM2-135M-Instruct).
        layers: injected layers, as ``parse_layers`` reads them ("all", "0-7", "every4", "3,7").
        width_mult, depth, init: IRM architecture (paper: 3, 5, "paper").
        masked: residual indices the IRM's output is held at 0 in (masked retraining).
        rotated_output: seed of a fixed random rotation per layer applied to the IRM's output
            before it is injected (``IRMConfig.rotated_output``; the residual-explanation
            control); None = off.
        snapshots: optimizer steps after which the IRM is also saved, as
            ``snapshots/step-<N>.safetensors`` (0: the initial IRM); a training trajectory.
        loss: "next-token" (answer tokens only, padding ignored, one shift) or "paper" (the
            original code: every position of EOS-padded ``max_len`` rows, position t predicts t+2).
        prompt_mode: "chat" (host chat template) or "plain" (the original "question answer" text).
        l1_alpha: L1 penalty weight on IRM outputs: ``alpha / n_inject * sum|output|`` (0 = off).
        lr, gamma: learning rate; StepLR decay per epoch.
        optimizer: "adam" (the original's; per-coordinate steps) or "sgd" (SGD with momentum
            0.9: rotation-equivariant, the control for Adam's per-coordinate updates; it needs
            a far larger ``lr``).
        batch_size, grad_accum: rows per forward; forwards per optimizer step.
        max_len: tokens per row (longer rows are truncated).
        epochs, max_steps: stop after this many epochs or optimizer steps (None = no cap).
        eval_every: optimizer steps between validation passes (and checkpoints).
        patience: stop after this many validation passes without improvement.
        max_train_rows, max_val_rows: use only the first rows of each split (None = all).
        seed: IRM initialisation and data order.
        device, dtype: where the host runs (the IRM trains in fp32).
    """

    emotion: str = "anger"
    data: str | None = None
    data_sha256: str | None = None
    host: str | None = None
    layers: str = "all"
    width_mult: int = 3
    depth: int = 5
    init: InitKind = "paper"
    masked: tuple[int, ...] = ()
    snapshots: tuple[int, ...] = ()
    rotated_output: int | None = None
    loss: LossKind = "next-token"
    paper_offset: int = 2
    paper_padding: PaddingRule = "counted"
    prompt_mode: PromptMode = "chat"
    l1_alpha: float = 0.0
    lr: float = 1e-4
    gamma: float = 0.85
    optimizer: OptimizerKind = "adam"
    batch_size: int = 8
    grad_accum: int = 1
    max_len: int = 128
    epochs: int = 15
    max_steps: int | None = None
    eval_every: int = 50
    patience: int = 6
    max_train_rows: int | None = None
    max_val_rows: int | None = None
    seed: int = 42
    device: str | None = None
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if any(not isinstance(i, int) or i < 0 for i in self.masked):
            raise ValueError(f"masked {list(self.masked)}: give residual indices (ints >= 0).")
        if any(not isinstance(i, int) or i < 0 for i in self.snapshots):
            raise ValueError(f"snapshots {list(self.snapshots)}: give optimizer steps (ints >= 0).")
        if self.loss not in ("next-token", "paper"):
            raise ValueError(f"loss={self.loss!r}; use 'next-token' or 'paper'.")
        if self.loss != "paper" and (self.paper_offset, self.paper_padding) != (2, "counted"):
            raise ValueError("paper_offset and paper_padding apply to loss='paper' only.")
        self.objective  # noqa: B018  (checks paper_offset and paper_padding)
        if self.prompt_mode not in ("chat", "plain"):
            raise ValueError(f"prompt_mode={self.prompt_mode!r}; use 'chat' or 'plain'.")
        positive = (
            "batch_size",
            "grad_accum",
            "max_len",
            "epochs",
            "eval_every",
            "patience",
            "width_mult",
            "depth",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        for name in ("max_steps", "max_train_rows", "max_val_rows"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (or unset), got {value}.")
        if not (isinstance(self.seed, int) and 0 <= self.seed <= MAX_SEED):
            raise ValueError(f"seed must be a whole number from 0 to {MAX_SEED}, got {self.seed}.")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}.")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}.")
        if not (math.isfinite(self.l1_alpha) and self.l1_alpha >= 0):
            raise ValueError(f"l1_alpha must be a finite number >= 0, got {self.l1_alpha}.")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer={self.optimizer!r}; use 'adam' or 'sgd'.")
        if self.init not in ("paper", "torch"):
            raise ValueError(f"init={self.init!r}; use 'paper' or 'torch'.")
        if self.max_len < 3:
            raise ValueError("max_len must be at least 3 tokens.")

    @property
    def objective(self) -> Objective:
        """What the run is trained to predict (``losses.Objective``)."""
        return Objective(self.loss, self.paper_offset, self.paper_padding)

    def rows(self, split: str | None = None) -> pd.DataFrame:
        """The question/answer rows of this run (one ``split``, or all): the bundled dataset
        ``emotion``, or the rows of ``data`` split 90/5/5 by question id (refused when the file
        is not the one the run was pinned to)."""
        if self.data is None:
            if self.emotion not in EMOTIONS:  # a label of custom rows (train(data=...)) is free
                raise ValueError(
                    f"emotion={self.emotion!r} is not a bundled dataset; the bundled ones are "
                    f"{list(EMOTIONS)} (or pass data=PATH to a question/answer CSV, or rows "
                    "to train(..., data=...))."
                )
            return load_dataset(self.emotion, split=split)
        from irm_lens.data.importers import read_qa_csv
        from irm_lens.files import sha256_file

        if self.data_sha256 is not None and sha256_file(self.data) != self.data_sha256:
            raise RunDirError(
                f"{self.data} changed since the run was trained on it (SHA-256 "
                f"{self.data_sha256[:12]}..., now {sha256_file(self.data)[:12]}...): its split "
                "would move trained-on questions into the held-out ones. Restore the file (the "
                f"run keeps the rows it trained on as {RUN_DATA} in its directory) or train a "
                "new run on the new file."
            )

        frame = read_qa_csv(self.data, emotion=self.emotion)[0]
        return frame if split is None else frame[frame["split"] == split]

    def untrained_irm(self, host: TransformerBridge) -> IRM:
        """The untrained IRM this config describes for ``host`` (layers, width, depth, init,
        seed, masked indices, output rotation)."""
        from irm_lens.irm import IRM, parse_layers

        return IRM.for_host(
            host,
            parse_layers(self.layers, host.cfg.n_layers),
            self.width_mult,
            self.seed,
            depth=self.depth,
            init=self.init,
            masked=self.masked,
            rotated_output=self.rotated_output,
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str, source: str = "config.json") -> TrainConfig:
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict):
                raise TypeError(f"expected a JSON object, got {type(raw).__name__}")
            _check_field_types(raw)
            for key in ("masked", "snapshots"):
                if isinstance(raw.get(key), list):
                    raw[key] = tuple(raw[key])
            return cls(**raw)
        except RecursionError:
            raise RunDirError(
                f"{source}: not a valid irm_lens training config (nested deeper than a JSON "
                "reader can follow). Restore the file, or train the run again with --overwrite."
            ) from None
        except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
            raise RunDirError(
                f"{source}: not a valid irm_lens training config ({exc}). Restore the file, or "
                "train the run again with --overwrite."
            ) from exc

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a run's ``config.json``; every failure names the file and what to do."""
        path = Path(path)
        try:
            text = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise RunDirError(
                f"{path} does not exist: {path.parent} holds no training run. Train one with "
                f"`irm-lens train {path.parent}`."
            ) from None
        except UnicodeDecodeError as exc:
            raise RunDirError(
                f"{path}: not a valid irm_lens training config (not UTF-8 text: {exc.reason} at "
                f"byte {exc.start}). Restore the file, or train the run again with --overwrite."
            ) from None
        return cls.from_json(text, str(path))


PRESETS: dict[str, dict[str, Any]] = {
    # About 65 s of training per run on 2 CPU cores with the embedded host (14 steps of 8 rows),
    # so `make figures` trains its 12 runs in about 15 minutes: measurably aligned, not converged.
    "quick": dict(
        lr=1e-3,
        batch_size=8,
        max_len=96,
        epochs=1,
        max_steps=14,
        eval_every=7,
        max_val_rows=16,
        patience=6,
    ),
    # The original code's schedule (16 rows per step: 8 per GPU on 2 GPUs).
    "paper": dict(lr=1e-4, batch_size=8, grad_accum=2, max_len=128, epochs=15, eval_every=100),
    # Seconds, for the tiny host in tests and smoke runs.
    "smoke": dict(
        lr=1e-3,
        batch_size=4,
        max_len=48,
        epochs=1,
        max_steps=4,
        eval_every=2,
        max_train_rows=16,
        max_val_rows=8,
        patience=6,
    ),
}


# The original code's loss as it ran: plain "question answer" text after BOS, rows EOS-padded to
# 128 tokens, every position predicting the token two ahead, lr 1e-4, 16 rows per optimizer step
# (8 per GPU on 2 GPUs), StepLR per epoch. Applied over a preset's step budget.
# ``epochs`` is the original's 15 so that a preset's ``max_steps`` (not one short epoch of its
# larger batches) sets the budget.
FAITHFUL_PAPER_LOSS: dict[str, Any] = dict(
    loss="paper",
    prompt_mode="plain",
    lr=1e-4,
    batch_size=8,
    grad_accum=2,
    max_len=128,
    epochs=15,
)


def _accepts(value: Any, hint: Any) -> bool:
    """Whether a JSON ``value`` is of the type ``hint`` (an int is no bool, a float may be an
    int, a tuple is a JSON list)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return value in args
    if origin in (types.UnionType, typing.Union):
        return any(_accepts(value, arm) for arm in args)
    if origin is tuple:
        return isinstance(value, list | tuple) and all(_accepts(v, args[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    """A type in words, for the message that refuses a value."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return f"one of {list(args)}"
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(arm) for arm in args)
    if origin is tuple:
        return f"a list of {_describe(args[0]).removeprefix('a ')}s"
    names = {int: "a whole number", float: "a number", str: "text", type(None): "null"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _check_field_types(raw: dict[str, Any]) -> None:
    """Refuse a field whose JSON value has the wrong type, naming the field and the value; a
    whole number where a number is wanted becomes a float (JSON writes 1.0 as 1 by hand)."""
    hints = typing.get_type_hints(TrainConfig)
    for key, value in raw.items():
        if key in hints and not _accepts(value, hints[key]):
            raise TypeError(f"field {key} is {value!r}; it must be {_describe(hints[key])}")
        if hints.get(key) is float:
            raw[key] = float(value)


RUN_DATA = "data.csv"
"""The copy of its ``--data`` file a run keeps (``irm_lens.rundir.RunDir.DATA``)."""


def pin_data(config: TrainConfig) -> TrainConfig:
    """``config`` with ``data_sha256`` filled in from its data file (unchanged when it has no
    file or is already pinned)."""
    if config.data is None or config.data_sha256 is not None:
        return config
    from irm_lens.files import sha256_file

    try:
        digest = sha256_file(config.data)
    except OSError as exc:
        raise RunDirError(f"--data {config.data}: cannot read it ({exc.strerror or exc}).") from exc
    return dataclasses.replace(config, data_sha256=digest)


if tuple(PRESETS) != PRESET_NAMES:  # the CLI offers PRESET_NAMES before this module is imported
    raise AssertionError(f"PRESETS {list(PRESETS)} and modes.PRESET_NAMES {PRESET_NAMES} differ")


def preset(name: str, **overrides: Any) -> TrainConfig:
    """A ``TrainConfig`` from a named preset (``quick``, ``paper``, ``smoke``) plus overrides."""
    if name not in PRESETS:
        raise ValueError(f"preset={name!r}; use one of {list(PRESETS)}.")
    return TrainConfig(**{**PRESETS[name], **overrides})
