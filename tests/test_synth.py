"""Synthesizing emotion rewrites: the paper's sampling, resumable output the trainer reads."""

from __future__ import annotations

import pandas as pd
import pytest

from irm_lens.cli import main
from irm_lens.data.importers import DataImportError, read_qa_csv
from irm_lens.synth import rewrite, synthesize
from irm_lens.training.train import preset, train


def _source() -> pd.DataFrame:
    questions = [f"What is item {i}?" for i in range(6)]
    return pd.DataFrame(
        {
            "question_id": [f"q{i}" for i in range(6)],
            "question": questions,
            "answer": [f"item {i}" for i in range(6)],
            "topic": "test",
        }
    )


def test_a_rewrite_samples_with_the_papers_settings(tiny_host, monkeypatch):
    seen = {}
    real = tiny_host.generate

    def spy(ids, **kwargs):
        seen.update(kwargs)
        return real(ids, **kwargs)

    monkeypatch.setattr(tiny_host, "generate", spy)
    rewrite(tiny_host, "Why?", "Because.", "anger", seed=0, max_new_tokens=3)
    paper = dict(temperature=0.9, top_p=0.7, top_k=None, repetition_penalty=1.5)
    assert {k: seen[k] for k in paper} == paper and seen["do_sample"] is True
    assert seen["max_new_tokens"] == 3


def test_resumed_synthesis_equals_straight(tiny_host, tmp_path):
    kwargs = dict(progress=False, save_every=1)
    straight = synthesize(tiny_host, _source(), "anger", tmp_path / "a.csv", limit=4, **kwargs)
    synthesize(tiny_host, _source(), "anger", tmp_path / "b.csv", limit=2, **kwargs)
    resumed = synthesize(tiny_host, _source(), "anger", tmp_path / "b.csv", limit=4, **kwargs)
    assert straight["answer"].tolist() == resumed["answer"].tolist()
    assert len(straight) == 4 and straight["reference"].tolist() == [f"item {i}" for i in range(4)]
    _, report = read_qa_csv(tmp_path / "a.csv", emotion="anger")
    assert report.rows_read == 4
    before = (tmp_path / "b.csv").read_bytes()
    with pytest.raises(DataImportError, match="'anger' voice; this run writes 'sadness'"):
        synthesize(tiny_host, _source(), "sadness", tmp_path / "b.csv", limit=6, **kwargs)
    assert (tmp_path / "b.csv").read_bytes() == before  # not relabelled


def test_trainer_reads_a_csv(tiny_host, tmp_path, capsys):
    rows = pd.DataFrame(
        {
            "question": [f"What is the {i}th thing?" for i in range(60)],
            "answer": [f"It is thing {i}, obviously!" for i in range(60)],
        }
    )
    rows.to_csv(tmp_path / "mine.csv", index=False)
    assert main(["data", "import", str(tmp_path / "mine.csv"), str(tmp_path / "ours.csv")]) == 0
    assert "read 60 rows" in capsys.readouterr().out
    cfg = preset(
        "smoke",
        host="tiny-random-llama",
        device="cpu",
        emotion="mine",
        data=str(tmp_path / "ours.csv"),
        max_steps=2,
    )
    result = train(cfg, tmp_path / "run", host=tiny_host, progress=False)
    assert result.steps == 2
