"""Alignment evaluation of a trained IRM run: NLL, emotion profile, fact retention.

``evaluate_run(run_dir)`` writes ``evaluation.csv`` (long format: ``metric, target, condition,
value, n``) and ``generations.csv`` into the run directory:

- ``nll``: mean per-token NLL of held-out (test split) answers of every bundled emotion, given the
  question, for the host alone and with the IRM; the trained emotion should drop most.
- ``nrc_share``: share of words of greedy answers to held-out questions tagged with each NRC
  emotion (``irm_lens.data.lexicon``), host alone vs with the IRM.
- ``fact_retention``: share of those answers that contain the reference answer as whole words.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from irm_lens.canary import check_generation, greedy_continuations
from irm_lens.data.batches import Batch, collate, encode_rows, pad_id
from irm_lens.data.datasets import EMOTIONS, load_dataset
from irm_lens.data.lexicon import emotion_profile
from irm_lens.errors import IrmLensError
from irm_lens.files import write_csv_atomic
from irm_lens.host import check_context, load_host
from irm_lens.inject import FINAL_SCALE_HOOK, attach, patch
from irm_lens.irm import IRM
from irm_lens.measures.alignment import Specificity, specificity
from irm_lens.measures.bootstrap import percentile_ci
from irm_lens.prompts import PromptMode, encode
from irm_lens.rundir import RunDir
from irm_lens.training.config import TrainConfig
from irm_lens.training.runlock import run_lock

if TYPE_CHECKING:  # scikit-learn is imported only where answers are classified
    from irm_lens.measures.voice import OwnVoice, VoiceClassifier

CONDITIONS = ("host", "host+irm")


def _maybe_attached(host: TransformerBridge, irm: IRM | None) -> Any:
    return attach(host, irm) if irm is not None else contextlib.nullcontext()


def mean_nll(table: pd.DataFrame) -> float:
    """Mean per-token NLL over the rows of an ``answer_nll_table`` (answer tokens only)."""
    return float(table["nll_sum"].sum()) / max(int(table["n_tokens"].sum()), 1)


def _answer_forwards(
    host: TransformerBridge,
    rows: pd.DataFrame,
    irm: IRM | None,
    mode: PromptMode,
    batch_size: int,
    max_len: int,
    within: AbstractContextManager[Any] | None = None,
    system: str | None = None,
) -> Iterator[tuple[Batch, Tensor]]:
    """Each batch of question/answer rows and the host's logits on it (the IRM attached if
    given, inside ``within`` if given, e.g. ``SteeringVectors.applied``; ``system``: an
    instruction before each question; no gradients)."""
    tok = host.tokenizer
    examples = encode_rows(tok, rows, mode, system=system)
    pad = pad_id(tok)
    outer = contextlib.nullcontext() if within is None else within
    with torch.no_grad(), outer, _maybe_attached(host, irm):
        for i in range(0, len(examples), batch_size):
            batch = collate(examples[i : i + batch_size], pad, max_len).to(host.W_E.device)
            yield batch, host(batch.tokens, attention_mask=batch.attention_mask)


def answer_nll_table(
    host: TransformerBridge, rows: pd.DataFrame, *, offset: int = 1, **options: Any
) -> pd.DataFrame:
    """Per row: ``question_id``, ``nll_sum`` (summed NLL of the answer tokens given the
    question) and ``n_tokens`` (how many), for bootstrapping over questions. ``offset``: how
    far ahead each position predicts (1: next token; 2: the original's loss target, t+2),
    answer tokens only, padding never counted. ``options``: those of ``answer_nll_tables``
    (``irm``, ``mode``, ``batch_size``, ``max_len``, ``within``, ``system``)."""
    return answer_nll_tables(host, rows, offsets=(offset,), **options)[offset]


def answer_nll_tables(
    host: TransformerBridge,
    rows: pd.DataFrame,
    *,
    irm: IRM | None = None,
    mode: PromptMode = "chat",
    batch_size: int = 8,
    max_len: int = 128,
    offsets: Sequence[int] = (1,),
    within: AbstractContextManager[Any] | None = None,
    system: str | None = None,
) -> dict[int, pd.DataFrame]:
    """``answer_nll_table`` for each of ``offsets`` from one forward pass over ``rows``
    (``within``: a context every forward runs in, e.g. ``SteeringVectors.applied(host)``;
    ``system``: an instruction before each question, ``prompts.format_prompt``)."""
    parts: dict[int, list[tuple[list[float], list[int]]]] = {o: [] for o in offsets}
    forwards = _answer_forwards(host, rows, irm, mode, batch_size, max_len, within, system)
    for batch, logits in forwards:
        for offset in offsets:
            parts[offset].append(_answer_sums(batch, logits, offset))
    return {offset: _nll_rows(rows, part) for offset, part in parts.items()}


def _answer_sums(batch: Batch, logits: Tensor, offset: int = 1) -> tuple[list[float], list[int]]:
    """Per row of ``batch``: summed NLL of its answer tokens, each predicted from ``offset``
    positions before it, and how many there are."""
    if offset < 1:
        raise ValueError(f"offset must be >= 1 (how far ahead a position predicts), got {offset}.")
    logp = logits[:, :-offset].float().log_softmax(-1)
    nll = -logp.gather(-1, batch.tokens[:, offset:, None])[..., 0]
    mask = batch.answer_mask[:, offset:].bool()
    return (nll * mask).sum(1).tolist(), mask.sum(1).tolist()


def _nll_rows(rows: pd.DataFrame, parts: list[tuple[list[float], list[int]]]) -> pd.DataFrame:
    sums = [x for part, _ in parts for x in part]
    counts = [n for _, part in parts for n in part]
    ids = rows["question_id"].tolist()
    return pd.DataFrame({"question_id": ids, "nll_sum": sums, "n_tokens": counts})


def _const(value: Tensor) -> Callable[[Tensor, int], Tensor]:
    return lambda _x, _layer: value


def frozen_scale_nll_table(
    host: TransformerBridge,
    rows: pd.DataFrame,
    irm: IRM,
    *,
    mode: PromptMode = "chat",
    batch_size: int = 8,
    max_len: int = 128,
) -> pd.DataFrame:
    """``answer_nll_table`` with the IRM attached but the final norm's scale (its input RMS,
    a temperature on every logit) held at the value it has without the IRM: what is left of
    the IRM's effect when it cannot act through that scale (LM-head mediation)."""
    parts: list[tuple[list[float], list[int]]] = []
    seen: dict[str, Tensor] = {}

    def keep(x: Tensor, _layer: int) -> Tensor:
        seen["scale"] = x
        return x

    pad = pad_id(host.tokenizer)
    examples = encode_rows(host.tokenizer, rows, mode)
    with torch.no_grad(), warnings.catch_warnings():
        # the bridge warns that an edited scale rebuilds the norm's output: that is the point
        warnings.filterwarnings("ignore", message=".*edited hook_scale.*")
        for i in range(0, len(examples), batch_size):
            batch = collate(examples[i : i + batch_size], pad, max_len).to(host.W_E.device)
            with patch(host, [FINAL_SCALE_HOOK], keep):
                host(batch.tokens, attention_mask=batch.attention_mask)
            with attach(host, irm), patch(host, [FINAL_SCALE_HOOK], _const(seen["scale"])):
                logits = host(batch.tokens, attention_mask=batch.attention_mask)
            parts.append(_answer_sums(batch, logits))
    return _nll_rows(rows, parts)


