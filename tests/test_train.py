"""Training: losses by hand, a frozen host, run directories, and bit-identical resume."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import signal

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from irm_lens.data.batches import collate
from irm_lens.prompts import Encoded
from irm_lens.training.config import RunDirError, TrainConfig, preset
from irm_lens.training.losses import next_token_loss, paper_loss
from irm_lens.training.runs import extension_problem, run_status
from irm_lens.training.train import train


def test_collate_masks_and_padding():
    examples = [Encoded([1, 2], [3, 4]), Encoded([5], [6, 7, 8, 9])]
    batch = collate(examples, pad_id=0, max_len=4)
    assert batch.tokens.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]  # second row truncated
    assert batch.answer_mask.tolist() == [[0, 0, 1, 1], [0, 1, 1, 1]]
    padded = collate(examples[:1], pad_id=0, max_len=6, pad_to_max=True)
    assert padded.tokens.tolist() == [[1, 2, 3, 4, 0, 0]]
    assert padded.attention_mask.tolist() == [[1, 1, 1, 1, 0, 0]]


def test_next_token_loss_by_hand():
    # vocab 3; logits chosen so each probability is easy to write down
    logits = torch.log(
        torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [1 / 3, 1 / 3, 1 / 3]]])
    )
    tokens = torch.tensor([[0, 1, 2, 0]])
    answer = torch.tensor([[0, 0, 1, 1]])  # targets: token 2 (from pos 1), token 0 (from pos 2)
    expected = -(math.log(0.1) + math.log(0.2)) / 2
    assert next_token_loss(logits, tokens, answer).item() == pytest.approx(expected, rel=1e-6)


def test_paper_loss_predicts_two_ahead_and_counts_padding():
    logits = torch.log(torch.tensor([[[0.5, 0.5], [0.9, 0.1], [0.3, 0.7], [0.6, 0.4]]]))
    tokens = torch.tensor([[0, 1, 1, 0]])  # pos 0 -> token[2]=1, pos 1 -> token[3]=0
    expected = -(math.log(0.5) + math.log(0.9)) / 2
    assert paper_loss(logits, tokens).item() == pytest.approx(expected, rel=1e-6)


def test_the_originals_two_quirks_separate_offset_and_padding():
    from irm_lens.data.batches import Batch
    from irm_lens.training.config import Objective
    from irm_lens.training.losses import batch_loss, loss_sum, loss_terms

    probs = torch.tensor([[[0.5, 0.5], [0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]]])
    logits = torch.log(probs)
    tokens = torch.tensor([[0, 1, 1, 0, 0]])
    real = torch.tensor([[1, 1, 1, 0, 0]])  # the last two positions are padding
    batch = Batch(tokens=tokens, attention_mask=real, answer_mask=torch.zeros_like(real))
    nll = -probs.log()[0]
    # as it ran (t+2, padding counted): the same as the original's loss
    original = Objective("paper")
    assert loss_terms(batch, original) == 3
    assert batch_loss(logits, batch, original).item() == pytest.approx(
        paper_loss(logits, tokens).item(), rel=1e-6
    )
    # t+2, padding masked: only pos 0 -> token[2] (a real token) counts
    t2_masked = Objective("paper", 2, "masked")
    assert loss_terms(batch, t2_masked) == 1
    assert loss_sum(logits, batch, t2_masked).item() == pytest.approx(float(nll[0, 1]), rel=1e-6)
    # t+1, padding counted: every position predicts the next token
    t1 = Objective("paper", 1, "counted")
    expected = float(nll[0, 1] + nll[1, 1] + nll[2, 0] + nll[3, 0]) / 4
    assert batch_loss(logits, batch, t1).item() == pytest.approx(expected, rel=1e-6)
    # t+1, padding masked: targets at positions 1 and 2 only
    t1_masked = Objective("paper", 1, "masked")
    assert loss_terms(batch, t1_masked) == 2
    expected = float(nll[0, 1] + nll[1, 1]) / 2
    assert batch_loss(logits, batch, t1_masked).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="offset=3"):
        Objective("paper", 3)
    with pytest.raises(ValueError, match="apply to loss='paper' only"):
        TrainConfig(paper_padding="masked")
    assert TrainConfig(loss="paper", paper_offset=1).objective == Objective("paper", 1)


def test_config_validation_and_presets():
    with pytest.raises(ValueError, match="emotion='fear'"):
        TrainConfig(emotion="fear").rows("train")  # a free label only for custom rows
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        TrainConfig(batch_size=0)
    assert preset("quick").max_steps == 14
    with pytest.raises(ValueError, match="preset='fast'"):
        preset("fast")
    cfg = preset("smoke", host="tiny-random-llama")
    assert TrainConfig.from_json(cfg.to_json()) == cfg


def _pirate_rows(n: int = 60) -> list[tuple[str, str]]:
    return [(f"What is fact number {i}?", f"Arr, fact {i} be true, matey.") for i in range(n)]


def test_train_from_python_rows_keeps_and_pins_them(tiny_host, tmp_path):
    run = tmp_path / "pirate"
    config = _smoke(emotion="pirate", max_steps=2)
    result = train(config, run, host=tiny_host, progress=False, data=_pirate_rows())
    assert result.steps == 2
    saved = TrainConfig.load(run / "config.json")
    assert saved.data == str((run / "data.csv").resolve()) and saved.emotion == "pirate"
    assert len(saved.rows()) == 60 and set(saved.rows()["emotion"]) == {"pirate"}
    frame = pd.DataFrame(_pirate_rows(), columns=["question", "answer"])
    again = train(config, run, resume=True, host=tiny_host, progress=False, data=frame)
    assert again.steps == 2  # the same rows as a DataFrame: the same run, finished
    with pytest.raises(RunDirError, match="data_sha256"):  # other rows: another run
        train(config, run, resume=True, host=tiny_host, progress=False, data=_pirate_rows(50))
    with pytest.raises(ValueError, match=r"rows \[1\] have an empty answer"):
        train(config, tmp_path / "bad", host=tiny_host, data=[("Q?", "A."), ("Q2?", " ")])
    assert not (tmp_path / "bad").exists()


def test_a_data_file_changed_after_training_is_refused_not_resplit(tiny_host, tmp_path):
    csv = tmp_path / "mine.csv"
    pd.DataFrame(_pirate_rows(), columns=["question", "answer"]).to_csv(csv, index=False)
    run = tmp_path / "run"
    train(_smoke(emotion="pirate", data=str(csv), max_steps=2), run, host=tiny_host, progress=False)
    saved = TrainConfig.load(run / "config.json")
    assert saved.data_sha256 is not None and (run / "data.csv").read_bytes() == csv.read_bytes()
    assert len(saved.rows("test")) > 0
    with csv.open("a", encoding="utf-8") as fh:  # rows appended after training
        fh.write("What is new?,Arr.\n")
    with pytest.raises(RunDirError, match="changed since the run was trained"):
        saved.rows("test")
    restored = dataclasses.replace(saved, data=str(run / "data.csv"))
    assert len(restored.rows("test")) > 0  # the run's own copy still reads


@pytest.mark.parametrize(
    "field, value, says",
    [
        ("batch_size", 2.5, "a whole number"),
        ("batch_size", True, "a whole number"),
        ("max_steps", 4.5, "a whole number or null"),
        ("layers", 3, "text"),
        ("seed", "1", "a whole number"),
        ("masked", [1.5], "a list of whole numbers"),
        ("loss", "t+3", "one of ['next-token', 'paper']"),
        ("data", 7, "text or null"),
        ("patience", None, "a whole number"),
    ],
)
def test_a_hand_edited_config_field_of_the_wrong_type_is_named(field, value, says, tmp_path):
    raw = json.loads(TrainConfig().to_json()) | {field: value}
    with pytest.raises(
        RunDirError, match=re.escape(f"field {field} is {value!r}; it must be {says}")
    ):
        TrainConfig.from_json(json.dumps(raw), str(tmp_path / "run" / "config.json"))
    ok = json.loads(TrainConfig().to_json()) | {"lr": 1, "max_steps": None}  # an int is a float
    assert TrainConfig.from_json(json.dumps(ok)).lr == 1


def _smoke(**overrides):
    return preset("smoke", host="tiny-random-llama", device="cpu", **overrides)


def test_train_writes_run_and_keeps_host_frozen(tiny_host, tmp_path):
    before = [p.clone() for p in tiny_host.parameters()]
    result = train(
        _smoke(max_steps=4, l1_alpha=1e-4), tmp_path / "run", host=tiny_host, progress=False
    )
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} == {
        "config.json",
        "irm.safetensors",
        "last.safetensors",
        "metrics.csv",
        "summary.json",
        ".irm_lens.lock",  # the writer lock (empty once released; see irm_lens.training.runlock)
    }
    assert (run / ".irm_lens.lock").read_text() == ""
    assert result.steps == 4 and result.stopped == "max_steps"
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics.columns) == [
        "step",
        "epoch",
        "train_loss",
        "val_loss",
        "lr",
        "tokens_per_s",
    ]
    assert metrics["step"].tolist() == [1, 2, 3, 4]
    assert metrics["val_loss"].notna().tolist() == [False, True, False, True]
    assert json.loads((run / "config.json").read_text())["l1_alpha"] == 1e-4
    assert all(torch.equal(a, b) for a, b in zip(before, tiny_host.parameters(), strict=True))
    assert all(p.grad is None for p in tiny_host.parameters())


def test_training_lowers_the_loss(tiny_host, tmp_path):
    cfg = _smoke(
        max_steps=12, epochs=12, eval_every=12, max_train_rows=8, batch_size=8, lr=1e-2, gamma=1.0
    )
    train(cfg, tmp_path / "run", host=tiny_host, progress=False)
    losses = pd.read_csv(tmp_path / "run" / "metrics.csv")["train_loss"]
    # A random host's small unembedding keeps every loss near ln(vocab) ~ 6.2 nats, so the
    # drop is small in absolute terms but must be steady.
    assert losses.iloc[-3:].mean() < losses.iloc[:3].mean() - 0.05
    assert losses.is_monotonic_decreasing


def test_existing_run_needs_overwrite_or_resume(tiny_host, tmp_path):
    train(_smoke(max_steps=1), tmp_path / "run", host=tiny_host, progress=False)
    with pytest.raises(RunDirError, match="--overwrite"):
        train(_smoke(max_steps=1), tmp_path / "run", host=tiny_host, progress=False)
    with pytest.raises(RunDirError, match="different config"):
        train(_smoke(max_steps=2), tmp_path / "run", host=tiny_host, resume=True, progress=False)
    with pytest.raises(RunDirError, match="no run to resume"):
        train(_smoke(), tmp_path / "empty", host=tiny_host, resume=True, progress=False)
    train(_smoke(max_steps=2), tmp_path / "run", host=tiny_host, overwrite=True, progress=False)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 2


@pytest.mark.parametrize(
    ("loss", "optimizer"), [("next-token", "adam"), ("paper", "adam"), ("next-token", "sgd")]
)
def test_interrupt_then_resume_is_bit_identical(tiny_host, tmp_path, loss, optimizer):
    cfg = _smoke(
        max_steps=6,
        eval_every=2,
        grad_accum=2,
        batch_size=2,
        loss=loss,
        epochs=3,
        max_train_rows=8,
        optimizer=optimizer,
    )
    straight = train(cfg, tmp_path / "a", host=tiny_host, progress=False)

    def ctrl_c(step: int) -> None:
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, handled between steps

    stopped = train(cfg, tmp_path / "b", host=tiny_host, progress=False, on_step=ctrl_c)
    assert stopped.stopped == "interrupted" and stopped.steps == 3
    assert not (tmp_path / "b" / "summary.json").exists()
    resumed = train(cfg, tmp_path / "b", host=tiny_host, progress=False, resume=True)
    assert resumed.steps == straight.steps == 6 and resumed.stopped == straight.stopped
    for name in ("irm.safetensors", "last.safetensors"):
        a, b = load_file(str(tmp_path / "a" / name)), load_file(str(tmp_path / "b" / name))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    moments = {k.rsplit(".", 1)[-1] for k in a if k.startswith("opt.")}
    assert moments == (
        {"momentum_buffer"} if optimizer == "sgd" else {"exp_avg", "exp_avg_sq", "step"}
    )
    cols = ["step", "epoch", "train_loss", "val_loss", "lr"]
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "a" / "metrics.csv")[cols],
        pd.read_csv(tmp_path / "b" / "metrics.csv")[cols],
    )


def test_a_finished_run_extended_ends_as_the_longer_run(tiny_host, tmp_path):
    longer = _smoke(max_steps=6, eval_every=2, epochs=3, max_train_rows=8, snapshots=(0, 2, 4, 6))
    shorter = dataclasses.replace(longer, max_steps=4, snapshots=(0, 2, 4))
    train(longer, tmp_path / "a", host=tiny_host, progress=False)
    train(shorter, tmp_path / "b", host=tiny_host, progress=False)
    assert run_status(tmp_path / "b", longer) == "shorter"
    extended = train(longer, tmp_path / "b", host=tiny_host, progress=False, resume=True)
    assert extended.steps == 6 and extended.stopped == "max_steps"
    assert TrainConfig.load(tmp_path / "b" / "config.json") == longer
    assert run_status(tmp_path / "b", longer) == "done"
    names = ["irm.safetensors", "last.safetensors"]
    names += [f"snapshots/step-{s:06d}.safetensors" for s in longer.snapshots]
    for name in names:
        a, b = load_file(str(tmp_path / "a" / name)), load_file(str(tmp_path / "b" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    cols = ["step", "epoch", "train_loss", "val_loss", "lr"]
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "a" / "metrics.csv")[cols],
        pd.read_csv(tmp_path / "b" / "metrics.csv")[cols],
    )


def test_an_extension_the_epoch_cap_would_swallow_is_refused(tiny_host, tmp_path):
    capped = _smoke(max_steps=2, eval_every=2, epochs=1, max_train_rows=8)  # 2 steps an epoch
    train(capped, tmp_path / "run", host=tiny_host, progress=False)
    saved = (tmp_path / "run" / "config.json").read_text()
    longer = dataclasses.replace(capped, max_steps=4)
    with pytest.raises(RunDirError, match="Raise --epochs too"):
        train(longer, tmp_path / "run", host=tiny_host, progress=False, resume=True)
    assert (tmp_path / "run" / "config.json").read_text() == saved


def test_what_may_not_extend_a_run_is_named():
    saved = _smoke(max_steps=4, eval_every=2, snapshots=(0, 2))
    fine = [dict(max_steps=8), dict(max_steps=None), dict(max_steps=8, snapshots=(0, 2, 6))]
    for change in fine:
        assert extension_problem(saved, dataclasses.replace(saved, **change)) is None, change
    cases = [
        (saved, dict(max_steps=4), "max_steps 4 is not larger than the saved run's 4"),
        (saved, dict(max_steps=8, lr=0.5), r"differs in \['lr'\]"),
        (saved, dict(max_steps=8, snapshots=(0, 2, 4)), "snapshots up to step 4 differ"),
        (
            dataclasses.replace(saved, max_steps=3),
            dict(max_steps=8),
            "max_steps 3 is not a multiple of eval_every 2",
        ),
    ]
    for old, change, reason in cases:
        problem = extension_problem(old, dataclasses.replace(old, **change))
        assert problem is not None and re.search(reason, problem), (reason, problem)


def test_an_early_stopped_run_is_finished_under_a_larger_cap(tiny_host, tmp_path, monkeypatch):
    import irm_lens.training.train as train_module

    # validation never improves after its first pass: patience 1 stops the run at step 4
    monkeypatch.setattr(train_module._Trainer, "_val_loss", lambda self: 1.0)
    cfg = _smoke(max_steps=6, eval_every=2, epochs=3, max_train_rows=8, patience=1)
    first = train(cfg, tmp_path / "run", host=tiny_host, progress=False)
    assert (first.steps, first.stopped) == (4, "early_stop")
    again = train(
        dataclasses.replace(cfg, max_steps=10),
        tmp_path / "run",
        host=tiny_host,
        progress=False,
        resume=True,
    )
    assert (again.steps, again.stopped) == (4, "early_stop")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 4
    assert TrainConfig.load(tmp_path / "run" / "config.json").max_steps == 10


def test_step_lr_decays_per_epoch(tiny_host, tmp_path):
    cfg = _smoke(max_steps=None, epochs=3, max_train_rows=8, batch_size=4, gamma=0.5, lr=1e-3)
    train(cfg, tmp_path / "run", host=tiny_host, progress=False)
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert metrics.groupby("epoch")["lr"].first().tolist() == pytest.approx([1e-3, 5e-4, 2.5e-4])


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_host, tmp_path, monkeypatch):
    import irm_lens.training.train as train_module
    from irm_lens.training.train import TrainingDivergedError

    cfg = _smoke(max_steps=6, eval_every=2, epochs=3)
    real = train_module.loss_sum
    calls = {"n": 0}

    def poisoned(logits, batch, kind):
        loss = real(logits, batch, kind)
        if torch.is_grad_enabled():  # training forwards only, not validation
            calls["n"] += 1
            if calls["n"] == 3:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(train_module, "loss_sum", poisoned)
    with pytest.raises(TrainingDivergedError, match=r"step 3 .*last\.safetensors"):
        train(cfg, tmp_path / "run", host=tiny_host, progress=False)
    state = load_file(str(tmp_path / "run" / "last.safetensors"))
    assert all(torch.isfinite(v).all() for v in state.values())
    monkeypatch.setattr(train_module, "loss_sum", real)
    resumed = train(cfg, tmp_path / "run", host=tiny_host, progress=False, resume=True)
    assert resumed.steps == 6


def test_early_stopping_on_validation_loss(tiny_host, tmp_path, monkeypatch):
    import irm_lens.training.train as train_module

    rising = iter([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    monkeypatch.setattr(train_module._Trainer, "_val_loss", lambda self: next(rising))
    cfg = _smoke(max_steps=None, epochs=10, eval_every=1, patience=2, max_train_rows=8)
    result = train(cfg, tmp_path / "run", host=tiny_host, progress=False)
    # best at the first evaluation (step 1), then two evaluations without improvement
    assert (result.stopped, result.steps, result.best_step, result.best_val) == (
        "early_stop",
        3,
        1,
        1.0,
    )


def test_masked_padding_trains_on_unpadded_rows_with_the_same_loss(tiny_host, irm):
    from irm_lens.data.batches import collate, pad_id
    from irm_lens.inject import attach
    from irm_lens.prompts import Encoded
    from irm_lens.training.config import Objective
    from irm_lens.training.losses import loss_sum, loss_terms, pads_to_max_len

    assert pads_to_max_len(Objective("paper")) and not pads_to_max_len("next-token")
    examples = [Encoded([1, 5, 7], [9, 11, 4]), Encoded([1, 6], [8, 3])]
    for offset in (1, 2):
        masked = Objective("paper", offset, "masked")
        assert not pads_to_max_len(masked)
        losses = []
        for full in (True, False):
            batch = collate(examples, pad_id(tiny_host.tokenizer), 12, pad_to_max=full)
            assert batch.tokens.shape[1] == (12 if full else 6)
            with attach(tiny_host, irm):
                logits = tiny_host(batch.tokens, attention_mask=batch.attention_mask)
            losses.append(
                float(loss_sum(logits, batch, masked).detach()) / loss_terms(batch, masked)
            )
        assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_hostile_architecture_seed_and_layer_values_are_refused_with_their_names(tiny_host):
    from irm_lens.cli.types import seed
    from irm_lens.errors import LayerRangeError
    from irm_lens.irm import parse_layers

    for field in ("width_mult", "depth"):
        with pytest.raises(ValueError, match=f"{field} must be at least 1"):
            TrainConfig(**{field: 0})
    for bad in (-1, 2**64 + 1):
        with pytest.raises(ValueError, match="seed must be a whole number from 0 to 4294967295"):
            TrainConfig(seed=bad)
    assert TrainConfig(seed=2**32 - 1).seed == 2**32 - 1
    with pytest.raises(Exception, match=r"at most 4294967295"):
        seed(str(2**64 + 1))
    with pytest.raises(LayerRangeError, match=r"layers 4\.\.99, 120 are out of range"):
        parse_layers("2-99,120", tiny_host.cfg.n_layers)


def test_rows_whose_answers_do_not_fit_are_refused_before_the_run_exists(tiny_host, tmp_path):
    import csv

    from irm_lens.errors import IrmLensError
    from irm_lens.training.train import train

    data = tmp_path / "long.csv"
    with data.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "answer"])
        for i in range(40):
            writer.writerow([f"Question {i} " + "word " * 80 + "?", "A short answer."])
    config = preset(
        "smoke", host="tiny-random-llama", device="cpu", data=str(data), emotion="pirate"
    )
    with pytest.raises(IrmLensError, match=r"rows of .*long\.csv, train split have no answer"):
        train(config, tmp_path / "run", host=tiny_host, progress=False)
    assert not (tmp_path / "run").exists()
    # the same rows fit when max_len leaves room for their answers: no error
    roomy = dataclasses.replace(config, max_len=512, max_steps=1)
    train(roomy, tmp_path / "run2", host=tiny_host, progress=False)


def test_the_optimizer_state_is_dropped_once_a_run_stops_for_good(tiny_host, tmp_path):
    from safetensors import safe_open

    from irm_lens.training.config import preset
    from irm_lens.training.train import train

    def optimizer_tensors(run) -> list[str]:
        with safe_open(str(run / "last.safetensors"), framework="pt") as fh:
            return [k for k in fh.keys() if k.startswith("opt.")]  # noqa: SIM118

    base = preset("smoke", host="tiny-random-llama", device="cpu", max_train_rows=8)
    # one epoch of 8 rows, 4 per step: stopped by its epochs, for good
    done = train(
        dataclasses.replace(base, max_steps=10), tmp_path / "a", host=tiny_host, progress=False
    )
    assert done.stopped == "epochs" and not optimizer_tensors(tmp_path / "a")
    again = train(
        dataclasses.replace(base, max_steps=10),
        tmp_path / "a",
        resume=True,
        host=tiny_host,
        progress=False,
    )
    assert again.stopped == "epochs" and again.steps == done.steps  # still reads back: finished
    kept = train(
        dataclasses.replace(base, max_steps=10),
        tmp_path / "b",
        host=tiny_host,
        progress=False,
        keep_optimizer=True,
    )
    assert kept.stopped == "epochs" and optimizer_tensors(tmp_path / "b")
    # stopped at its max_steps cap: a larger cap extends it, so the state stays
    capped = train(
        dataclasses.replace(base, max_steps=1), tmp_path / "c", host=tiny_host, progress=False
    )
    assert capped.stopped == "max_steps" and optimizer_tensors(tmp_path / "c")
