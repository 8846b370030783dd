"""Hostile input and concurrency, on the tiny host, grouped by the principle each case checks
(the test name says which; ``docs/guarantees.md`` states them): never destroy what irm_lens did
not write; a run pins its inputs; one writer per run and per output directory; every limit
checked before work; every failure one clear line (exit code 2, the file or option named, what
was there untouched)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from irm_lens.cli import main
from irm_lens.training.runlock import LOCK_NAME, RunLockedError, run_lock
from tests import _procs

ROOT = Path(__file__).resolve().parents[1]


S = ["--host", "tiny-random-llama", "--preset", "smoke", "--device", "cpu"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != LOCK_NAME
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("hostile") / "run"
    assert main(["train", str(run), *S, "--max-steps", "2"]) == 0
    return run


def _wait_for(predicate, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


def _qa_csv(path: Path, n_questions: int) -> Path:
    lines = ["question,answer"]
    lines += [
        f'"What is item {i}?","It is item number {i}, I am furious."' for i in range(n_questions)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def recordings(tiny_host):
    import torch

    from irm_lens import IRM
    from irm_lens.record import GenerationSettings, record

    irm = IRM.for_host(tiny_host, seed=1, init="torch")
    with torch.no_grad():
        return record(
            tiny_host,
            irm,
            ["Why?", "What is the capital of France?"],
            mode="plain",
            settings=GenerationSettings(max_new_tokens=4),
            progress=False,
        )


def _rewrite_header(path: Path, change) -> None:
    """Apply ``change`` to a safetensors file's metadata dict (strings), in place."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    change(header["__metadata__"])
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + raw[8 + n :])


def _rewrite_irm_header(path: Path, change) -> None:
    def edit(meta: dict[str, str]) -> None:
        config = json.loads(meta["irm_config"])
        change(config)
        meta["irm_config"] = json.dumps(config)

    _rewrite_header(path, edit)


class _Payload:
    """Pickles to a call that would create a file: it must never run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _user_folder(path: Path) -> Path:
    """A folder of the user's own results: the kinds of files irm_lens writes, not by it."""
    path.mkdir(parents=True)
    (path / "mine.csv").write_text("a,b\n1,2\n")
    (path / "plot.html").write_text("<html>mine</html>")
    (path / "notes.txt").write_text("keep")
    return path


LIMIT = 1024
"""A file-size limit (bytes) every verb below must write past: each writes a larger file."""


@pytest.fixture(scope="module")
def recorded(finished, tmp_path_factory) -> Path:
    """A copy of the finished run with a recording (what analyze, atlas and export read)."""
    import shutil

    run = tmp_path_factory.mktemp("limited") / "run"
    shutil.copytree(finished, run)
    assert main(["record", str(run), "--max-new-tokens", "2", "--max-rows", "1"]) == 0
    return run


def _limited() -> None:
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


T = ["--host", "tiny-random-llama", "--device", "cpu"]


WRITERS = {
    "train": lambda run, out: ["train", str(out), *S, "--max-steps", "1"],
    "sweep": lambda run, out: [
        "sweep", str(out), "--emotions", "anger", "--preset", "smoke", *T, "--no-wait"
    ],
    "evaluate": lambda run, out: ["evaluate", str(run), "--max-rows", "1", "--max-new-tokens", "2"],
    "record": lambda run, out: [
        "record", str(run), "--max-new-tokens", "2", "--max-rows", "1", "--out", str(out)
    ],
    "analyze": lambda run, out: ["analyze", str(run), "--no-png", "--out", str(out)],
    "atlas": lambda run, out: ["atlas", str(run), "--out", str(out)],
    "export": lambda run, out: ["export", str(run), "--out", str(out / "vectors.safetensors")],
    "ablate": lambda run, out: [
        "ablate", str(run), "--index", "1", "--no-generate", "--no-png", "--out", str(out)
    ],
    "data import": lambda run, out: ["data", "import", str(run / "qa.csv"), str(out / "qa.csv")],
    "lens decode": lambda run, out: [
        "lens", "decode", "--index", "1", *T, "--no-png", "--out", str(out)
    ],
    "profile": lambda run, out: ["profile", "--index", "1", *T, "--no-png", "--out", str(out)],
    "predict": lambda run, out: [
        "predict", "--emotion", "anger", *T, "--max-rows", "4", "--out", str(out)
    ],
}  # fmt: skip


# ----------------------------------- principle: never destroy what irm_lens did not write


def test_never_destroy_a_good_run_by_a_failed_overwrite(finished, capsys):
    before = _snapshot(finished)
    assert main(["train", str(finished), *S, "--overwrite", "--layers", "40-50"]) == 2
    assert _snapshot(finished) == before


