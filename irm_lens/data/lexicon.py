"""Emotion profile of text with the NRC Emotion Lexicon (the copy shipped by PyPI ``nrclex``).

Words are lower-cased alphabetic runs; a word missing from the lexicon is retried without a
common inflection (-s, -es, -ed, -d, -ing, -ly), so "annoyed" counts as "annoy".
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources

import pandas as pd

NRC_EMOTIONS: tuple[str, ...] = (
    "anger",
    "anticipation",
    "disgust",
    "fear",
    "joy",
    "sadness",
    "surprise",
    "trust",
    "negative",
    "positive",
)
_WORD = re.compile(r"[a-z]+")
_SUFFIXES = ("s", "es", "ed", "d", "ing", "ly")


@lru_cache(maxsize=1)
def nrc_lexicon() -> dict[str, tuple[str, ...]]:
    """word -> NRC emotions, from the lexicon file inside the ``nrclex`` package."""
    try:
        source = resources.files("nrclex.data").joinpath("nrc_en.json")
        with source.open("r", encoding="utf-8") as fh:
            raw = json.load(fh)
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise RuntimeError(
            "The NRC emotion lexicon comes from the PyPI package nrclex; install it "
            "(`make install`, or `pip install nrclex`)."
        ) from exc
    return {word: tuple(emotions) for word, emotions in raw.items()}


def lookup(word: str) -> tuple[str, ...]:
    """NRC emotions of one lower-case word (with the inflection fallback), or ()."""
    lex = nrc_lexicon()
    if word in lex:
        return lex[word]
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and word[: -len(suffix)] in lex:
            return lex[word[: -len(suffix)]]
    return ()


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def emotion_counts(text: str) -> dict[str, int]:
    """Number of words of ``text`` tagged with each NRC emotion, plus ``n_words``."""
    tokens = words(text)
    counts = dict.fromkeys(NRC_EMOTIONS, 0)
    for word in tokens:
        for emotion in lookup(word):
            counts[emotion] += 1
    counts["n_words"] = len(tokens)
    return counts


def emotion_profile(texts: Iterable[str]) -> pd.DataFrame:
    """Share of all words tagged with each NRC emotion, pooled over ``texts``.

    Returns:
        Long DataFrame with columns ``emotion, words, n_words, share``.
    """
    totals = dict.fromkeys(NRC_EMOTIONS, 0)
    n_words = 0
    for text in texts:
        counts = emotion_counts(text)
        n_words += counts.pop("n_words")
        for emotion, count in counts.items():
            totals[emotion] += count
    return pd.DataFrame(
        {
            "emotion": list(totals),
            "words": list(totals.values()),
            "n_words": n_words,
            "share": [c / n_words if n_words else 0.0 for c in totals.values()],
        }
    )
