"""The bundled emotion datasets: parallel, split by question, varied, fact-preserving."""

from __future__ import annotations

import re

import pytest

from irm_lens.data.datasets import EMOTIONS, assign_splits, load_dataset


@pytest.fixture(scope="module")
def frames():
    return {e: load_dataset(e) for e in EMOTIONS}


def test_shape_and_columns(frames):
    for emotion, frame in frames.items():
        assert len(frame) >= 500
        assert list(frame.columns)[:5] == ["question_id", "question", "answer", "emotion", "split"]
        assert set(frame["emotion"]) == {emotion}
        assert frame["question_id"].is_unique and frame["question"].str.lower().is_unique
        assert (frame["answer"].str.len() > 0).all()


def test_parallel_and_split_by_question(frames):
    base = frames["anger"]
    for frame in frames.values():
        assert frame["question_id"].tolist() == base["question_id"].tolist()
        assert frame["split"].tolist() == base["split"].tolist()
    counts = base["split"].value_counts()
    n = len(base)
    assert abs(counts["val"] - 0.05 * n) <= 1 and abs(counts["test"] - 0.05 * n) <= 1
    by_split = {
        s: set(base.loc[base["split"] == s, "question_id"]) for s in ("train", "val", "test")
    }
    assert not (by_split["train"] & by_split["val"] or by_split["train"] & by_split["test"])
    assert load_dataset("joy", split="val")["question_id"].tolist() == sorted(
        by_split["val"], key=base["question_id"].tolist().index
    )


def test_splits_ignore_order():
    ids = [f"q{i}" for i in range(100)]
    assert assign_splits(ids) == assign_splits(list(reversed(ids)))


def test_answers_keep_the_fact(frames):
    for frame in frames.values():
        kept = [
            ref.lower() in ans.lower()
            for ref, ans in zip(frame["reference"], frame["answer"], strict=True)
        ]
        assert all(kept)


def test_openings_are_varied(frames):
    def first4(text: str) -> str:
        return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split()[:4])

    for emotion, frame in frames.items():
        openings = frame["answer"].map(first4)
        shared = openings.duplicated(keep=False).mean()
        assert shared <= 0.05, f"{emotion}: {shared:.1%} of answers share their first four words"


def test_emotions_differ(frames):
    assert (frames["anger"]["answer"] != frames["joy"]["answer"]).all()


def test_bad_names():
    with pytest.raises(ValueError, match="bundled ones are"):
        load_dataset("fear")
    with pytest.raises(ValueError, match="split='dev'"):
        load_dataset("anger", split="dev")