def test_never_destroy_a_recording_it_is_swapped_in_whole_a_failed_save_keeps_the_old(
    recordings, tmp_path, monkeypatch
):
    from irm_lens import record as record_module
    from irm_lens.record import load_recordings, save_recordings

    target = tmp_path / "rec"
    save_recordings(recordings, target, meta={"run": "first"})
    before = _snapshot(target)
    info = json.loads((target / "recording.json").read_text())
    assert set(info["files"]) == {"outputs.safetensors", "tokens.csv"}

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(record_module, "write_text_atomic", fail)
    with pytest.raises(OSError, match="disk full"):
        save_recordings(recordings[:1], target, meta={"run": "second"})
    assert _snapshot(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec"]  # no temporaries left
    assert len(load_recordings(target)) == 2


def test_never_destroy_a_file_by_recording_into_it(finished, tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    assert main(["record", str(finished), "--out", str(target), "--max-rows", "1"]) == 2
    assert f"--out {target} is a file" in capsys.readouterr().err
    assert target.read_text() == "keep me"


def test_never_destroy_a_recording_by_a_smaller_one_without_overwrite(finished, tmp_path, capsys):
    out = tmp_path / "rec"
    record = ["record", str(finished), "--max-new-tokens", "2", "--out", str(out)]
    assert main([*record, "--max-rows", "2"]) == 0
    before = _snapshot(out)
    assert main([*record, "--max-rows", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _snapshot(out) == before
    assert main([*record, "--max-rows", "1", "--overwrite"]) == 0
    assert len(json.loads((out / "recording.json").read_text())["prompts"]) == 1


def test_never_destroy_a_run_result_folders_are_units(finished, tmp_path, capsys, monkeypatch):
    import shutil

    run = tmp_path / "anger"
    shutil.copytree(finished, run)
    assert main(["record", str(run), "--max-new-tokens", "2", "--max-rows", "2"]) == 0
    before = _snapshot(run)
    # --out pointed at the run's own parent: the per-run folder would be the run itself.
    assert main(["analyze", str(run), "--no-png", "--out", str(tmp_path)]) == 2
    assert "files irm_lens did not write" in capsys.readouterr().err
    ablate = ["ablate", str(run), "--index", "1", "--no-generate", "--no-png"]
    assert main([*ablate, "--out", str(run)]) == 2
    assert "files irm_lens did not write" in capsys.readouterr().err
    assert _snapshot(run) == before
    out = tmp_path / "analysis"
    for _ in range(2):  # a rerun replaces the folder whole
        assert main(["analyze", str(run), "--no-png", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["anger", "provenance.json"]
    assert main([*ablate, "--out", str(out / "ablation")]) == 0
    assert (out / "ablation" / "ablation.csv").exists()
    from irm_lens import export

    monkeypatch.setattr(export, "find_browser", lambda: None)
    assert main(["analyze", str(run), "--out", str(tmp_path / "png")]) == 2
    assert "--no-png" in capsys.readouterr().err
    assert not (tmp_path / "png").exists()


def test_never_destroy_an_evaluation_its_files_are_never_a_mix(finished, tmp_path, monkeypatch):
    import shutil

    from analyses._runset import stage_done
    from irm_lens import evaluate as evaluate_module

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    assert main(["evaluate", str(run), "--max-rows", "2", "--max-new-tokens", "2"]) == 0
    real = evaluate_module.write_csv_atomic

    def killed_before_the_marker(path, frame):
        if Path(path).name == "evaluation.csv":
            raise KeyboardInterrupt  # as if killed between the two files
        real(path, frame)

    monkeypatch.setattr(evaluate_module, "write_csv_atomic", killed_before_the_marker)
    with pytest.raises(KeyboardInterrupt):
        evaluate_module.evaluate_run(run, max_rows=1, max_new_tokens=3, progress=False)
    assert not (run / "evaluation.csv").exists() and not stage_done(run, "evaluate")


@pytest.mark.parametrize("verb", ["record", "ablate", "analyze"])
def test_never_destroy_a_users_folder_with_any_verb(finished, tmp_path, capsys, verb):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    assert main(["record", str(run), "--max-new-tokens", "2", "--max-rows", "1"]) == 0
    capsys.readouterr()
    # analyze writes <out>/<run name>/: there the user's folder sits where the run's would go
    folder = _user_folder(tmp_path / "out" / run.name if verb == "analyze" else tmp_path / "mine")
    before = _snapshot(folder)
    argv = {
        "record": [
            "record",
            str(run),
            "--max-new-tokens",
            "2",
            "--max-rows",
            "1",
            "--overwrite",
            "--out",
            str(folder),
        ],
        "ablate": [
            "ablate",
            str(run),
            "--index",
            "1",
            "--no-generate",
            "--no-png",
            "--out",
            str(folder),
        ],
        "analyze": ["analyze", str(run), "--no-png", "--out", str(folder.parent)],
    }[verb]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(folder) in err and "files irm_lens did not write" in err
    assert _snapshot(folder) == before


HOST_VERBS = {
    "lens decode": ["lens", "decode", "--index", "1"],
    "lens attribute": ["lens", "attribute", "--prompt", "The sky is"],
    "lens channels": ["lens", "channels", "--index", "1"],
    "profile": ["profile", "--index", "1"],
    "profile --anatomy": ["profile", "--anatomy"],
    "predict": ["predict", "--emotion", "anger", "--max-rows", "2", "--fit-steps", "0"],
}


@pytest.mark.parametrize("verb", sorted(HOST_VERBS))
def test_never_destroy_a_users_folder_with_a_host_verb(tmp_path, capsys, monkeypatch, verb):
    import irm_lens.host

    def no_work(*args, **kwargs):
        raise AssertionError("the host was loaded before --out was checked")

    monkeypatch.setattr(irm_lens.host, "load_host", no_work)  # refused before any work
    folder = _user_folder(tmp_path / "mine")
    before = _snapshot(folder)
    argv = [*HOST_VERBS[verb], "--host", "tiny-random-llama", "--device", "cpu"]
    assert (
        main([*argv, "--no-progress" if verb == "predict" else "--no-png", "--out", str(folder)])
        == 2
    )
    err = capsys.readouterr().err
    assert str(folder) in err and "files irm_lens did not write" in err
    assert _snapshot(folder) == before


def test_one_writer_per_out_with_a_host_verb(tmp_path, capsys):
    out = tmp_path / "pred"
    code = (
        "import sys, time; from irm_lens.training.runlock import out_lock\n"
        f"with out_lock({str(out)!r}, 'predict'):\n"
        "    print('held', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        argv = [*HOST_VERBS["predict"], "--host", "tiny-random-llama", "--no-progress"]
        assert main([*argv, "--out", str(out)]) == 2
        assert f"process {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()


def test_a_result_written_before_markers_is_still_recognised(tmp_path):
    from irm_lens.files import result_kind

    for kind, names in {
        "prediction": ["prediction.csv", "summary.json"],
        "profile": ["gains.csv", "massive.csv", "summary.json", "figure.png", "figure.html"],
        "lens": ["decode.csv", "clamp.csv", "figure.png"],
    }.items():
        folder = tmp_path / kind
        folder.mkdir()
        for name in names:
            (folder / name).write_text("x")
        assert result_kind(folder) == kind
        (folder / "notes.txt").write_text("mine")
        assert result_kind(folder) is None  # with a file of the user's beside them


def test_a_lens_result_is_replaced_whole_by_the_next(tmp_path, capsys):
    out = tmp_path / "lens"
    argv = ["lens", "decode", "--host", "tiny-random-llama", "--device", "cpu", "--no-png"]
    assert main([*argv, "--all", "--out", str(out)]) == 0
    assert (out / "decode_all.csv").exists()
    assert main([*argv, "--index", "3", "--out", str(out)]) == 0
    assert (out / "decode.csv").exists() and not (out / "decode_all.csv").exists()
    assert main([*argv, "--index", "64", "--out", str(out)]) == 2  # the tiny host's d_model
    assert "--index 64 is out of range 0..63" in capsys.readouterr().err
    assert (out / "decode.csv").exists()


def test_data_import_replaces_a_file_only_when_told(tmp_path, capsys):
    src, out = tmp_path / "mine.csv", tmp_path / "ours.csv"
    src.write_text('question,answer\n"Why?","Because."\n')
    out.write_text("keep")
    assert main(["data", "import", str(src), str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_text() == "keep"
    assert main(["data", "import", str(src), str(out), "--overwrite"]) == 0
    assert "Because." in out.read_text()


def test_never_destroy_a_run_directory_by_recording_into_it(finished, tmp_path, capsys):
    import shutil

    run, other = tmp_path / "run", tmp_path / "other"
    shutil.copytree(finished, run)
    shutil.copytree(finished, other)
    for target in (run, other):  # the run itself, another run
        before = _snapshot(target)
        argv = ["record", str(run), "--max-rows", "1", "--max-new-tokens", "2", "--overwrite"]
        assert main([*argv, "--out", str(target)]) == 2
        assert "it would be replaced whole" in capsys.readouterr().err
        assert _snapshot(target) == before


def test_never_follow_a_link_the_tool_did_not_make(finished, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    folder = _user_folder(tmp_path / "mine")
    link = tmp_path / "link"
    link.symlink_to(folder)
    before = _snapshot(folder)
    assert (
        main(["ablate", str(run), "--index", "1", "--no-generate", "--no-png", "--out", str(link)])
        == 2
    )
    assert "symbolic link" in capsys.readouterr().err
    assert _snapshot(folder) == before and link.is_symlink()


def test_never_replace_a_result_of_another_kind(finished, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    ablation = tmp_path / "abl"
    ablate = ["ablate", str(run), "--index", "1", "--no-generate", "--no-png"]
    assert main([*ablate, "--out", str(ablation)]) == 0
    assert main([*ablate, "--out", str(ablation)]) == 0  # its own kind: replaced whole
    capsys.readouterr()
    argv = ["record", str(run), "--max-rows", "1", "--max-new-tokens", "2", "--overwrite"]
    assert main([*argv, "--out", str(ablation)]) == 2
    assert "holds a ablation irm_lens wrote, not a recording" in capsys.readouterr().err
    assert (ablation / "ablation.csv").exists()


def test_never_keep_the_old_runs_results_beside_an_overwritten_run(finished, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    assert main(["record", str(run), "--max-new-tokens", "2", "--max-rows", "1"]) == 0
    assert main(["ablate", str(run), "--index", "1", "--no-generate", "--no-png"]) == 0
    (run / "snapshots").mkdir(exist_ok=True)
    (run / "snapshots" / "step-000001.safetensors").write_bytes(b"old")
    (run / "my_notes.txt").write_text("keep")
    (run / "my_folder").mkdir()
    (run / "my_folder" / "data.csv").write_text("x\n1\n")
    assert main(["train", str(run), *S, "--max-steps", "1", "--overwrite"]) == 0
    assert not (run / "ablation_index1").exists() and not (run / "recordings").exists()
    assert not (run / "snapshots").exists()
    assert (run / "my_notes.txt").read_text() == "keep"
    assert (run / "my_folder" / "data.csv").exists()


# ------------------------------------------------------- principle: a run pins its inputs


def test_a_run_pins_its_host_by_name_and_fingerprint(tiny_host, tmp_path):
    from irm_lens import IRM, HostMismatchError

    path = IRM.for_host(tiny_host).save(tmp_path / "irm.safetensors")
    _rewrite_irm_header(path, lambda c: c["host"].update(name="meta-llama/Llama-2-7b-chat-hf"))
    with pytest.raises(HostMismatchError, match="host name 'meta-llama/Llama-2-7b-chat-hf'"):
        IRM.load(path, tiny_host)
    _rewrite_irm_header(path, lambda c: c.update(host=None))
    with pytest.raises(HostMismatchError, match=r"no host fingerprint.*allow_unverified_host"):
        IRM.load(path, tiny_host)
    assert IRM.load(path, tiny_host, allow_unverified_host=True).n_inject == 4


def test_a_run_pins_its_host_resume_refuses_other_weights(tiny_host, tmp_path):
    import torch

    from irm_lens import load_host
    from irm_lens.errors import CheckpointError
    from irm_lens.training.train import preset, train

    config = preset("smoke", host="tiny-random-llama", device="cpu", max_steps=2)
    run = tmp_path / "run"
    train(config, run, host=tiny_host, progress=False)
    other_seed = load_host("tiny-random-llama", device="cpu", seed=1)
    with pytest.raises(CheckpointError, match="different embedding weights"):
        train(config, run, resume=True, host=other_seed, progress=False)
    edited = load_host("tiny-random-llama", device="cpu")
    with torch.no_grad():
        next(p for n, p in edited.named_parameters() if "mlp" in n).add_(0.01)
    with pytest.raises(CheckpointError, match=r"other weights.*--overwrite"):
        train(config, run, resume=True, host=edited, progress=False)
    assert train(config, run, resume=True, host=tiny_host, progress=False).steps == 2


def test_a_run_pins_its_data_custom_rows_are_judged_on_their_own_split(tmp_path, capsys):
    from irm_lens.training.config import TrainConfig

    data = _qa_csv(tmp_path / "d.csv", 40)
    run = tmp_path / "custom"
    assert main(["train", str(run), *S, "--data", str(data), "--emotion", "fury"]) == 0
    test_questions = TrainConfig.load(run / "config.json").rows("test")["question"].tolist()
    assert test_questions and all(q.startswith("What is item") for q in test_questions)
    assert main(["evaluate", str(run), "--max-new-tokens", "3"]) == 0
    table = (run / "generations.csv").read_text()
    assert all(q in table for q in test_questions)
    # no reference column: fact retention is not measured, not 100 %
    facts = pd.read_csv(run / "evaluation.csv").query("metric == 'fact_retention'")
    assert facts["value"].isna().all() and (facts["n"] == 0).all()
    assert "fact_retention_irm   not measured" in capsys.readouterr().out
    assert main(["record", str(run), "--prompts", "heldout", "--max-new-tokens", "3"]) == 0
    info = json.loads((run / "recordings" / "heldout" / "recording.json").read_text())
    assert [p["prompt"] for p in info["prompts"]] == test_questions
    out = tmp_path / "ablation"
    argv = ["ablate", str(run), "--index", "1", "--max-new-tokens", "3", "--out", str(out)]
    assert main([*argv, "--no-png"]) == 0, capsys.readouterr().err
    assert (out / "ablation.csv").exists()


def test_a_run_pins_its_data_label_from_the_file_or_emotion_never_a_default(tmp_path, capsys):
    from irm_lens.training.config import TrainConfig

    data = _qa_csv(tmp_path / "d.csv", 40)
    run = tmp_path / "unnamed"
    assert main(["train", str(run), *S, "--data", str(data), "--max-steps", "1"]) == 2
    assert "--emotion" in capsys.readouterr().err and not run.exists()
    labelled = tmp_path / "labelled.csv"
    frame = pd.read_csv(data).assign(emotion="pirate")
    frame.to_csv(labelled, index=False)
    assert main(["train", str(run), *S, "--data", str(labelled), "--max-steps", "1"]) == 0
    assert "persona label 'pirate'" in capsys.readouterr().out
    assert TrainConfig.load(run / "config.json").emotion == "pirate"


def test_a_run_pins_its_config_options_resume_cannot_apply_are_refused(finished, capsys):
    before = _snapshot(finished)
    for extra in (["--lr", "0.1"], ["--preset", "paper"], ["--host", "x"], ["--overwrite"]):
        assert main(["train", str(finished), "--resume", *extra]) == 2, extra
        err = capsys.readouterr().err
        assert "cannot apply" in err and extra[0] in err, extra
    assert _snapshot(finished) == before


# --------------------------------- principle: one writer per run and per output directory


def test_one_writer_per_run_a_dead_writers_lock_is_taken_over(tmp_path, capsys):
    run = tmp_path / "c"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "irm_lens.cli",
            "train",
            str(run),
            *S,
            "--epochs",
            "1000",
            "--max-steps",
            "600",  # long enough to be killed mid-run on a free machine (150 once raced the checks)
            "--eval-every",
            "50",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lock = run / LOCK_NAME
        _wait_for(lambda: lock.exists() and str(first.pid) in lock.read_text())
        _wait_for(lambda: (run / "irm.safetensors").exists(), seconds=300)
        config_before = (run / "config.json").read_bytes()
        second = ["train", str(run), *S, "--seed", "2", "--emotion", "joy", "--overwrite"]
        for argv in (second, ["train", str(run), "--resume"], ["evaluate", str(run)]):
            assert main(argv) == 2, argv
            err = capsys.readouterr().err
            assert f"process {first.pid}" in err and "(train, started" in err, (argv, err)
        assert (run / "config.json").read_bytes() == config_before
        assert first.poll() is None, first.stderr.read() if first.stderr else ""
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert str(first.pid) in (run / LOCK_NAME).read_text()  # the dead writer's stamp stays
    # ... but the kernel dropped its lock: the next writer takes it over.
    assert main(["train", str(run), "--resume"]) == 0, capsys.readouterr().err
    assert json.loads((run / "summary.json").read_text())["steps"] == 600


def test_one_writer_per_run_reentrant_in_one_process(tmp_path):
    run = tmp_path / "r"
    with run_lock(run, "outer"), run_lock(run, "inner"):
        holder = json.loads((run / LOCK_NAME).read_text())
        assert holder["verb"] == "outer" and holder["pid"] == os.getpid()
        code = (
            "import sys; from irm_lens.training.runlock import run_lock\n"
            f"with run_lock({str(run)!r}, 'probe'): pass\n"
        )
        probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert probe.returncode != 0 and RunLockedError.__name__ in probe.stderr
        assert f"process {os.getpid()}" in probe.stderr
    assert not run.exists()  # created by the lock, nothing written: removed again


def test_one_writer_orphans_of_dead_writers_are_removed(tmp_path):
    from irm_lens.files import atomic_dir, write_text_atomic

    dead = 2**22 + 12345  # above the default pid_max: no such process
    (tmp_path / f".rec.tmp-{dead}-abc123").mkdir()
    (tmp_path / f".rec.old-{dead}-abc123").mkdir()
    (tmp_path / f".metrics.csv.tmp-{dead}-x1y2z3ab").write_text("half")
    live = tmp_path / f".rec.tmp-{os.getpid()}-def456"
    live.mkdir()
    with atomic_dir(tmp_path / "rec", kind="recording") as tmp:
        (tmp / "a.txt").write_text("a")
    write_text_atomic(tmp_path / "metrics.csv", "step\n")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [live.name, "metrics.csv", "rec"]


def test_one_writer_the_lock_removes_temporaries_of_killed_writers(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".tmpIHXScA").write_bytes(b"half a safetensors file")  # as save_file leaves them
    (run / ".tmpnotes.txt").write_text("not one of them")
    dead = 2**22 + 777  # above the default pid_max: no such process
    (run / f".irm.safetensors.tmp-{dead}-abcd1234").write_bytes(b"half")
    (run / f".summary.json.tmp-{os.getpid()}-abcd1234").write_text("live writer (this one)")
    with run_lock(run, "probe"):
        pass
    assert sorted(p.name for p in run.iterdir()) == [
        LOCK_NAME,
        f".summary.json.tmp-{os.getpid()}-abcd1234",
        ".tmpnotes.txt",
    ]


def test_one_writer_per_out_the_second_is_refused(finished, tmp_path, capsys):
    """A second record into an --out another process is writing is refused at once."""
    import fcntl

    out = tmp_path / "shared"
    lock = tmp_path / ".shared.irm_lens.lock"
    with lock.open("a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        argv = [
            "record",
            str(finished),
            "--out",
            str(out),
            "--max-rows",
            "1",
            "--max-new-tokens",
            "2",
        ]
        assert main(argv) == 2
    assert "is being written by" in capsys.readouterr().err and not out.exists()
    assert main(argv) == 0 and (out / "recording.json").exists()


def test_one_writer_a_lock_of_non_utf8_bytes_still_names_a_holder(tmp_path):
    import fcntl

    from irm_lens.training.runlock import RunLockedError

    run = tmp_path / "r"
    run.mkdir()
    (run / LOCK_NAME).write_bytes(b"\xff\xfe not a stamp \x80")
    with (run / LOCK_NAME).open("rb+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with (
            pytest.raises(RunLockedError, match="being written by another process"),
            run_lock(run, "train"),
        ):
            pass
    (run / LOCK_NAME).write_bytes(b"[1, 2]")  # JSON, but not a stamp
    with run_lock(run, "train"):  # free again: taken, the stamp rewritten
        assert json.loads((run / LOCK_NAME).read_text())["verb"] == "train"


# --------------------------------------------- principle: every limit checked before work


@pytest.mark.parametrize(
    "bad, message",
    [
        (["--layers", "40-50"], "40"),
        (["--host", "no/such-model-here"], "no/such-model-here"),
        (["--dtype", "float7"], "float7"),
        (["--lr", "nan"], "lr must be a finite number"),
        (["--max-train-rows", "0"], "max_train_rows must be at least 1"),
        (["--data", "missing.csv"], "missing.csv"),
        # every limit checked before work: a range bounded before it is expanded, an IRM's size
        # before it is allocated
        (["--layers", "0-2000000000"], "..2000000000 are out of range: this host has layers 0.."),
        (["--width-mult", "1000000"], "Lower --width-mult or --depth"),
    ],
)
def test_every_limit_is_checked_before_work_a_failed_start_leaves_no_run(
    tmp_path, capsys, bad, message
):
    run = tmp_path / "x"
    assert main(["train", str(run), *S, *bad]) == 2
    assert message in capsys.readouterr().err
    assert not run.exists()
    assert main(["train", str(run), *S, "--max-steps", "1"]) == 0  # the retry is not refused


@pytest.mark.parametrize(("n", "split"), [(0, "train"), (1, "val"), (8, "val")])
def test_every_limit_is_checked_before_work_too_little_data(tmp_path, capsys, n, split):
    data = _qa_csv(tmp_path / "d.csv", n)
    run = tmp_path / "x"
    code = main(["train", str(run), *S, "--data", str(data), "--emotion", "custom"])
    assert code == 2
    err = capsys.readouterr().err
    assert str(data) in err and (f"no {split} rows" in err or "no rows" in err)
    assert not run.exists()


@pytest.mark.parametrize(
    "argv, option",
    [
        (["generate", "--prompt", "Hi", "--max-new-tokens", "0"], "--max-new-tokens"),
        (["generate", "--prompt", "Hi", "--top-k", "0"], "--top-k"),
        (["generate", "--prompt", "Hi", "--temperature", "-1"], "--temperature"),
        (["generate", "--prompt", "Hi", "--temperature", "nan"], "--temperature"),
        (["record", "r", "--max-new-tokens", "-3"], "--max-new-tokens"),
        (["record", "r", "--batch-size", "0"], "--batch-size"),
        (["evaluate", "r", "--max-rows", "0"], "--max-rows"),
        (["ablate", "r", "--index", "-1"], "--index"),
        (["train", "r", "--init", "zeros"], "--init"),
        (["train", "r", "--loss", "l2"], "--loss"),
    ],
)
def test_every_limit_is_checked_before_work_numbers_at_their_edges(capsys, argv, option):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert f"argument {option}" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["foo", "meta", "cuda:x"])
def test_every_limit_is_checked_before_work_a_device_torch_cannot_use(capsys, value):
    with pytest.raises(SystemExit) as done:
        main(["info", "tiny-random-llama", "--device", value])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "argument --device" in err and f"{value!r} is not a device" in err


def test_every_limit_is_checked_before_work_a_prompt_beyond_the_context(capsys):
    long_prompt = "What is the capital of France? " * 300
    argv = ["generate", "--host", "tiny-random-llama", "--device", "cpu", "--greedy"]
    assert main([*argv, "--prompt", long_prompt]) == 2
    err = capsys.readouterr().err
    assert "exceed the host's context of 256 tokens" in err and "--prompt" in err


@pytest.mark.parametrize("verb", ["evaluate", "ablate", "record"])
def test_every_limit_is_checked_before_work_generation_within_the_context(
    finished, tmp_path, capsys, verb
):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = _snapshot(run)
    argv = {
        "evaluate": ["evaluate", str(run)],
        "ablate": ["ablate", str(run), "--index", "1", "--no-png"],
        "record": ["record", str(run), "--max-rows", "1"],
    }[verb]
    assert main([*argv, "--max-new-tokens", "100000"]) == 2
    err = capsys.readouterr().err
    assert "exceed the host's context of 256 tokens" in err and "--max-new-tokens" in err
    assert _snapshot(run) == before  # nothing written


def test_every_limit_is_checked_before_work_spreadsheet_formulas_are_defused(tmp_path):
    from irm_lens.data.importers import read_qa_csv, write_qa_csv

    src = tmp_path / "src.csv"
    src.write_text(
        "question,answer\n"
        '"=1+1?","=cmd|\' /C calc\'!A0"\n'
        '"What is minus five?","-5 degrees, @everyone"\n'
        '"Plain?","Plain answer."\n'
    )
    frame, _ = read_qa_csv(src)
    out = tmp_path / "out.csv"
    write_qa_csv(frame, out)
    text = out.read_text()
    assert "'=cmd|" in text and "'=1+1?" in text and "'-5 degrees" in text
    assert '"=' not in text and ",=" not in text  # no cell starts with a formula
    back, _ = read_qa_csv(out)
    assert back["answer"].tolist() == frame["answer"].tolist()
    assert back["question"].tolist() == frame["question"].tolist()


def test_every_limit_is_checked_before_work_a_malicious_pickle_is_never_run(tmp_path, capsys):
    import torch

    from irm_lens.host import load_hf

    model, tokenizer = load_hf("tiny-random-llama")
    folder = tmp_path / "host"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "PAYLOAD-RAN"
    torch.save({"model.embed_tokens.weight": _Payload(marker)}, folder / "pytorch_model.bin")
    assert main(["info", str(folder), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "refused to load safely" in err and "weights_only=False" not in err
    assert "Traceback" not in err
    assert not marker.exists()


@pytest.mark.parametrize(
    "argv, option",
    [
        (["lens", "decode", "--index", "-1"], "--index"),
        (["lens", "decode", "--layer", "-2", "--neuron", "1"], "--layer"),
        (["lens", "channels", "--index", "-5"], "--index"),
        (["lens", "decode", "--index", "3", "--top", "0"], "--top"),
        (["analyze", "r", "--out", "o", "--top", "0"], "--top"),
        (["analyze", "r", "--out", "o", "--permutations", "0"], "--permutations"),
    ],
)
def test_every_limit_is_checked_before_work_lens_and_analyze_numbers(capsys, argv, option):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and f"argument {option}" in capsys.readouterr().err


def test_record_refuses_a_length_the_paper_sampling_would_ignore(finished, capsys):
    argv = ["record", str(finished), "--sampling", "paper", "--max-new-tokens", "5"]
    assert main(argv) == 2
    assert "--max-new-tokens does not apply to --sampling paper" in capsys.readouterr().err


def test_every_limit_is_checked_before_work_an_index_beyond_the_residual(finished, capsys):
    assert main(["ablate", str(finished), "--index", "64", "--no-generate"]) == 2
    assert "64" in capsys.readouterr().err


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--seeds", "1,x", "each item must be a whole number"),
        ("--l1", "nan", "finite"),
        ("--emotions", " , ", "is empty"),
        ("--l1", "-1", "finite and >= 0"),
        ("--layer-sets", "all,q9", "q9"),
        ("--layer-sets", "0-99", "4..99 are out of range"),
        ("--seeds", str(2**64 + 1), "at most 4294967295"),
        ("--emotions", "anger,fear", "'fear' not one of"),
        ("--losses", "next-token,t+3", "'t+3' not one of"),
    ],
)
def test_every_limit_is_checked_before_work_sweep_lists_name_the_option(
    tmp_path, capsys, option, value, message
):
    argv = ["sweep", str(tmp_path / "s"), "--host", "tiny-random-llama", "--dry-run"]
    assert main([*argv, option, value]) == 2
    err = capsys.readouterr().err
    assert option in err and message in err
    assert not (tmp_path / "s").exists()


def test_sweep_losses_both_means_every_objective(tmp_path, capsys):
    argv = ["sweep", str(tmp_path / "s"), "--host", "tiny-random-llama", "--dry-run"]
    assert main([*argv, "--emotions", "anger", "--losses", "both"]) == 0
    listed = capsys.readouterr().out
    assert "2 runs" in listed and "next-token" in listed and "paper" in listed


def test_every_limit_is_checked_before_work_data_synth_rows_within_the_context(tmp_path, capsys):
    src = tmp_path / "src.csv"
    src.write_text('question,answer\n"Why?","' + "very long answer " * 200 + '"\n')
    out = tmp_path / "out.csv"
    argv = ["data", "synth", str(src), str(out), "--emotion", "anger"]
    assert main([*argv, "--host", "tiny-random-llama", "--device", "cpu"]) == 2
    assert "exceed the host's context" in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------ principle: every failure one clear line


@pytest.mark.parametrize(
    "content, message",
    [(b"\xff\xfe\x00garbage", "not UTF-8"), (b'{"emotion": "anger", "lay', "Unterminated")],
)
def test_every_failure_one_clear_line_a_damaged_config_in_every_verb(
    finished, tmp_path, capsys, content, message
):
    run = tmp_path / "damaged"
    run.mkdir()
    for name in ("irm.safetensors", "last.safetensors", "summary.json", "metrics.csv"):
        (run / name).write_bytes((finished / name).read_bytes())
    (run / "config.json").write_bytes(content)
    for argv in (
        ["evaluate", str(run)],
        ["train", str(run), "--resume"],
        ["record", str(run)],
        ["ablate", str(run), "--index", "1"],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert str(run / "config.json") in err and message in err, (argv, err)
        assert "Traceback" not in err


@pytest.mark.parametrize(
    "damage, file, message",
    [
        ("truncate", "outputs.safetensors", "SHA-256 differs"),
        ("swap", "tokens.csv", "SHA-256 differs"),
        ("garbage", "recording.json", "not a recording description"),
        ("unhashed-truncate", "outputs.safetensors", "cannot be read"),
        ("unhashed-rows", "tokens.csv", "token rows"),
    ],
)
def test_every_failure_one_clear_line_a_damaged_recording(
    recordings, tmp_path, damage, file, message
):
    from irm_lens.errors import IrmLensError
    from irm_lens.record import load_recordings, save_recordings

    target = save_recordings(recordings, tmp_path / "rec")
    other = save_recordings(recordings[:1], tmp_path / "other")
    if damage.startswith("unhashed"):  # a recording from before hashes were kept
        info = json.loads((target / "recording.json").read_text())
        del info["files"]
        (target / "recording.json").write_text(json.dumps(info))
    path = target / file
    if damage.endswith("truncate"):
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "swap":
        path.write_bytes((other / file).read_bytes())
    elif damage == "garbage":
        path.write_bytes(b"\xff{not json")
    else:  # drop the last token row
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(lines[:-1]))
    with pytest.raises(IrmLensError) as caught:
        load_recordings(target)
    assert str(path) in str(caught.value) and message in str(caught.value)
    assert "record it again" in str(caught.value)


def test_every_failure_one_clear_line_a_corrupt_best_irm(finished, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    assert main(["record", str(run), "--max-new-tokens", "2", "--max-rows", "1"]) == 0
    irm = run / "irm.safetensors"
    irm.write_bytes(irm.read_bytes()[:-64])  # truncated: the header still parses
    capsys.readouterr()
    assert main(["train", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert str(irm) in err and "--overwrite" in err
    assert main(["analyze", str(run), "--no-png", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert str(irm) in err and "another IRM" not in err


@pytest.mark.parametrize("verb", sorted(WRITERS))
def test_every_failure_one_clear_line_under_a_file_size_limit(recorded, tmp_path, verb):
    """Each verb that writes, run under a file-size limit: exit 2, one line naming the file it
    could not write and what to do, no traceback, no temporary left beside its output."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(recorded, run)
    rows = pd.DataFrame({"question": [f"Question number {i}?" for i in range(60)]})
    rows.assign(answer="An answer long enough to pass the limit.").to_csv(run / "qa.csv")
    out = tmp_path / "out"
    argv = WRITERS[verb](run, out)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = _procs.call(_procs.CLI, argv, env=env, preexec=_limited, timeout=300)
    err = proc.stderr
    assert proc.returncode == 2, (proc.returncode, err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert "could not write it (File too large)" in last and str(tmp_path) in last, last
    assert "raise the file-size limit" in last
    leftovers = [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]
    assert not leftovers, leftovers


def test_every_failure_one_clear_line_a_second_ctrl_c_during_train(tmp_path, capsys, monkeypatch):
    """The first Ctrl-C asks training to stop after the step; a second one, within the step,
    stops it at once: one line (exit 130), no traceback, the progress bar's line ended, and the
    run resumes from what was written."""
    from irm_lens.training import train as training

    run = tmp_path / "run"
    step = training._Trainer._step

    def pressed_twice(self):  # Ctrl-C twice in the middle of the third step
        if self.prog.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return step(self)

    monkeypatch.setattr(training._Trainer, "_step", pressed_twice)
    argv = ["train", str(run), *S, "--max-steps", "4", "--eval-every", "1"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.endswith(
        "\nirm-lens train: interrupted; files already written are complete, run the command "
        "again to go on.\n"
    )
    monkeypatch.setattr(training._Trainer, "_step", step)
    assert main(["train", str(run), "--resume"]) == 0
    assert json.loads((run / "summary.json").read_text())["steps"] == 4


def test_every_failure_one_clear_line_the_host_cache_on_a_full_disk(tmp_path):
    """Loading a host writes derived files (the tiny host's tokenizer, the embedded host's
    dequantized weights) into the cache: when that disk is full, the line names the cache
    folder and IRM_LENS_CACHE."""
    cache = tmp_path / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "IRM_LENS_CACHE": str(cache)}
    argv = ["info", "--host", "tiny-random-llama"]
    proc = _procs.call(_procs.CLI, argv, env=env, preexec=_limited, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert f"{cache}" in last and "could not write it (File too large)" in last, last
    assert "IRM_LENS_CACHE" in last
    assert not [p for p in cache.rglob("*") if p.is_file()]  # nothing half-written is kept


@pytest.mark.parametrize(
    ("key", "value"),
    [("progress", "{not json"), ("progress", '["step"]'), ("metrics", None)],
)
def test_every_failure_one_clear_line_a_damaged_training_state(
    finished, tmp_path, capsys, key, value
):
    """A training state whose header was edited or damaged: resume names the file, no traceback."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    state = run / "last.safetensors"

    def damage(meta: dict[str, str]) -> None:
        if value is None:
            del meta[key]
        else:
            meta[key] = value

    _rewrite_header(state, damage)
    assert main(["train", str(run), "--resume", "--max-steps", "4"]) == 2
    err = capsys.readouterr().err
    assert f"{state}: the training state's header is damaged" in err and "--overwrite" in err


def test_every_failure_one_clear_line_a_damaged_run_summary_in_a_sweep(tmp_path, capsys):
    """A finished run's summary.json damaged: the sweep names it and says what to do, which
    works."""
    argv = ["sweep", str(tmp_path / "sw"), "--emotions", "anger", *S[:2], "--preset", "smoke"]
    argv += ["--device", "cpu"]
    assert main(argv) == 0
    summary = next((tmp_path / "sw").glob("*/summary.json"))
    summary.write_text('{"steps": 4')
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{summary}: not a run summary" in err and "Delete it" in err
    summary.unlink()
    assert main(argv) == 0
    assert json.loads(summary.read_text())["steps"] > 0


# ------------------------------------------- the workflow (not a hostile-input principle)


def test_the_workflow_leads_ablate_takes_the_runs_own_top_index(finished, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    ablate = ["ablate", str(run), "--index", "top", "--no-generate", "--no-png"]
    assert main(ablate) == 2
    assert f"irm-lens record {run}" in capsys.readouterr().err  # says what to run first
    assert main(["record", str(run), "--max-new-tokens", "2", "--max-rows", "2"]) == 0
    assert f"next: irm-lens analyze {run}" in capsys.readouterr().out
    from irm_lens.cli.recorded import top_index

    top = top_index(run)
    assert main(ablate) == 0
    assert f"the run's top index is {top}" in capsys.readouterr().out
    assert (run / f"ablation_index{top}" / "ablation.csv").exists()