def check_answers_fit(
    host: TransformerBridge,
    questions: Sequence[str],
    mode: PromptMode,
    max_new_tokens: int,
    system: str | None = None,
) -> list[list[int]]:
    """Refuse, before any work, answers that would run past the host's context window; the
    questions' prompt ids otherwise."""
    encoded = [encode(host.tokenizer, q, mode=mode, system=system).prompt_ids for q in questions]
    for question, ids in zip(questions, encoded, strict=True):
        check_context(host, len(ids), max_new_tokens, f"question {question[:60]!r}")
    return encoded


def greedy_answers(
    host: TransformerBridge,
    questions: Sequence[str],
    *,
    irm: IRM | None = None,
    mode: PromptMode = "chat",
    max_new_tokens: int = 40,
    batch_size: int = 16,
    intervention: Callable[[], AbstractContextManager[Any]] | None = None,
    system: str | None = None,
) -> list[str]:
    """Greedy answers to ``questions`` (left-padded batches, KV cache), decoded to text.

    ``intervention`` (a function returning a context manager, e.g. ``lambda: attach(host, irm,
    edit=...)``) replaces the plain ``irm`` attachment when given; ``system``: an instruction
    before each question (``prompts.format_prompt``).
    """
    tok = host.tokenizer
    encoded = check_answers_fit(host, questions, mode, max_new_tokens, system)
    check_generation(host)
    answers: list[str] = []
    context = intervention() if intervention is not None else _maybe_attached(host, irm)
    with torch.no_grad(), context:
        for i in range(0, len(questions), batch_size):
            new = greedy_continuations(host, encoded[i : i + batch_size], max_new_tokens)
            answers += [tok.decode(row, skip_special_tokens=True).strip() for row in new]
    return answers


