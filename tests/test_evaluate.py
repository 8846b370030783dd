"""Evaluation: NRC lexicon counts by hand, fact matching, batched greedy answers, run evaluation."""

from __future__ import annotations

import dataclasses
import functools
import math

import pandas as pd
import pytest
import torch

from irm_lens import IRM, encode
from irm_lens.data.lexicon import emotion_counts, emotion_profile, lookup
from irm_lens.evaluate import (
    alignment_summary,
    answer_nll_table,
    contains_fact,
    evaluate_run,
    greedy_answers,
    mean_nll,
)


def test_lexicon_counts_by_hand():
    # "furious": anger, disgust, negative; "annoyed" -> "annoy": anger, disgust, negative;
    # "love": joy, positive; "the", "cat" untagged.
    counts = emotion_counts("The cat is FURIOUS, annoyed... love!")
    assert counts["n_words"] == 6
    assert counts["anger"] == 2 and counts["disgust"] == 2 and counts["joy"] == 1
    assert lookup("annoyed") == lookup("annoy") and lookup("zzzz") == ()
    profile = emotion_profile(["furious cat", "happy day today now"]).set_index("emotion")
    assert profile.loc["anger", "share"] == pytest.approx(1 / 6)
    assert profile.loc["anger", "n_words"] == 6


def test_no_reference_means_not_measured_never_kept():
    from irm_lens.evaluate import fact_retention

    for missing in ("", "  ", None, float("nan")):
        assert contains_fact("The European continent is shaped like a boot", missing) is None
    share, n = fact_retention([None, None])
    assert share != share and n == 0  # NaN: not measured
    assert fact_retention([True, None, False]) == (0.5, 2)


def test_contains_fact_matches_whole_words():
    assert contains_fact("It is Canberra, obviously.", "canberra")
    assert contains_fact("There are four of them", "four")
    assert not contains_fact("There are fourteen of them", "four")
    assert contains_fact("Bogotá is high up", "Bogotá")


def test_batched_greedy_answers_match_one_by_one(tiny_host):
    irm = IRM.for_host(tiny_host, seed=1, init="torch")
    questions = ["What is the capital of France?", "Why?", "How many apples can fit in a basket?"]
    batched = greedy_answers(tiny_host, questions, irm=irm, max_new_tokens=6, batch_size=3)
    for question, answer in zip(questions, batched, strict=True):
        ids = torch.tensor([encode(tiny_host.tokenizer, question).prompt_ids])
        with torch.no_grad():
            from irm_lens import attach

            with attach(tiny_host, irm):
                out = tiny_host.generate(ids, max_new_tokens=6, do_sample=False, verbose=False)
        alone = tiny_host.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        assert answer == alone.strip()


def test_evaluate_run_writes_tables(tiny_host, run_dir, tmp_path):
    table = evaluate_run(
        tmp_path / "run", host=tiny_host, max_rows=3, max_new_tokens=4, progress=False
    )
    assert set(table["metric"]) == {"nll", "nrc_share", "fact_retention"}
    assert set(table.loc[table.metric == "nll", "target"]) == {"anger", "sadness", "neutral", "joy"}
    assert set(table["condition"]) == {"host", "host+irm"}
    saved = pd.read_csv(tmp_path / "run" / "evaluation.csv")
    assert len(saved) == len(table)
    generations = pd.read_csv(tmp_path / "run" / "generations.csv")
    assert len(generations) == 6 and set(generations["condition"]) == {"host", "host+irm"}
    summary = alignment_summary(table, "anger")
    assert summary["nll_host"] > 0 and 0 <= summary["fact_retention_irm"] <= 1


