"""irm_lens: Injectable Realignment Models on TransformerLens.

Public API:
    load_host     a host model as a TransformerBridge (embedded SmolLM2, tiny random, HF id/path)
    IRM           the Injectable Realignment Model (and IRMConfig)
    attach        context manager that injects an IRM into a host through hook points
    format_prompt / encode   chat-template or plain-text prompt formatting
    load_dataset  the bundled emotion QA datasets (anger, sadness, neutral, joy)
"""

from irm_lens.data.datasets import EMOTIONS, load_dataset
from irm_lens.errors import (
    ChatFormatError,
    CheckpointError,
    HostMismatchError,
    HostNotFoundError,
    IrmLensError,
    LayerRangeError,
)
from irm_lens.host import EMBEDDED, TINY, load_host
from irm_lens.inject import Injection, attach
from irm_lens.irm import IRM, IRMConfig
from irm_lens.prompts import PAPER_PROMPTS, encode, format_prompt

__version__ = "0.1.0"

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