def contains_fact(answer: str, reference: object) -> bool | None:
    """Whether ``reference`` occurs in ``answer`` as whole words (case-insensitive); None when
    there is no reference to look for (empty or missing): the fact is not measured, not kept."""
    if not isinstance(reference, str) or not reference.strip():
        return None
    pattern = r"(?<!\w)" + re.escape(reference.strip().lower()) + r"(?!\w)"
    return re.search(pattern, answer.lower()) is not None


def fact_retention(kept: Sequence[bool | None]) -> tuple[float, int]:
    """The share of answers that kept their fact, over those with a reference, and how many
    had one; NaN ("not measured") when none had."""
    measured = [k for k in kept if k is not None and k == k]  # None or NaN: no reference
    if not measured:
        return float("nan"), 0
    return sum(bool(k) for k in measured) / len(measured), len(measured)


def _memo(memo: dict[tuple[Any, ...], Any] | None, key: tuple[Any, ...], compute: Any) -> Any:
    if memo is None:
        return compute()
    if key not in memo:
        memo[key] = compute()
    return memo[key]


@dataclass(frozen=True)
class _Setting:
    """What every measure of one ``evaluate_run`` shares."""

    host: TransformerBridge
    irm: IRM
    config: TrainConfig
    split: str
    max_rows: int | None
    max_new_tokens: int
    memo: dict[tuple[Any, ...], Any] | None
    steps: Any  # the progress bar

    def host_memo(self, use: IRM | None) -> dict[tuple[Any, ...], Any] | None:
        """The memo for host-alone results (``use`` None); IRM results are never memoised."""
        return self.memo if use is None else None


