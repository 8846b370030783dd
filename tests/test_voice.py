"""The voice classifier: above chance on held-out answers (with a CI), probabilities that track
the voice of an answer, and clear errors."""

from __future__ import annotations

import pytest

from irm_lens.data.datasets import EMOTIONS, load_dataset
from irm_lens.measures import voice


@pytest.fixture(scope="module")
def classifier():
    return voice.bank_classifier()


def test_held_out_accuracy_is_above_chance_with_its_ci(classifier):
    accuracy = voice.held_out_accuracy(classifier)
    for name in ("full", "cut"):
        a = accuracy[name]
        assert a.n == 4 * 54 and a.chance == pytest.approx(1 / len(EMOTIONS))
        assert a.low <= a.accuracy <= a.high
        assert a.low > a.chance, name  # the whole CI above chance


def test_own_voice_tracks_the_voice_of_the_answers(classifier):
    anger = load_dataset("anger", split="test")["answer"].str[: voice.CUT_CHARS].tolist()
    own = voice.own_voice(classifier, anger, "anger")
    other = voice.own_voice(classifier, anger, "joy")
    assert own.n == len(anger) and own.low <= own.mean <= own.high
    assert own.low > other.high  # anger answers read as anger, not as joy
    empty = voice.own_voice(classifier, [], "anger")
    assert empty.n == 0 and empty.mean != empty.mean


def test_unknown_voice_and_one_voice_are_refused(classifier):
    with pytest.raises(ValueError, match="not one of"):
        voice.own_voice(classifier, ["hello"], "fear")
    with pytest.raises(ValueError, match="at least two voices"):
        voice.VoiceClassifier.fit(["a", "b"], ["anger", "anger"])
