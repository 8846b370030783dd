"""Choices the launcher and the command line share, in a module that imports nothing heavy (the
CLI builds its parser from them before torch is loaded)."""

PARALLEL_MODES: tuple[str, ...] = ("auto", "none", "ddp", "fsdp")