def _nll_records(
    setting: _Setting, targets: dict[str, pd.DataFrame]
) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Answer NLL of every voice's rows, host alone and with the IRM: the mean per token (the
    evaluation table's records) and per question (``RunDir.SPECIFICITY``'s table)."""
    config, records, tables = setting.config, [], []
    for emotion, rows in targets.items():
        rows = rows if setting.max_rows is None else rows.iloc[: setting.max_rows]
        source = config.data if emotion == config.emotion else None
        for condition, use in zip(CONDITIONS, (None, setting.irm), strict=True):
            key = (
                "nll",
                emotion,
                source,
                setting.split,
                setting.max_rows,
                config.prompt_mode,
                config.max_len,
            )
            table = _memo(
                setting.host_memo(use),
                key,
                lambda use=use, rows=rows: answer_nll_table(
                    setting.host, rows, irm=use, mode=config.prompt_mode, max_len=config.max_len
                ),
            )
            nll = mean_nll(table)
            records.append(
                dict(metric="nll", target=emotion, condition=condition, value=nll, n=len(rows))
            )
            tables.append(table.assign(target=emotion, condition=condition))
            setting.steps.update(1)
    return records, pd.concat(tables, ignore_index=True)


def _generations(setting: _Setting, rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Greedy answers to the run's own questions, host alone and with the IRM."""
    config, generations = setting.config, []
    for condition, use in zip(CONDITIONS, (None, setting.irm), strict=True):
        key = (
            "greedy",
            config.emotion,
            config.data,
            setting.split,
            setting.max_rows,
            config.prompt_mode,
            setting.max_new_tokens,
        )
        texts = _memo(
            setting.host_memo(use),
            key,
            lambda use=use: greedy_answers(
                setting.host,
                rows["question"].tolist(),
                irm=use,
                mode=config.prompt_mode,
                max_new_tokens=setting.max_new_tokens,
            ),
        )
        setting.steps.update(1)
        for (qid, question, reference), text in zip(
            rows[["question_id", "question", "reference"]].itertuples(index=False),
            texts,
            strict=True,
        ):
            generations.append(
                dict(
                    question_id=qid,
                    question=question,
                    reference=reference,
                    condition=condition,
                    answer=text,
                    keeps_fact=contains_fact(text, reference),
                )
            )
    return generations


def _answer_records(generations: list[dict[str, Any]], emotion: str) -> list[dict[str, Any]]:
    """NRC emotion shares and fact retention of the greedy answers, per condition."""
    records: list[dict[str, Any]] = []
    for condition in CONDITIONS:
        texts = [g["answer"] for g in generations if g["condition"] == condition]
        profile = emotion_profile(texts)
        for target, share in zip(profile["emotion"], profile["share"], strict=True):
            records.append(
                dict(
                    metric="nrc_share",
                    target=target,
                    condition=condition,
                    value=share,
                    n=int(profile["n_words"].iloc[0]),
                )
            )
        share, n = fact_retention(
            [g["keeps_fact"] for g in generations if g["condition"] == condition]
        )
        records.append(
            dict(metric="fact_retention", target=emotion, condition=condition, value=share, n=n)
        )
    return records


def evaluate_run(
    run_dir: str | Path,
    *,
    host: TransformerBridge | None = None,
    split: str = "test",
    max_rows: int | None = None,
    max_new_tokens: int = 40,
    progress: bool = True,
    host_memo: dict[tuple[Any, ...], Any] | None = None,
) -> pd.DataFrame:
    """Evaluate the best IRM of a training run; write ``evaluation.csv`` and ``generations.csv``.

    Args:
        host_memo: a dict shared between calls on the same host: the host-alone NLLs and answers
            (which no IRM changes) are computed once per setting and reused from it.

    Returns:
        The evaluation table (long format: ``metric, target, condition, value, n``).
    """
    run_dir = Path(run_dir)
    with run_lock(run_dir, "evaluate"):
        config = TrainConfig.load(run_dir / "config.json")
        # Every bundled voice, and the run's own rows (for a custom-data run, its own split).
        targets = {emotion: load_dataset(emotion, split=split) for emotion in EMOTIONS}
        targets[config.emotion] = config.rows(split)
        if targets[config.emotion].empty:
            raise IrmLensError(
                f"{config.data}: no {split!r} rows to evaluate on (questions are split 90/5/5 "
                "by question id: add distinct questions)."
            )
        if host is None:
            host = load_host(config.host, device=config.device, dtype=config.dtype)
        irm = IRM.load(RunDir(run_dir).irm, host)
        irm.eval()
        own = targets[config.emotion]
        own = own if max_rows is None else own.iloc[:max_rows]
        check_answers_fit(host, own["question"].tolist(), config.prompt_mode, max_new_tokens)
        steps = tqdm(total=len(targets) * 2 + 2, disable=not progress, desc="evaluate")
        setting = _Setting(host, irm, config, split, max_rows, max_new_tokens, host_memo, steps)
        with steps:
            records, per_question = _nll_records(setting, targets)
            generations = _generations(setting, own)
        records += _answer_records(generations, config.emotion)
        table = pd.DataFrame(records, columns=["metric", "target", "condition", "value", "n"])
        # The files are one result: the old ones go first and evaluation.csv, written last,
        # marks the new set complete, so a kill in between never leaves a mix.
        for name in (RunDir.EVALUATION, RunDir.GENERATIONS, RunDir.SPECIFICITY):
            (run_dir / name).unlink(missing_ok=True)
        write_csv_atomic(run_dir / RunDir.GENERATIONS, pd.DataFrame(generations))
        write_csv_atomic(run_dir / RunDir.SPECIFICITY, per_question)
        write_csv_atomic(run_dir / RunDir.EVALUATION, table)
        return table


