"""Choices the launcher and the command line share, in a module that imports nothing heavy (the
CLI builds its parser from them before torch is loaded)."""

PARALLEL_MODES: tuple[str, ...] = ("auto", "none", "ddp", "fsdp")

MAX_SEED = 2**32 - 1  # a seed of data order and init; every numpy and torch generator accepts it
