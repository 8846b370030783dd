"""irm_lens: Injectable Realignment Models on TransformerLens.

Public API:
    load_host     a host model as a TransformerBridge (embedded SmolLM2, tiny random, HF id/path)
    IRM           the Injectable Realignment Model (and IRMConfig)
    attach        context manager that injects an IRM into a host through hook points
    format_prompt / encode   chat-template or plain-text prompt formatting
    load_dataset  the bundled emotion QA datasets (anger, sadness, neutral, joy)

The names load on first use (PEP 562), so ``import irm_lens`` and ``irm-lens --help`` do not pay
for torch and TransformerLens until something needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from irm_lens.errors import (
    ChatFormatError,
    CheckpointError,
    HostMismatchError,
    HostNotFoundError,
    IrmLensError,
    LayerRangeError,
)

if TYPE_CHECKING:
    from irm_lens.data.datasets import EMOTIONS, load_dataset
    from irm_lens.host import EMBEDDED, TINY, load_host
    from irm_lens.inject import Injection, attach
    from irm_lens.irm import IRM, IRMConfig
    from irm_lens.prompts import PAPER_PROMPTS, encode, format_prompt

__version__ = "0.1.0"

_LAZY = {
    "EMOTIONS": "irm_lens.data.datasets",
    "load_dataset": "irm_lens.data.datasets",
    "EMBEDDED": "irm_lens.host",
    "TINY": "irm_lens.host",
    "load_host": "irm_lens.host",
    "Injection": "irm_lens.inject",
    "attach": "irm_lens.inject",
    "IRM": "irm_lens.irm",
    "IRMConfig": "irm_lens.irm",
    "PAPER_PROMPTS": "irm_lens.prompts",
    "encode": "irm_lens.prompts",
    "format_prompt": "irm_lens.prompts",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'irm_lens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "EMBEDDED",
    "EMOTIONS",
    "IRM",
    "PAPER_PROMPTS",
    "TINY",
    "ChatFormatError",
    "CheckpointError",
    "HostMismatchError",
    "HostNotFoundError",
    "IRMConfig",
    "Injection",
    "IrmLensError",
    "LayerRangeError",
    "attach",
    "encode",
    "format_prompt",
    "load_dataset",
    "load_host",
]