def intervention_specificity(
    host: TransformerBridge,
    config: TrainConfig,
    within: Callable[[], AbstractContextManager[Any]],
    *,
    split: str = "test",
    max_rows: int | None = None,
    host_memo: dict[tuple[Any, ...], Any] | None = None,
    system: str | None = None,
) -> Specificity:
    """The specificity to ``config.emotion`` of any intervention on ``host`` that ``within()``
    applies (a fresh context per voice, e.g. ``lambda: vectors.applied(host)`` or
    ``lambda: attach(host, irm)``), on the bundled voices' ``split`` in the run's prompt format:
    the same measure as ``run_specificity``, for what is not an IRM (exported steering
    vectors, another steering method). ``system``: an instruction before every question, in
    the intervened condition only (a prompting baseline: ``within`` may then be
    ``contextlib.nullcontext``). ``host_memo``: a dict shared between calls on the same host,
    so that the host-alone tables (no intervention changes them) are computed once per voice
    and setting."""
    targets = {emotion: load_dataset(emotion, split=split) for emotion in EMOTIONS}
    targets[config.emotion] = config.rows(split)  # a custom-data run: its own split
    parts = []
    for emotion, rows in targets.items():
        rows = rows if max_rows is None else rows.iloc[:max_rows]
        source = config.data if emotion == config.emotion else None
        key = ("question nll", emotion, source, split, max_rows, config.prompt_mode, config.max_len)
        alone = _memo(
            host_memo,
            key,
            lambda rows=rows: answer_nll_table(
                host, rows, mode=config.prompt_mode, max_len=config.max_len
            ),
        )
        steered = answer_nll_table(
            host,
            rows,
            mode=config.prompt_mode,
            max_len=config.max_len,
            within=within(),
            system=system,
        )
        for condition, table in (("host", alone), ("host+irm", steered)):
            parts.append(table.assign(target=emotion, condition=condition))
    return specificity(pd.concat(parts, ignore_index=True), config.emotion)


@dataclass(frozen=True)
class AnswerMeasures:
    """What an intervention's greedy answers to the run's questions show: the voice
    classifier's mean probability of the run's voice and the share of answers that kept their
    fact (each with a percentile bootstrap 95 % CI over questions), and the answers."""

    voice: OwnVoice
    facts: float
    facts_low: float
    facts_high: float
    facts_n: int
    answers: tuple[str, ...]

    def columns(self) -> dict[str, float]:
        """The numbers as flat columns (``voice``, ``voice_low``, ..., ``facts_n``)."""
        v = self.voice
        return {
            "voice": v.mean,
            "voice_low": v.low,
            "voice_high": v.high,
            "facts": self.facts,
            "facts_low": self.facts_low,
            "facts_high": self.facts_high,
            "facts_n": float(self.facts_n),
        }


