"""Errors irm_lens raises for bad input: each says what was wrong and what to do."""

from __future__ import annotations


class IrmLensError(Exception):
    """Base class of every error irm_lens raises on purpose."""


class HostNotFoundError(IrmLensError, ValueError):
    """A host name that is neither built in, a local directory, nor loadable offline."""


class LayerRangeError(IrmLensError, ValueError):
    """An injected layer index outside the host's layers."""


class HostMismatchError(IrmLensError, ValueError):
    """An IRM used with (or loaded for) a host it was not built for."""


class CheckpointError(IrmLensError, ValueError):
    """A checkpoint file that is missing, corrupt or not an IRM checkpoint."""


class OutputPathError(IrmLensError, FileExistsError):
    """An output path that cannot be written as asked (a file where a directory goes)."""


class ChatFormatError(IrmLensError, ValueError):
    """A host tokenizer that cannot format a prompt in the requested mode."""
