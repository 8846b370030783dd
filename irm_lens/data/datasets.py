"""Bundled emotion alignment datasets.

One bank of factual questions with short reference answers, each answer rewritten in the voice of
every emotion (``anger``, ``sadness``, ``neutral`` from the paper, and ``joy``). The emotions are
parallel (same question ids) and split 90/5/5 by question id with a fixed seed, so no question is
in two splits. See ``irm_lens/data/DATACARD.md``.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

EMOTIONS: tuple[str, ...] = ("anger", "sadness", "neutral", "joy")
SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_SEED = 42
_BANK = "emotion_qa.csv"
COLUMNS = ["question_id", "question", "answer", "emotion", "split", "reference", "topic"]


def _bank() -> pd.DataFrame:
    with resources.files("irm_lens").joinpath("data", _BANK).open("r", encoding="utf-8") as fh:
        return pd.read_csv(fh, dtype=str, keep_default_na=False)


def assign_splits(question_ids: list[str], seed: int = SPLIT_SEED) -> dict[str, str]:
    """Map each question id to ``train``/``val``/``test`` (90/5/5), reproducibly.

    The assignment depends only on the set of ids and the seed, not on their order.
    """
    ids = sorted(set(question_ids))
    order = np.random.default_rng(seed).permutation(len(ids))
    n_val = n_test = round(0.05 * len(ids))
    split_of = {}
    for rank, i in enumerate(order):
        split_of[ids[i]] = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
    return split_of


def load_dataset(name: str, split: str | None = None) -> pd.DataFrame:
    """One bundled emotion dataset as a tidy DataFrame.

    Args:
        name: ``"anger"``, ``"sadness"``, ``"neutral"`` or ``"joy"``.
        split: ``"train"``, ``"val"``, ``"test"``, or None for all rows.

    Returns:
        Columns ``question_id, question, answer, emotion, split, reference, topic``: ``answer``
        is the answer in the emotion's voice, ``reference`` the short factual answer it keeps.

    Example:
        >>> load_dataset("anger", split="val").shape[1]
        7
    """
    if name not in EMOTIONS:
        raise ValueError(f"Unknown dataset {name!r}; the bundled ones are {list(EMOTIONS)}.")
    if split is not None and split not in SPLITS:
        raise ValueError(f"split={split!r}; use one of {list(SPLITS)} or None.")
    bank = _bank()
    split_of = assign_splits(bank["question_id"].tolist())
    frame = pd.DataFrame(
        {
            "question_id": bank["question_id"],
            "question": bank["question"],
            "answer": bank[name],
            "emotion": name,
            "split": bank["question_id"].map(split_of),
            "reference": bank["answer"],
            "topic": bank["topic"],
        }
    )
    if split is not None:
        frame = frame[frame["split"] == split]
    return frame.reset_index(drop=True)[COLUMNS]
