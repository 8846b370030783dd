"""A generation self-check: results that depend on ``generate`` are trusted only after it passes.

A library release can break KV-cache generation through the bridge while uncached forwards stay
right (transformers 5.24 did: ``irm_lens.compat``); everything then runs and writes a wrong
report. :func:`check_generation` runs once per host object and process, before ``record``,
``evaluate``, ``generate``, data synthesis and ``make figures`` use the host's generation:

1. KV cache vs none: two prompts of different lengths are answered greedily as one left-padded
   batch with the KV cache (the way ``record`` and ``evaluate`` generate); each row must equal
   the greedy choice of one uncached forward over that row alone (prompt + answer, no padding).
   A near tie (the cached token's logit within ``tolerance`` of the best) is not a failure.
2. For the embedded SmolLM2 host, a fixed factual question must be answered correctly.

On failure it raises :class:`GenerationCheckError`, naming the installed torch, transformers
and TransformerLens versions, the locked ones, and what to run; callers check before writing.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
from transformer_lens.model_bridge import TransformerBridge

from irm_lens.data.batches import left_pad, pad_id
from irm_lens.errors import IrmLensError
from irm_lens.host import EMBEDDED, host_name
from irm_lens.prompts import PromptMode, encode
from irm_lens.stack import CORE, describe, find_lock, read_lock

QUESTION = "What is the capital of France?"
ANSWER = "Paris"
SHORT_PROMPT = "Name a colour."
NEW_TOKENS = 12

_passed: weakref.WeakSet[TransformerBridge] = weakref.WeakSet()


class GenerationCheckError(IrmLensError, RuntimeError):
    """The host's generation gives wrong tokens on this software stack."""


@dataclass(frozen=True)
class Mismatch:
    """First position where a cached greedy row and its uncached forward disagree."""

    row: int
    step: int
    cached_token: int
    uncached_token: int
    gap: float  # best logit minus the cached token's logit, in the uncached forward


def tolerance(dtype: torch.dtype) -> float:
    """Largest logit gap still read as a tie between cached and uncached arithmetic."""
    return 1e-3 if dtype in (torch.float32, torch.float64) else 5e-2


def _prompts(host: TransformerBridge) -> list[list[int]]:
    mode: PromptMode = "chat" if getattr(host.tokenizer, "chat_template", None) else "plain"
    return [encode(host.tokenizer, text, mode=mode).prompt_ids for text in (QUESTION, SHORT_PROMPT)]


def greedy_continuations(
    host: TransformerBridge,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    stop_at_eos: bool = True,
) -> torch.Tensor:
    """The new tokens of greedy answers to ``prompts`` (token ids), generated as one left-padded
    batch with the KV cache: one row per prompt. ``evaluate`` generates this way, and
    ``check_generation`` checks it (with ``stop_at_eos=False``: every row gets all its tokens).
    Call it under ``torch.no_grad()``."""
    tokens, mask = left_pad(prompts, pad_id(host.tokenizer))
    device = host.W_E.device
    out = host.generate(
        tokens.to(device),
        attention_mask=mask.to(device),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        stop_at_eos=stop_at_eos,
        use_past_kv_cache=True,
        verbose=False,
    )
    return cast(torch.Tensor, out)[:, tokens.shape[1] :]


def cached_vs_uncached(
    host: TransformerBridge, prompts: list[list[int]], new_tokens: int = NEW_TOKENS
) -> tuple[list[list[int]], list[Mismatch]]:
    """Greedy answers from one left-padded KV-cache batch, and where they leave the uncached
    greedy choice (empty: they agree). ``prompts`` should differ in length."""
    device = host.W_E.device
    with torch.no_grad():
        answers = greedy_continuations(host, prompts, new_tokens, stop_at_eos=False).tolist()
        mismatches = []
        limit = tolerance(host.W_E.dtype)
        for row, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
            full = torch.tensor([prompt + answer], device=device)
            logits = host(full, return_type="logits")[0, len(prompt) - 1 : -1].float()
            chosen = logits.gather(1, torch.tensor(answer, device=device)[:, None])[:, 0]
            best, best_token = logits.max(dim=1)
            scale = 1.0 + best.abs()
            bad = ((best - chosen) > limit * scale).nonzero()
            if len(bad):
                step = int(bad[0, 0])
                mismatches.append(
                    Mismatch(
                        row,
                        step,
                        answer[step],
                        int(best_token[step]),
                        float(best[step] - chosen[step]),
                    )
                )
    return answers, mismatches


def _failure(host: TransformerBridge, what: str) -> GenerationCheckError:
    lock = find_lock()
    if lock is not None:
        pins = read_lock(lock)
        locked = ", ".join(f"{n} {pins.get(n, '?')}" for n in CORE)
        where = f"The lock ({lock}) pins {locked}."
    else:
        where = "No requirements.lock was found beside this irm_lens (an installed package)."
    return GenerationCheckError(
        f"Generation self-check failed on host {host_name(host)!r}: {what}. Installed: "
        f"{describe()}. {where} Results built on this generation would be wrong, so nothing "
        "was written. Reinstall the tested stack from the lock with `make clean install`; to "
        "move the lock to newer releases, run `make lock`, then `make test` (see docs/install.md, "
        "compatibility notes)."
    )


def check_generation(host: TransformerBridge, *, force: bool = False) -> None:
    """Raise :class:`GenerationCheckError` unless ``host`` generates correctly (see module doc).

    Runs once per host object: later calls return at once unless ``force``. Call it before any
    hooks are attached: it judges the host's own generation.
    """
    if host in _passed and not force:
        return
    prompts = _prompts(host)
    answers, mismatches = cached_vs_uncached(host, prompts)
    if mismatches:
        m = mismatches[0]
        decode = host.tokenizer.decode
        raise _failure(
            host,
            f"KV-cache greedy generation chose {decode([m.cached_token])!r} at step {m.step} of "
            f"prompt {m.row}, an uncached forward {decode([m.uncached_token])!r} (logit gap "
            f"{m.gap:.3g}; {len(mismatches)} of {len(prompts)} prompts differ)",
        )
    if host_name(host) == EMBEDDED:
        answer = host.tokenizer.decode(answers[0], skip_special_tokens=True)
        if ANSWER.lower() not in answer.lower():
            raise _failure(host, f"asked {QUESTION!r} it answered {answer.strip()!r}")
    _passed.add(host)
