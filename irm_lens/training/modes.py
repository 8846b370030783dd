"""Choices the launcher, the configuration and the command line share, in a module that imports
nothing heavy (the CLI builds its parser from them before torch is loaded). Each ``Literal`` is
the type ``TrainConfig`` declares; the tuple beside it is what the CLI offers."""

from typing import Literal, get_args

PARALLEL_MODES: tuple[str, ...] = ("auto", "none", "ddp", "fsdp")

MAX_SEED = 2**32 - 1  # a seed of data order and init; every numpy and torch generator accepts it

PresetName = Literal["quick", "paper", "smoke"]
PRESET_NAMES: tuple[str, ...] = get_args(PresetName)

LossKind = Literal["next-token", "paper"]
LOSS_KINDS: tuple[str, ...] = get_args(LossKind)

PaddingRule = Literal["counted", "masked"]
PADDING_RULES: tuple[str, ...] = get_args(PaddingRule)

PAPER_OFFSETS = (1, 2)  # the paper loss predicts the token this many positions ahead

OptimizerKind = Literal["adam", "sgd"]
OPTIMIZERS: tuple[str, ...] = get_args(OptimizerKind)

InitKind = Literal["paper", "torch"]
INITS: tuple[str, ...] = get_args(InitKind)