def intervention_answers(
    host: TransformerBridge,
    config: TrainConfig,
    within: Callable[[], AbstractContextManager[Any]],
    classifier: VoiceClassifier,
    *,
    split: str = "test",
    max_rows: int | None = None,
    max_new_tokens: int = 24,
    system: str | None = None,
) -> AnswerMeasures:
    """Greedy answers to the run's ``split`` questions with the intervention ``within()``
    applies (and ``system`` before each question, if given), judged by ``classifier``
    (``measures.voice.bank_classifier``) and by fact retention: the behavioural side of
    ``intervention_specificity``, for an IRM, steering vectors or a prompt alike."""
    rows = config.rows(split)
    rows = rows if max_rows is None else rows.iloc[:max_rows]
    answers = greedy_answers(
        host,
        rows["question"].tolist(),
        mode=config.prompt_mode,
        max_new_tokens=max_new_tokens,
        intervention=within,
        system=system,
    )
    kept = [contains_fact(a, r) for a, r in zip(answers, rows["reference"], strict=True)]
    measured = np.array([float(k) for k in kept if k is not None])
    share, n = fact_retention(kept)
    low = high = float("nan")
    if n:
        _, low, high = percentile_ci(measured, np.mean)
    from irm_lens.measures.voice import own_voice

    voice = own_voice(classifier, answers, config.emotion)
    return AnswerMeasures(voice, share, low, high, n, tuple(answers))


def run_specificity(run_dir: str | Path) -> Specificity:
    """A run's specificity to its emotion, with its bootstrap 95 % CI over questions and its
    verdict (``measures.alignment.specificity``), from the per-question table ``evaluate_run``
    wrote. On the next token: for a run trained on the original's t+2 loss that is the host's
    own objective, not the run's. Raises ``IrmLensError`` when the run was not evaluated (or by
    a version that did not keep the table)."""
    run = RunDir(run_dir)
    if not run.specificity.exists() or not (run.path / RunDir.EVALUATION).exists():
        raise IrmLensError(f"{run.path}: not evaluated yet; run irm-lens evaluate {run.path}.")
    emotion = TrainConfig.load(run.config).emotion
    return specificity(pd.read_csv(run.specificity), emotion)


def _ratio(new: float, old: float) -> float:
    if old > 0:
        return new / old
    return float("inf") if new > 0 else float("nan")


def alignment_summary(table: pd.DataFrame, emotion: str) -> dict[str, float]:
    """Headline numbers of an evaluation: NLL drop and NRC share ratio for ``emotion``.

    The NRC lexicon has no ``neutral`` category: for such targets the NRC numbers are NaN.
    """
    wide = table.pivot_table(index=["metric", "target"], columns="condition", values="value")
    counts = table.pivot_table(index=["metric", "target"], columns="condition", values="n")
    nan = pd.Series({"host": float("nan"), "host+irm": float("nan")})
    nll = wide.loc[("nll", emotion)]
    nrc = wide.loc[("nrc_share", emotion)] if ("nrc_share", emotion) in wide.index else nan
    # NaN when no answer had a reference to check (pivot_table drops all-NaN rows)
    measured = ("fact_retention", emotion) in wide.index
    facts = wide.loc[("fact_retention", emotion)] if measured else nan
    facts_n = counts.loc[("fact_retention", emotion)] if measured else nan
    return {
        "nll_host": float(nll["host"]),
        "nll_irm": float(nll["host+irm"]),
        "nll_drop": float(1 - nll["host+irm"] / nll["host"]),
        "nrc_share_host": float(nrc["host"]),
        "nrc_share_irm": float(nrc["host+irm"]),
        "nrc_ratio": _ratio(float(nrc["host+irm"]), float(nrc["host"])),
        "fact_retention_host": float(facts["host"]),
        "fact_retention_irm": float(facts["host+irm"]),
        "fact_n_host": float(facts_n["host"]),  # answers with a reference: the CI's n
        "fact_n_irm": float(facts_n["host+irm"]),
    }
