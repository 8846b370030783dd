"""The ``irm-lens`` command line: ``main`` (info, generate, train, evaluate, sweep, data, plan)
and one module per group of verbs (``recorded``: record, analyze, ablate; ``lens``; ``profile``);
``types`` holds the argument types they share."""

from irm_lens.cli.main import main

__all__ = ["main"]
