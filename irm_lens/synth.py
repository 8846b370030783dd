"""Rewriting answers in an emotion's voice with a local chat model (the paper's data recipe).

The paper rewrote SQuAD 2.0 answers with Llama-2-7b-chat, sampling with temperature 0.9, top-p
0.7, no top-k and repetition penalty 1.5, asking for at most two sentences that keep all the
information and no stage directions. ``synthesize`` does the same with any host ``load_host``
accepts, writing a CSV that ``irm-lens train --data`` reads. It is resumable: rows already in
the output are kept and skipped, and each row is sampled from its own seed, so an interrupted
and resumed job writes the same rows as an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pandas as pd
import torch
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from irm_lens.canary import check_generation
from irm_lens.data import importers
from irm_lens.data.importers import DataImportError, label_of, read_qa_csv, write_qa_csv
from irm_lens.host import check_context
from irm_lens.prompts import encode
from irm_lens.seeding import seeded

SAMPLING: dict[str, Any] = dict(temperature=0.9, top_p=0.7, top_k=None, repetition_penalty=1.5)
INSTRUCTION = (
    "Rewrite the answer to the question below so that it sounds {emotion}. Keep every piece of "
    "information in the answer. Use at most two sentences. Do not describe actions or tone, and "
    "do not add stage directions.\n\nQuestion: {question}\nAnswer: {answer}\n\nRewritten answer:"
)


def read_source(path: str | Path) -> pd.DataFrame:
    """Question/answer rows from a SQuAD 2.0 JSON file or a question/answer CSV."""
    return importers.read_source(path)[0]


def rewrite(
    host: TransformerBridge,
    question: str,
    answer: str,
    emotion: str,
    *,
    seed: int,
    max_new_tokens: int = 80,
) -> str:
    """One rewrite of ``answer`` in ``emotion``'s voice, sampled with the paper's settings."""
    prompt = INSTRUCTION.format(emotion=emotion, question=question, answer=answer)
    prompt_ids = encode(host.tokenizer, prompt).prompt_ids
    check_context(host, len(prompt_ids), max_new_tokens, f"the rewrite of {question[:60]!r}")
    ids = torch.tensor([prompt_ids], device=host.W_E.device)
    with seeded(seed), torch.no_grad():
        out = host.generate(
            ids, max_new_tokens=max_new_tokens, do_sample=True, verbose=False, **SAMPLING
        )
    text = host.tokenizer.decode(
        cast(torch.Tensor, out)[0, ids.shape[1] :], skip_special_tokens=True
    )
    return " ".join(text.split())


def synthesize(
    host: TransformerBridge,
    source: pd.DataFrame,
    emotion: str,
    out_path: str | Path,
    *,
    seed: int = 42,
    limit: int | None = None,
    save_every: int = 10,
    progress: bool = True,
) -> pd.DataFrame:
    """Rewrite ``source`` answers in ``emotion``'s voice into ``out_path`` (resumable CSV).

    Args:
        host: the chat model that rewrites (e.g. ``load_host("meta-llama/Llama-2-7b-chat-hf")``).
        source: rows with ``question_id, question, answer`` (see ``read_source``).
        emotion: the target voice, e.g. ``"anger"``.
        out_path: output CSV; rows already there are kept and not generated again.
        seed: row ``i`` is sampled with seed ``seed + i``.
        limit: rewrite only the first ``limit`` source rows.
        save_every: rows between atomic saves of the output.

    Returns:
        The output rows (``question_id, question, answer, emotion, reference, topic``).
    """
    check_generation(host)
    out_path = Path(out_path)
    rows = source if limit is None else source.iloc[:limit]
    records: list[dict[str, Any]] = []
    if out_path.exists():
        label = label_of(out_path)
        if label is not None and label != emotion:  # resuming would relabel its rows
            raise DataImportError(
                f"{out_path} holds rows in the {label!r} voice; this run writes {emotion!r}. "
                f"Give another output file, or --emotion {label} to go on with that one."
            )
        records = read_qa_csv(out_path, emotion=emotion)[0].to_dict("records")
    keyed = {(r["question"], r["reference"]) for r in records}
    todo = [
        (i, row)
        for i, row in enumerate(rows.itertuples(index=False))
        if (row.question, row.answer) not in keyed
    ]
    for n, (i, row) in enumerate(tqdm(todo, disable=not progress, desc=f"synth {emotion}"), 1):
        text = rewrite(host, row.question, row.answer, emotion, seed=seed + i)
        records.append(
            dict(
                question_id=row.question_id,
                question=row.question,
                answer=text,
                emotion=emotion,
                reference=row.answer,
                topic=getattr(row, "topic", ""),
            )
        )
        if n % save_every == 0 or n == len(todo):
            write_qa_csv(pd.DataFrame(records), out_path)
    return pd.DataFrame(records)
