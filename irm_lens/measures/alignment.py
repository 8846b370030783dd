"""Is an IRM aligned to its emotion, specifically? Specificity with a bootstrap CI over questions.

The bundled answers are parallel: every held-out question has an answer in every voice (anger,
sadness, joy, neutral). For one IRM, the relative NLL drop of a voice's answers is
``1 - NLL(host + IRM) / NLL(host)`` over a set of questions (token-weighted means). The IRM's
*specificity* is its own voice's drop minus the mean drop of the other voices: an IRM that only
made the host likelier to say anything (or that broke it evenly) scores about 0; one that moved
the host towards its voice scores above 0. The 95 % CI resamples questions (paired: one question
brings its answers in every voice), so it says whether 12-27 questions can tell.

Verdicts (``verdict_of``): ``aligned`` when the specificity's CI lies above ``MIN_SPECIFICITY``
(the IRM favours its own voice over the others by at least that much: an effect, not just a
difference from 0) and the own-voice drop's CI lies above 0 (it made its own voice likelier at
all; an IRM that breaks the host raises every voice's NLL, its own less, and is *not* aligned).
``not aligned`` otherwise; ``not tested`` when there are too few questions to resample (fewer
than ``MIN_QUESTIONS``) or no other voice to compare with.

``MIN_SPECIFICITY`` was added after the long tier had shown an *untrained* IRM (neutral, its
step-0 snapshot on the embedded host) reading aligned at 0.7 % [0.2, 1.2]: with 27 paired
questions a random perturbation's voice preference can exclude 0. Two points (0.02) is about
three times the largest untrained value measured there; every trained next-token run measured
there lies above 0.15.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

ALIGNED, NOT_ALIGNED, NOT_TESTED = "aligned", "not aligned", "not tested"
MIN_QUESTIONS = 5
MIN_SPECIFICITY = 0.02  # the smallest specificity (CI lower bound) that counts as aligned
COLUMNS = ("question_id", "target", "condition", "nll_sum", "n_tokens")


@dataclass(frozen=True)
class Specificity:
    """One IRM's specificity to ``emotion``: the estimate and its 95 % CI, the own-voice drop's
    95 % CI, and the verdict."""

    emotion: str
    own_drop: float
    other_drop: float
    specificity: float
    low: float
    high: float
    own_low: float
    own_high: float
    n_questions: int
    verdict: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def columns(self) -> dict[str, object]:
        """The table columns a result writes for it: ``verdict``, ``specificity`` with
        ``specificity_low``/``_high``, ``own_drop`` with ``own_low``/``own_high``, and
        ``n_questions``."""
        return {
            "verdict": self.verdict,
            "specificity": self.specificity,
            "specificity_low": self.low,
            "specificity_high": self.high,
            "own_drop": self.own_drop,
            "own_low": self.own_low,
            "own_high": self.own_high,
            "n_questions": self.n_questions,
        }


def verdict_of(low: float, own_low: float) -> str:
    """``aligned`` when the specificity CI's lower bound ``low`` reaches ``MIN_SPECIFICITY`` and
    the own-voice drop's lower bound ``own_low`` is above 0; ``not tested`` when either is NaN
    (no CI could be computed); ``not aligned`` otherwise."""
    if np.isnan(low) or np.isnan(own_low):
        return NOT_TESTED
    return ALIGNED if low >= MIN_SPECIFICITY and own_low > 0 else NOT_ALIGNED


def _drops(sums: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Relative NLL drop per voice from per-question sums ``[question, voice, condition]``."""
    nll = sums.sum(0) / tokens.sum(0)  # [voice, condition]: token-weighted means
    return 1.0 - nll[:, 1] / nll[:, 0]


def specificity(
    nll: pd.DataFrame,
    emotion: str,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    host: str = "host",
    irm: str = "host+irm",
) -> Specificity:
    """Specificity of an IRM to ``emotion`` from per-question answer NLLs.

    Args:
        nll: one row per question, voice (``target``) and condition: ``question_id, target,
            condition, nll_sum, n_tokens`` (summed NLL of the answer tokens and their count).
            Only questions present for every voice and both conditions are used.
        emotion: the IRM's own voice (one of the ``target`` values).
        n_resamples, seed: the percentile bootstrap over questions.
        host, irm: the condition labels without and with the IRM.
    """
    missing = [c for c in COLUMNS if c not in nll.columns]
    if missing:
        raise ValueError(f"specificity: the NLL table lacks columns {missing}.")
    if emotion not in set(nll["target"]):
        raise ValueError(f"specificity: no answers in the IRM's voice {emotion!r}.")
    voices = [emotion, *sorted(set(nll["target"]) - {emotion})]
    cube = nll.pivot_table(
        index="question_id",
        columns=["target", "condition"],
        values=["nll_sum", "n_tokens"],
        aggfunc="sum",
    )
    wanted = [(v, c) for v in voices for c in (host, irm)]
    cube = cube.dropna()
    present = all((k, v, c) in cube.columns for k in ("nll_sum", "n_tokens") for v, c in wanted)
    n = len(cube) if present else 0
    if n == 0:
        return Specificity(emotion, *(float("nan"),) * 7, 0, NOT_TESTED)
    shape = (n, len(voices), 2)
    sums = cube["nll_sum"][wanted].to_numpy(float).reshape(shape)
    tokens = cube["n_tokens"][wanted].to_numpy(float).reshape(shape)

    def scores(idx: np.ndarray) -> np.ndarray:
        drops = _drops(sums[idx], tokens[idx])
        return np.array([drops[0] - drops[1:].mean(), drops[0]])

    nan = float("nan")
    drops = _drops(sums, tokens)
    own = float(drops[0])
    if len(voices) < 2:
        return Specificity(emotion, own, nan, nan, nan, nan, nan, nan, n, NOT_TESTED)
    others = float(drops[1:].mean())
    if n < MIN_QUESTIONS:
        return Specificity(emotion, own, others, own - others, nan, nan, nan, nan, n, NOT_TESTED)
    result = stats.bootstrap(
        (np.arange(n),),
        lambda i: scores(i.astype(int)),
        n_resamples=n_resamples,
        method="percentile",
        vectorized=False,
        random_state=np.random.default_rng(seed),
    )
    (low, own_low), (high, own_high) = result.confidence_interval
    return Specificity(
        emotion,
        own,
        others,
        own - others,
        float(low),
        float(high),
        float(own_low),
        float(own_high),
        n,
        verdict_of(low, own_low),
    )