def test_host_memo_reuses_host_alone_results(tiny_host, run_dir, tmp_path, monkeypatch):
    from irm_lens import evaluate

    evaluated = functools.partial(
        evaluate_run, tmp_path / "run", host=tiny_host, max_rows=2, max_new_tokens=3, progress=False
    )
    plain = evaluated()
    memo: dict = {}
    first = evaluated(host_memo=memo)
    pd.testing.assert_frame_equal(first, plain)
    assert len(memo) == 5  # 4 emotions' host NLL + the host's greedy answers
    calls = {"nll": 0, "greedy": 0}
    real_nll, real_greedy = evaluate.answer_nll_table, evaluate.greedy_answers

    def count(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(evaluate, "answer_nll_table", count("nll", real_nll))
    monkeypatch.setattr(evaluate, "greedy_answers", count("greedy", real_greedy))
    again = evaluated(host_memo=memo)
    pd.testing.assert_frame_equal(again, plain)
    assert calls == {"nll": 4, "greedy": 1}  # only the IRM condition is recomputed


def test_alignment_summary_without_an_nrc_category():
    table = pd.DataFrame(
        [
            ("nll", "neutral", "host", 2.0, 4),
            ("nll", "neutral", "host+irm", 1.5, 4),
            ("fact_retention", "neutral", "host", 0.5, 4),
            ("fact_retention", "neutral", "host+irm", 0.25, 4),
            ("nrc_share", "anger", "host", 0.1, 10),
            ("nrc_share", "anger", "host+irm", 0.2, 10),
        ],
        columns=["metric", "target", "condition", "value", "n"],
    )
    summary = alignment_summary(table, "neutral")
    assert summary["nll_drop"] == pytest.approx(0.25)
    assert summary["nrc_ratio"] != summary["nrc_ratio"]  # NaN: NRC has no neutral category
    assert summary["fact_retention_irm"] == 0.25


def test_per_question_nll_adds_up_to_the_mean(tiny_host):
    import contextlib

    from irm_lens import attach
    from irm_lens.data.batches import collate, encode_rows, pad_id
    from irm_lens.data.datasets import load_dataset
    from irm_lens.training.losses import next_token_loss

    rows = load_dataset("anger", split="test").head(10)
    irm = IRM.for_host(tiny_host, seed=1, init="torch")
    for use in (None, irm):
        table = answer_nll_table(tiny_host, rows, irm=use, max_len=64)
        assert table["question_id"].tolist() == rows["question_id"].tolist()
        # a row whose answer the 64-token cut removes counts no tokens (and adds nothing)
        assert (table["n_tokens"] >= 0).all() and table["n_tokens"].sum() > 100
        assert (table.loc[table["n_tokens"] == 0, "nll_sum"] == 0).all()
        # the training loss over the same rows, computed in one batch, is the same mean
        batch = collate(
            encode_rows(tiny_host.tokenizer, rows, "chat"), pad_id(tiny_host.tokenizer), 64
        )
        with torch.no_grad(), attach(tiny_host, use) if use else contextlib.nullcontext():
            logits = tiny_host(batch.tokens, attention_mask=batch.attention_mask)
        expected = float(next_token_loss(logits, batch.tokens, batch.answer_mask))
        assert mean_nll(table) == pytest.approx(expected, rel=1e-5)
    # one question alone gives the same numbers as inside a batch (padding does not leak)
    alone = answer_nll_table(tiny_host, rows.iloc[4:5], max_len=64)
    batched = answer_nll_table(tiny_host, rows, max_len=64)
    assert alone["n_tokens"].iloc[0] == batched["n_tokens"].iloc[4] > 0
    assert alone["nll_sum"].iloc[0] == pytest.approx(batched["nll_sum"].iloc[4], rel=1e-4)


def test_the_originals_target_scores_answer_tokens_two_ahead_without_padding(tiny_host):
    """``offset=2`` (the original's loss judged by its own objective): each answer token is
    predicted from two positions before it, padding never counts, one row equals its batch."""
    from irm_lens.data.batches import collate, encode_rows, pad_id
    from irm_lens.data.datasets import load_dataset

    rows = load_dataset("anger", split="test").head(4)
    t2 = answer_nll_table(tiny_host, rows, mode="plain", max_len=64, offset=2)
    t1 = answer_nll_table(tiny_host, rows, mode="plain", max_len=64, offset=1)
    assert (t2["n_tokens"] == t1["n_tokens"]).all()  # the same answer tokens, another target
    assert not t2["nll_sum"].equals(t1["nll_sum"])
    # by hand on the first row alone, no padding in its batch
    example = encode_rows(tiny_host.tokenizer, rows.iloc[:1], "plain")
    batch = collate(example, pad_id(tiny_host.tokenizer), 64)
    with torch.no_grad():
        logp = tiny_host(batch.tokens, attention_mask=batch.attention_mask).log_softmax(-1)[0]
    answer = [p for p in range(2, batch.tokens.shape[1]) if batch.answer_mask[0, p]]
    by_hand = -sum(float(logp[p - 2, batch.tokens[0, p]]) for p in answer)
    assert t2["n_tokens"].iloc[0] == len(answer)
    assert t2["nll_sum"].iloc[0] == pytest.approx(by_hand, rel=1e-4)
    with pytest.raises(ValueError, match="offset must be >= 1"):
        answer_nll_table(tiny_host, rows, offset=0)


def test_selection_questions_are_the_validation_rows_the_trainer_reads():
    from analyses._measured import HELDOUT_SPLITS, heldout, selection_questions
    from irm_lens.data.datasets import load_dataset
    from irm_lens.training.config import preset

    config = preset("quick", emotion="anger")
    chosen = selection_questions(config)
    val = load_dataset("anger", split="val")
    assert len(chosen) == config.max_val_rows == 16
    assert set(chosen) == set(val["question_id"].iloc[:16])
    assert set(chosen) <= set(heldout("anger")["question_id"])  # why the check exists
    assert "val" in HELDOUT_SPLITS
    everything = selection_questions(dataclasses.replace(config, max_val_rows=None))
    assert set(everything) == set(val["question_id"])


def test_a_prompt_and_steering_vectors_are_measured_like_an_irm(tiny_host):
    import contextlib

    from irm_lens.evaluate import intervention_answers, intervention_specificity
    from irm_lens.measures.voice import bank_classifier
    from irm_lens.training.config import preset

    config = preset("smoke", host="tiny-random-llama", emotion="anger", max_len=96)
    nothing = intervention_specificity(tiny_host, config, contextlib.nullcontext, max_rows=4)
    assert nothing.specificity == 0 and nothing.own_drop == 0  # no intervention: no change
    prompted = intervention_specificity(
        tiny_host, config, contextlib.nullcontext, max_rows=4, system="Answer in an angry voice."
    )
    assert math.isfinite(prompted.specificity) and prompted.specificity != 0
    classifier = bank_classifier()
    alone = intervention_answers(
        tiny_host, config, contextlib.nullcontext, classifier, max_rows=5, max_new_tokens=4
    )
    rows = config.rows("test").iloc[:5]
    assert len(alone.answers) == 5 and alone.voice.n == 5
    assert 0 <= alone.voice.low <= alone.voice.mean <= alone.voice.high <= 1
    kept = [contains_fact(a, r) for a, r in zip(alone.answers, rows["reference"], strict=True)]
    assert alone.facts_n == sum(k is not None for k in kept)
    same = greedy_answers(tiny_host, rows["question"].tolist(), max_new_tokens=4)
    assert list(alone.answers) == same  # the plain greedy answers, judged
    instructed = intervention_answers(
        tiny_host,
        config,
        contextlib.nullcontext,
        classifier,
        max_rows=5,
        max_new_tokens=4,
        system="Answer in an angry voice.",
    )
    assert instructed.answers != alone.answers  # the instruction reached the prompt
    assert set(alone.columns()) == {
        "voice",
        "voice_low",
        "voice_high",
        "facts",
        "facts_low",
        "facts_high",
        "facts_n",
    }
