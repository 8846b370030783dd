"""Ablating one residual index (the paper's "neuron 1512") and scaling the IRM's output.

Conditions, each compared with the IRM as trained (``irm``):

- ``host``: no IRM at all.
- ``irm_zero`` / ``irm_mean``: index ``i`` of the IRM output set to 0 / to its mean (per
  injected layer, over the evaluation tokens) at every injected layer.
- ``resid_zero`` / ``resid_mean``: index ``i`` of the residual stream itself set to 0 / to its
  mean (per layer) at the input of every block, with the IRM attached.
- ``scale_<alpha>``: the IRM output multiplied by alpha (the dose-response; alpha 1 is ``irm``).

Effects: NLL of the target emotion's answers, mean KL(irm || condition) of the next-token
distributions over the answer tokens, and the NRC emotion share and fact retention of greedy
answers.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from irm_lens.data.batches import Batch, collate, encode_rows, pad_id
from irm_lens.data.lexicon import emotion_profile
from irm_lens.evaluate import check_answers_fit, contains_fact, fact_retention, greedy_answers
from irm_lens.inject import attach, patch, resid_pre_hook, set_at, set_index, zero_index
from irm_lens.irm import IRM
from irm_lens.prompts import PromptMode

Intervention = Callable[[], AbstractContextManager[Any]]
DEFAULT_ALPHAS = (0.0, 0.5, 1.0, 1.5, 2.0)


def _resid_set(
    host: TransformerBridge, index: int, values: Tensor, label: str = "given values"
) -> AbstractContextManager[None]:
    """Residual index ``index`` entering every layer set to ``values[layer]``."""
    points = [resid_pre_hook(layer) for layer in range(host.cfg.n_layers)]
    return patch(host, points, set_at(index, lambda layer: values[layer], label=label))


def describe(condition: str, index: int) -> str:
    """What a condition of ``conditions`` does, in words (the ``intervention`` column)."""
    if condition.startswith("scale_"):
        return f"IRM output x{condition.split('_', 1)[1]}"
    return {
        "host": "host alone, no IRM",
        "irm": "IRM as trained",
        "irm_zero": f"IRM with output index {index} set to 0",
        "irm_mean": f"IRM with output index {index} set to its mean",
        "resid_zero": f"IRM, residual index {index} set to 0 entering every layer",
        "resid_mean": f"IRM, residual index {index} set to its mean entering every layer",
    }[condition]


def _batches(host: TransformerBridge, rows: pd.DataFrame, mode: PromptMode) -> list[Batch]:
    tok = host.tokenizer
    pad = pad_id(tok)
    examples = encode_rows(tok, rows, mode)
    return [collate(examples[i : i + 8], pad, 128) for i in range(0, len(examples), 8)]


def index_means(
    host: TransformerBridge, irm: IRM, rows: pd.DataFrame, index: int, mode: PromptMode = "chat"
) -> tuple[Tensor, Tensor]:
    """Means of index ``index`` over the rows' real tokens: per injected layer of the IRM output,
    and per layer of the residual stream entering each block (with the IRM attached)."""
    names = [resid_pre_hook(layer) for layer in range(host.cfg.n_layers)]
    irm_sum = torch.zeros(irm.n_inject, dtype=torch.float64)
    resid_sum = torch.zeros(host.cfg.n_layers, dtype=torch.float64)
    count = 0
    for batch in _batches(host, rows, mode):
        b = batch.to(host.W_E.device)
        real = b.attention_mask.bool()
        with torch.no_grad(), attach(host, irm) as inj:
            _, cache = host.run_with_cache(
                b.tokens, attention_mask=b.attention_mask, names_filter=names
            )
            assert inj.last is not None
            irm_sum += inj.last[:, real][..., index].double().sum(-1).cpu()
        for layer, name in enumerate(names):
            resid_sum[layer] += cache[name][real][..., index].double().sum().cpu()
        count += int(real.sum())
    return (irm_sum / count).float(), (resid_sum / count).float()


def conditions(
    host: TransformerBridge,
    irm: IRM,
    index: int,
    *,
    irm_means: Tensor,
    resid_means: Tensor,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
) -> dict[str, Intervention]:
    """The interventions of the ablation study, by name (see the module docstring)."""
    zeros_irm, zeros_resid = torch.zeros_like(irm_means), torch.zeros_like(resid_means)

    @contextlib.contextmanager
    def resid(values: Tensor, label: str) -> Iterator[None]:
        # The setter goes first, so the IRM (which stashes resid_pre(0)) reads the ablated
        # stream, consistent with the attn_out(0) it sees.
        with _resid_set(host, index, values, label), attach(host, irm):
            yield

    found: dict[str, Intervention] = {
        "host": contextlib.nullcontext,
        "irm": lambda: attach(host, irm),
        "irm_zero": lambda: attach(host, irm, edit=set_index(index, zeros_irm, label="0")),
        "irm_mean": lambda: attach(host, irm, edit=set_index(index, irm_means, label="its mean")),
        "resid_zero": lambda: resid(zeros_resid, "0"),
        "resid_mean": lambda: resid(resid_means, "its mean"),
    }
    for alpha in alphas:
        if alpha != 1.0:
            found[f"scale_{alpha:g}"] = functools.partial(attach, host, irm, scale=float(alpha))
    return found


def ablation_study(
    host: TransformerBridge,
    irm: IRM,
    rows: pd.DataFrame,
    index: int,
    *,
    emotion: str,
    mode: PromptMode = "chat",
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    max_new_tokens: int = 30,
    generate: bool = True,
    progress: bool = True,
    answers: list[dict[str, Any]] | None = None,
) -> pd.DataFrame:
    """Effects of ablating residual index ``index`` and of scaling the IRM, on ``rows``.

    Args:
        rows: held-out rows (``question``, ``answer`` in the target voice, ``reference``).
        emotion: the NRC emotion to report (the IRM's target, e.g. ``"anger"``).
        answers: a list that receives each greedy answer as ``{condition, intervention,
            question, answer}`` (with ``generate``).

    Returns:
        One row per condition: ``condition, alpha, nll, kl_to_irm, nrc_share, fact_retention,
        index`` (``alpha`` is the IRM output scale, NaN for ``host``).
    """
    if not 0 <= index < host.cfg.d_model:
        raise ValueError(
            f"index {index} is out of range: residual indices are 0..{host.cfg.d_model - 1}."
        )
    if rows.empty:
        raise ValueError("ablation_study needs at least one row.")
    if generate:  # every limit before any work
        check_answers_fit(host, rows["question"].tolist(), mode, max_new_tokens)
    irm_means, resid_means = index_means(host, irm, rows, index, mode)
    interventions = conditions(
        host, irm, index, irm_means=irm_means, resid_means=resid_means, alphas=alphas
    )
    batches = [b.to(host.W_E.device) for b in _batches(host, rows, mode)]
    # float64 log-probabilities: in float32 the KL of two near-equal distributions can come out
    # slightly negative (rounding of sum p (log p - log q)).
    with torch.no_grad(), attach(host, irm):
        reference = [
            host(b.tokens, attention_mask=b.attention_mask).double().log_softmax(-1)
            for b in batches
        ]
    records = []
    for name, intervention in tqdm(interventions.items(), disable=not progress, desc="ablation"):
        nll_sum, kl_sum, count = 0.0, 0.0, 0
        with torch.no_grad(), intervention():
            for b, ref in zip(batches, reference, strict=True):
                logp = host(b.tokens, attention_mask=b.attention_mask).double().log_softmax(-1)
                mask = b.answer_mask[:, 1:].bool()
                targets = b.tokens[:, 1:][mask]
                pred, ref_pred = logp[:, :-1][mask], ref[:, :-1][mask]
                nll_sum += float(-pred.gather(-1, targets[:, None]).sum())
                kl_sum += float((ref_pred.exp() * (ref_pred - pred)).sum())
                count += int(mask.sum())
        record: dict[str, Any] = {
            "condition": name,
            "intervention": describe(name, index),
            "alpha": {"host": float("nan"), "irm": 1.0}.get(name, 1.0),
            "nll": nll_sum / count,
            "kl_to_irm": kl_sum / count,
            "index": index,
        }
        if name.startswith("scale_"):
            record["alpha"] = float(name.split("_", 1)[1])
        if generate:
            texts = greedy_answers(
                host,
                rows["question"].tolist(),
                mode=mode,
                max_new_tokens=max_new_tokens,
                intervention=intervention,
            )
            if answers is not None:
                answers += [
                    {
                        "condition": name,
                        "intervention": record["intervention"],
                        "question": q,
                        "answer": a,
                    }
                    for q, a in zip(rows["question"], texts, strict=True)
                ]
            profile = emotion_profile(texts).set_index("emotion")
            # NaN for a voice the NRC lexicon has no category for (neutral, a custom label).
            record["nrc_share"] = float(profile["share"].get(emotion, float("nan")))
            kept = [contains_fact(t, r) for t, r in zip(texts, rows["reference"], strict=True)]
            record["fact_retention"] = fact_retention(kept)[0]  # NaN: no references
        records.append(record)
    return pd.DataFrame(records)


def own_index_ablation(
    host: TransformerBridge,
    irm: IRM,
    rows: pd.DataFrame,
    index: int,
    controls: Sequence[int],
    *,
    mode: PromptMode = "chat",
) -> pd.DataFrame:
    """An IRM's own top ``index`` zeroed in its output, against ``controls`` zeroed the same way
    (e.g. indices of the next largest outputs: matched magnitude).

    Returns:
        One row per condition: ``condition`` (``host``, ``irm``, ``top`` or ``control``),
        ``index``, ``nll`` (answer tokens of ``rows``) and ``undone``: the share of the IRM's NLL
        gain that zeroing the index takes away (0 = none, 1 = all of it).
    """
    batches = [b.to(host.W_E.device) for b in _batches(host, rows, mode)]

    def nll(intervention: Intervention) -> float:
        total, count = 0.0, 0
        with torch.no_grad(), intervention():
            for b in batches:
                logp = host(b.tokens, attention_mask=b.attention_mask).double().log_softmax(-1)
                mask = b.answer_mask[:, 1:].bool()
                total += float(-logp[:, :-1][mask].gather(-1, b.tokens[:, 1:][mask][:, None]).sum())
                count += int(mask.sum())
        return total / count

    base, trained = nll(contextlib.nullcontext), nll(lambda: attach(host, irm))
    gain = base - trained
    records: list[dict[str, Any]] = [
        {"condition": "host", "index": -1, "nll": base, "undone": 1.0},
        {"condition": "irm", "index": -1, "nll": trained, "undone": 0.0},
    ]
    for kind, i in [("top", index)] + [("control", int(c)) for c in controls]:
        value = nll(functools.partial(attach, host, irm, edit=zero_index(i)))
        undone = (value - trained) / gain if gain else float("nan")
        records.append({"condition": kind, "index": i, "nll": value, "undone": undone})
    return pd.DataFrame(records)
