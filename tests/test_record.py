"""Recording IRM outputs during generation, and the recording files."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from irm_lens import IRM, attach, encode
from irm_lens.cli import main
from irm_lens.errors import IrmLensError
from irm_lens.measures import dominant_indices
from irm_lens.record import (
    PAPER_SAMPLING,
    GenerationSettings,
    load_recordings,
    prompt_set,
    record,
    save_recordings,
    trim_answer,
)
from irm_lens.training.config import preset
from irm_lens.training.train import train


@pytest.fixture(scope="module")
def steer(tiny_host):
    return IRM.for_host(tiny_host, layers=(0, 2), seed=1, init="torch")


def test_record_matches_what_the_irm_wrote_during_generation(tiny_host, steer):
    prompt = "What is the capital of France?"
    settings = GenerationSettings(max_new_tokens=6)
    (rec,) = record(tiny_host, steer, [prompt], mode="chat", settings=settings, progress=False)
    n_prompt = len(encode(tiny_host.tokenizer, prompt).prompt_ids)
    assert (
        rec.n_prompt == n_prompt and rec.kinds.count("generated") == len(rec.token_ids) - n_prompt
    )
    assert rec.outputs.shape == (len(rec.token_ids), 2, tiny_host.cfg.d_model)
    assert rec.layers == (0, 2)
    # The KV-cache steps of a second generation hold the same IRM outputs, position by position.
    ids = torch.tensor([rec.token_ids[:n_prompt]])
    with torch.no_grad(), attach(tiny_host, steer, keep_history=True) as inj:
        again = tiny_host.generate(ids, max_new_tokens=6, do_sample=False, verbose=False)
    assert again[0].tolist() == rec.token_ids
    stepwise = torch.cat([h[:, 0] for h in inj.history], dim=1).transpose(0, 1)
    n = stepwise.shape[0]
    assert n == len(rec.token_ids) - 1  # generation never feeds back its last token
    torch.testing.assert_close(rec.outputs[:n], stepwise, atol=1e-5, rtol=0)


def test_sampling_is_seeded_and_hooks_are_captured(tiny_host, steer):
    settings = GenerationSettings(greedy=False, max_new_tokens=8, top_k=50, seed=3)
    kw = dict(settings=settings, hooks=["blocks.1.hook_resid_post"], progress=False)
    a = record(tiny_host, steer, ["Why?", "How?"], **kw)
    b = record(tiny_host, steer, ["Why?", "How?"], **kw)
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
    hook = a[0].hooks["blocks.1.hook_resid_post"]
    assert hook.shape == (len(a[0].token_ids), tiny_host.cfg.d_model)
    with pytest.raises(IrmLensError, match=r"prompts \[1\] are empty"):
        record(tiny_host, steer, ["Why?", "  "], progress=False)
    with pytest.raises(IrmLensError, match="Unknown hook points"):
        record(tiny_host, steer, ["Why?"], hooks=["blocks.99.nope"], progress=False)


def test_paper_settings_and_prompt_sets():
    assert (PAPER_SAMPLING.temperature, PAPER_SAMPLING.top_k, PAPER_SAMPLING.max_length) == (
        1.0,
        50,
        100,
    )
    assert len(prompt_set("paper")) == 7 and prompt_set("paper")[6] == "What color is a cazoo?"
    assert len(prompt_set("heldout", limit=3)) == 3
    with pytest.raises(ValueError, match="'paper' or 'heldout'"):
        prompt_set("mine")


def test_max_length_counts_the_prompt(tiny_host, steer):
    settings = GenerationSettings(max_new_tokens=50, max_length=12)
    (rec,) = record(
        tiny_host,
        steer,
        ["What is the capital of France?"],
        settings=settings,
        mode="plain",
        progress=False,
    )
    assert len(rec.token_ids) <= 12


def test_save_and_load_round_trip(tiny_host, steer, tmp_path):
    recs = record(
        tiny_host,
        steer,
        ["Why?", 'Say "a, b"\nok?'],
        hooks=["blocks.0.hook_resid_mid"],
        settings=GenerationSettings(max_new_tokens=3),
        progress=False,
    )
    save_recordings(recs, tmp_path / "rec", meta={"note": "test"})
    back = load_recordings(tmp_path / "rec")
    for a, b in zip(recs, back, strict=True):
        assert (a.name, a.prompt, a.layers, a.kinds, a.token_ids) == (
            b.name,
            b.prompt,
            b.layers,
            b.kinds,
            b.token_ids,
        )
        assert a.tokens == b.tokens
        assert torch.equal(a.outputs, b.outputs)
        assert torch.equal(a.hooks["blocks.0.hook_resid_mid"], b.hooks["blocks.0.hook_resid_mid"])
    with pytest.raises(IrmLensError, match="not a recording directory"):
        load_recordings(tmp_path)


def test_tokens_with_carriage_returns_and_quotes_round_trip(tiny_host, steer, tmp_path):
    # A lone "\r" token once split a tokens.csv row in two (pandas leaves it unquoted).
    rec = record(
        tiny_host, steer, ["Why?"], settings=GenerationSettings(max_new_tokens=2), progress=False
    )[0]
    awkward = ["\r", '"', ",", "", "a\r\nb", " NA", "nan"]
    n = len(rec.tokens)
    rec.tokens = (awkward * n)[:n]
    twin = dataclasses.replace(rec, outputs=rec.outputs.clone())
    save_recordings([rec, twin], tmp_path / "rec")
    back = load_recordings(tmp_path / "rec")
    assert [b.tokens for b in back] == [rec.tokens, rec.tokens]
    assert [b.kinds for b in back] == [rec.kinds, rec.kinds]


def test_record_from_the_command_line(run_dir, tmp_path, capsys):
    code = main(["record", str(tmp_path / "run"), "--max-rows", "2", "--max-new-tokens", "3"])
    assert code == 0 and "recorded 2 prompts" in capsys.readouterr().out
    recs = load_recordings(tmp_path / "run" / "recordings" / "paper")
    assert [r.prompt for r in recs] == prompt_set("paper", limit=2)
    info = json.loads((tmp_path / "run" / "recordings" / "paper" / "recording.json").read_text())
    assert info["mode"] == "chat"  # the run's own prompt format unless told otherwise


def test_record_your_own_prompts_then_its_atlas(run_dir, tmp_path, capsys):
    prompts = tmp_path / "mine.txt"
    prompts.write_text("Why is the sea salty?\nWhat is a comet?\n", encoding="utf-8")
    run = tmp_path / "run"
    argv = ["record", str(run), "--prompts", str(prompts), "--max-new-tokens", "2"]
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "recorded 2 prompts" in said and f"irm-lens atlas {run} --recording mine" in said
    recs = load_recordings(run / "recordings" / "mine")
    assert [r.prompt for r in recs] == ["Why is the sea salty?", "What is a comet?"]
    assert main(["atlas", str(run), "--recording", "mine", "--top", "8"]) == 0
    html = (run / "atlas" / "atlas.html").read_text(encoding="utf-8")
    top = int(dominant_indices(torch.cat([r.outputs for r in recs])).iloc[0]["index"])
    assert f"top index {top} highlighted" in capsys.readouterr().out
    assert "What is a comet?" in html and f"highlighted {top}" in html
    assert main(["atlas", str(run), "--recording", "absent"]) == 2  # names the record command
    assert f"irm-lens record {run} --prompts absent" in capsys.readouterr().err


def test_analyze_from_the_command_line(tiny_host, tmp_path, capsys):
    runs = []
    for emotion in ("anger", "joy"):
        cfg = preset("smoke", host="tiny-random-llama", device="cpu", max_steps=1, emotion=emotion)
        train(cfg, tmp_path / emotion, host=tiny_host, progress=False)
        assert (
            main(["record", str(tmp_path / emotion), "--max-rows", "2", "--max-new-tokens", "4"])
            == 0
        )
        runs.append(str(tmp_path / emotion))
    out = tmp_path / "analysis"
    assert (
        main(
            ["analyze", *runs, "--out", str(out), "--top", "50", "--permutations", "20", "--no-png"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "anger: top index" in printed and "joy: top index" in printed
    names = {p.name for p in (out / "anger").iterdir()}
    assert {
        "heatmap.csv",
        "heatmap.html",
        "topk_timing.csv",
        "dominant_indices.csv",
        "striation.csv",
        "sparsity.csv",
        "layer_topk.csv",
    } <= names
    assert (out / "consistency.csv").exists() and (out / "jaccard.csv").exists()
    provenance = json.loads((out / "provenance.json").read_text())
    assert set(provenance["inputs"]) == {"anger", "joy"}
    anger = provenance["inputs"]["anger"]
    assert anger["run"] == runs[0] and len(anger["irm_sha256"]) == 64
    assert anger["host"] == "tiny-random-llama" and anger["settings"]["max_new_tokens"] == 4
    assert provenance["settings"] == {"k": 50, "permutations": 20, "host_analyses": False}
    assert set(provenance["stack"]) == {"torch", "transformers", "transformer-lens"}
    import pandas as pd

    heat = pd.read_csv(out / "anger" / "heatmap.csv")
    assert len(heat) == 4 * tiny_host.cfg.d_model  # 4 injected layers x d_model
    with pytest.raises(IrmLensError):
        load_recordings(tmp_path / "nothing")


def test_analyze_refuses_a_recording_of_another_irm(tiny_host, run_dir, tmp_path):
    cfg = preset("smoke", host="tiny-random-llama", device="cpu", max_steps=1)
    assert main(["record", str(tmp_path / "run"), "--max-rows", "1", "--max-new-tokens", "2"]) == 0
    train(
        cfg.__class__(**{**cfg.__dict__, "seed": 7}),
        tmp_path / "run",
        host=tiny_host,
        progress=False,
        overwrite=True,
    )
    code = main(["analyze", str(tmp_path / "run"), "--out", str(tmp_path / "a"), "--no-png"])
    assert code == 2
    assert not (tmp_path / "a").exists()  # nothing half-written


def test_analyze_refuses_a_recording_from_another_host(run_dir, tmp_path, capsys):
    assert main(["record", str(tmp_path / "run"), "--max-rows", "1", "--max-new-tokens", "2"]) == 0
    meta_path = tmp_path / "run" / "recordings" / "paper" / "recording.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "host": "meta-llama/Llama-2-7b-chat-hf"}))
    code = main(["analyze", str(tmp_path / "run"), "--out", str(tmp_path / "a"), "--no-png"])
    assert (
        code == 2 and "recorded on host 'meta-llama/Llama-2-7b-chat-hf'" in capsys.readouterr().err
    )
    assert not (tmp_path / "a").exists()


def test_batched_greedy_answers_equal_one_prompt_at_a_time(tiny_host, steer):
    prompts = ["Why?", "What is the capital of France, and why is it there?", "Name a colour."]
    settings = GenerationSettings(max_new_tokens=9, max_length=20, batch_size=3)
    together = record(tiny_host, steer, prompts, mode="plain", settings=settings, progress=False)
    single = dataclasses.replace(settings, batch_size=1)
    alone = record(tiny_host, steer, prompts, mode="plain", settings=single, progress=False)
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]
    lengths = [len(r.token_ids) for r in together]
    assert max(lengths) <= 20 and len(set(lengths)) > 1  # each row kept its own budget
    for a, b in zip(together, alone, strict=True):
        torch.testing.assert_close(a.outputs, b.outputs, atol=1e-5, rtol=0)


def test_a_row_that_ends_early_is_cut_at_its_end_token(tiny_host, steer, monkeypatch):
    prompts = ["Why?", "Name a colour."]
    settings = GenerationSettings(max_new_tokens=8, batch_size=2)
    first = record(tiny_host, steer, prompts, mode="plain", settings=settings, progress=False)
    n_prompt = first[0].n_prompt
    stop = first[0].token_ids[n_prompt + 2]  # pretend the third answer token ends the answer
    monkeypatch.setattr(tiny_host.cfg, "eos_token_id", stop)
    cut = record(tiny_host, steer, prompts, mode="plain", settings=settings, progress=False)
    ids = torch.tensor([first[0].token_ids[:n_prompt]])
    with torch.no_grad(), attach(tiny_host, steer):
        alone = tiny_host.generate(
            ids, max_new_tokens=8, do_sample=False, verbose=False, eos_token_id=stop
        )
    assert cut[0].token_ids == alone[0].tolist()
    assert cut[0].token_ids[-1] == stop and len(cut[0].token_ids) <= n_prompt + 3
    assert cut[0].outputs.shape[0] == len(cut[0].token_ids)


def test_trim_answer_and_batch_size():
    assert trim_answer([5, 6, 7, 8], budget=3, stop=[9]) == [5, 6, 7]
    assert trim_answer([5, 9, 9, 9], budget=4, stop=[9]) == [5, 9]
    assert trim_answer([5, 6, 9], budget=2, stop=[9]) == [5, 6]
    assert trim_answer([9], budget=0, stop=[9]) == []
    assert GenerationSettings(max_new_tokens=10, max_length=12).budget(5) == 7
    assert GenerationSettings(max_new_tokens=10, max_length=4).budget(5) == 0
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        GenerationSettings(batch_size=0)
