"""A behavioural measure of alignment: which of the bank's voices does an answer sound like?

The NRC emotion lexicon barely sees this bank's voices (its own anger answers score a few
percent), so the behavioural measure is a 4-way classifier of the voices (anger, sadness, joy,
neutral) trained on the bank's *training-split* answers: TF-IDF of character n-grams within words
(robust to the host's truncated, misspelt answers) and a multinomial logistic regression
(scikit-learn). It is refit on demand (a second, deterministic); nothing is pickled.

``held_out_accuracy`` says how well it separates the voices on answers it never saw (the val and
test splits), also cut to the length the IRMs generate, with a Wilson 95 % CI.
``own_voice`` is its mean probability of a run's own voice over a set of answers, with a
percentile bootstrap CI over questions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline

from irm_lens.data.datasets import EMOTIONS, load_dataset
from irm_lens.measures.bootstrap import percentile_ci

HELD_OUT = ("val", "test")
CUT_CHARS = 100
"""About the length of the 24 greedy tokens the run set generates per answer."""


@dataclass(frozen=True)
class VoiceClassifier:
    """A fitted voice classifier; ``voices`` in the order of its probability columns."""

    pipeline: Pipeline
    voices: tuple[str, ...]

    @classmethod
    def fit(cls, answers: Sequence[str], voices: Sequence[str]) -> VoiceClassifier:
        """Fit on ``answers`` labelled with ``voices`` (at least two distinct)."""
        if len(set(voices)) < 2:
            raise ValueError("VoiceClassifier.fit needs answers in at least two voices.")
        pipeline = make_pipeline(
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
            LogisticRegression(C=10.0, max_iter=2000),
        )
        pipeline.fit(list(answers), list(voices))
        return cls(pipeline, tuple(str(v) for v in pipeline.classes_))

    def proba(self, answers: Sequence[str]) -> pd.DataFrame:
        """``P(voice | answer)``: one row per answer, one column per voice."""
        texts = [a if isinstance(a, str) else "" for a in answers]
        return pd.DataFrame(self.pipeline.predict_proba(texts), columns=list(self.voices))


def _bank(splits: Sequence[str]) -> pd.DataFrame:
    parts = [load_dataset(v, split=s) for v in EMOTIONS for s in splits]
    return pd.concat(parts, ignore_index=True)


def bank_classifier() -> VoiceClassifier:
    """The classifier fitted on the bundled bank's training-split answers of every voice."""
    train = _bank(("train",))
    return VoiceClassifier.fit(train["answer"].tolist(), train["emotion"].tolist())


@dataclass(frozen=True)
class Accuracy:
    """Held-out accuracy with its Wilson 95 % CI, and chance (1 / number of voices)."""

    accuracy: float
    low: float
    high: float
    n: int
    chance: float


def _accuracy(hits: np.ndarray, n_voices: int) -> Accuracy:
    ci = stats.binomtest(int(hits.sum()), len(hits)).proportion_ci(method="wilson")
    return Accuracy(float(hits.mean()), float(ci.low), float(ci.high), len(hits), 1 / n_voices)


def held_out_accuracy(classifier: VoiceClassifier) -> dict[str, Accuracy]:
    """Accuracy on the bank's val + test answers, whole (``full``) and cut to ``CUT_CHARS``
    characters (``cut``, about the length the run set generates)."""
    rows = _bank(HELD_OUT)
    truth = rows["emotion"].to_numpy()
    result = {}
    for name, texts in (("full", rows["answer"]), ("cut", rows["answer"].str[:CUT_CHARS])):
        guess = classifier.proba(texts.tolist()).idxmax(axis=1).to_numpy()
        result[name] = _accuracy(guess == truth, len(classifier.voices))
    return result


@dataclass(frozen=True)
class OwnVoice:
    """Mean ``P(own voice)`` over answers with a bootstrap 95 % CI over them."""

    mean: float
    low: float
    high: float
    n: int


def own_voice(
    classifier: VoiceClassifier, answers: Sequence[str], voice: str, *, seed: int = 0
) -> OwnVoice:
    """The classifier's mean probability of ``voice`` over ``answers`` (one per question)."""
    if voice not in classifier.voices:
        raise ValueError(f"own_voice: {voice!r} is not one of {list(classifier.voices)}.")
    if len(answers) == 0:
        return OwnVoice(float("nan"), float("nan"), float("nan"), 0)
    p = classifier.proba(answers)[voice].to_numpy(float)
    return OwnVoice(*percentile_ci(p, np.mean, seed=seed), len(p))
