"""``make figures``: the whole pipeline on the tiny host (FAST=1), its cache, and bad input."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from analyses import _config as figures_config
from analyses import _runset as runset
from analyses.__main__ import RESULTS
from analyses._config import FiguresConfig, FiguresConfigError
from analyses._runset import ensure_runs, null_seeds, run_specs, stage_done
from analyses._summaries import (
    HostProfileSummary,
    LogitAttributionSummary,
    MediationSummary,
    PropagationSummary,
    ResidualControlSummary,
    RotationSummary,
    StriationSummary,
    TrajectorySummary,
    from_dict,
    read_typed,
)
from analyses.baselines import SMOKE_SCALES
from analyses.report import claims
from analyses.report import trajectory as report_trajectory
from analyses.report.explain import explain_verdicts
from analyses.report.mechanism import mechanism_verdicts
from analyses.rules import paper as verdicts
from analyses.rules.base import Verdict
from analyses.rules.explain import PADDING_VERDICTS
from analyses.rules.mechanism import BASIS_VERDICTS, MASKING_VERDICTS, OPTIMIZER_VERDICTS
from analyses.rules.steering import VECTOR_VERDICTS
from analyses.subspace import PAIRS as SUBSPACE_PAIRS
from irm_lens.errors import IrmLensError
from tests import _procs

ROOT = Path(__file__).resolve().parents[1]
VERDICTS = verdicts.VERDICTS


def _figures(tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {
        **os.environ,
        "FAST": "1",
        "FIGURES_DIR": str(tmp / "figures"),
        "IRM_LENS_RUNS": str(tmp / "runs"),
        **env,
    }
    return _procs.call(_procs.FIGURES, ["--no-progress", *args], cwd=ROOT, env=full, timeout=900)


def _figures_here(tmp: Path, monkeypatch, capsys, **env: str) -> tuple[int, str]:
    """``python -m analyses`` in this process (for runs that fail before any work)."""
    from analyses.__main__ import cli

    settings = {
        "FAST": "1",
        "FIGURES_DIR": str(tmp / "figures"),
        "IRM_LENS_RUNS": str(tmp / "runs"),
        **env,
    }
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    code = cli(["--no-progress"])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("fast")
    return tmp, _figures(tmp)


def _tier(
    fast_run: tuple[Path, subprocess.CompletedProcess], tier: str
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The fast run's folder and ``make figures TIER=tier`` run on it (both must succeed)."""
    tmp, first = fast_run
    assert first.returncode == 0
    proc = _figures(tmp, TIER=tier)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, proc


def _without_runs(tmp: Path, tier: str, runs: str) -> subprocess.CompletedProcess[str]:
    """``make figures TIER=tier`` again after deleting the run directories that match the glob
    ``runs``: the committed result is the cache of record, so it succeeds and trains none again
    (the caller checks its output says so)."""
    for run_dir in (tmp / "runs").glob(runs):
        shutil.rmtree(run_dir)
    again = _figures(tmp, TIER=tier)
    assert again.returncode == 0, again.stderr[-3000:]
    assert not list((tmp / "runs").glob(runs))
    return again


@pytest.mark.slow
def test_fast_run_writes_every_result_and_the_report(fast_run):
    tmp, proc = fast_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp / "figures"
    specs = run_specs(FiguresConfig.smoke())
    for result in RESULTS[:-1]:
        target = out / result
        data = pd.read_csv(target / "data.csv")
        assert len(data) > 0, result
        assert (target / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", result
        assert "plotly" in (target / "figure.html").read_text()[:20000].lower(), result
        config = json.loads((target / "config.json").read_text())
        assert config["figures_config"]["fast"] is True and config["summary"], result
    atlas = sorted(p.stem for p in (out / "atlas").glob("*.html") if p.stem != "figure")
    assert atlas == sorted(s.name for s in specs if not s.null)  # the null is recorded only
    nulls = [s.name for s in specs if not s.trained]
    assert len(nulls) == FiguresConfig.smoke().null_irms and nulls[0] == "untrained_s42"
    striation = json.loads((out / "striation" / "config.json").read_text())["summary"]
    assert len(striation["null_index_shares"]) == len(nulls)
    # the per-run tables behind the large data.csv files and every specificity CI
    assert set(pd.read_csv(out / "fig3_timing" / "runs.csv")["run"]) >= set(nulls)
    nll = pd.read_csv(out / "evaluation" / "specificity.csv")
    assert set(nll["offset"]) == {1, 2}  # the original's loss is judged on t+2 too
    assert set(nll.loc[nll["offset"] == 2, "run"]) == {
        s.name for s in specs if s.kind == "paper loss"
    }
    config = json.loads((out / "striation" / "config.json").read_text())
    assert "cache" not in config["figures_config"] and "out" not in config["figures_config"]
    assert all("/" not in r["directory"] and "loss" in r for r in config["runs"].values())
    assert (out / "atlas" / "plotly.min.js").stat().st_size > 1_000_000
    text = (out / "REPORT.md").read_text()
    written = json.loads((out / "verdicts.json").read_text())
    original = written.pop(claims.ORIGINAL_LOSS)
    long = written.pop(claims.LONG_TIER)
    tiers = {*mechanism_verdicts(), *explain_verdicts(out)}
    paper_claims = {k: v for k, v in written.items() if k not in tiers}
    assert len(paper_claims) == 6 and set(paper_claims.values()) <= set(VERDICTS)
    assert set(original) == set(paper_claims) and set(original.values()) <= set(VERDICTS)
    assert set(long) == set(paper_claims) and set(long.values()) == {"not run"}  # no long tier
    for claim, verdict in paper_claims.items():
        assert f" | **{verdict}** | {original[claim]} | not run | " in text
        assert f"| {claim} | " in text
    assert set(written.values()) - set(paper_claims.values()) <= {"not run"}
    assert "### How the verdicts are decided" in text
    assert "A cold `make figures` (nothing cached;" in text and "run set" in text
    cold = json.loads((out / "costs.json").read_text())
    assert set(cold["timings"]) == {"run set", *RESULTS[:-1]}
    assert "Not run here: `make figures TIER=mechanism`" in text
    assert "Not run here: `make figures TIER=long`" in text
    # numbers in the report are the ones the results wrote
    striation = json.loads((out / "striation" / "config.json").read_text())["summary"]
    assert f"{striation['index_share_median']:.3f}" in text
    assert "tiny-random-llama" in text and "## Neuron-level lenses on the dominant index" in text
    # every run's specificity, with its CI and a verdict, in the summary and the report
    evaluation = json.loads((out / "evaluation" / "config.json").read_text())["summary"]
    assert set(evaluation["specificity"]) == {s.name for s in specs if not s.null}
    for run, spec in evaluation["specificity"].items():
        assert spec["verdict"] in ("aligned", "not aligned", "not tested"), run
        objective = evaluation["objective"][run]
        assert f"| {run} | {spec['emotion']} | {objective} | {spec['n_questions']} |" in text
    assert evaluation["voice_accuracy"]["full"]["low"] > 0.25  # the classifier beats chance
    assert "**Specificity**" in text
    # every trained run measured again without the questions its best-IRM selection read
    trained = {s.name for s in specs if s.trained}
    assert set(evaluation["unselected"]) == trained
    for run, u in evaluation["unselected"].items():
        assert 0 < u["n_questions"] < evaluation["specificity"][run]["n_questions"], run
    assert f"/{len(trained)} trained runs keep their verdict" in text


@pytest.mark.slow
def test_second_run_reuses_every_cached_run(fast_run):
    tmp, first = fast_run
    assert first.returncode == 0
    irm = next((tmp / "runs").glob("anger_s42-*")) / "irm.safetensors"
    before = irm.stat().st_mtime_ns
    proc = _figures(tmp, "--only", "striation,report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_lines = [line for line in proc.stdout.splitlines() if line.startswith("[run ")]
    assert len(run_lines) == len(run_specs(FiguresConfig.smoke()))
    assert all(": cached" in line for line in run_lines), run_lines
    assert irm.stat().st_mtime_ns == before
    cold = json.loads((tmp / "figures" / "costs.json").read_text())  # the cold cost is kept
    assert "fig2_heatmaps" in cold["timings"]
    text = (tmp / "figures" / "REPORT.md").read_text()
    assert "A cold `make figures`" in text and "This invocation (partly cached)" in text


@pytest.mark.slow
def test_mechanism_tier_profiles_rotates_and_reports(fast_run):
    tmp, _ = _tier(fast_run, "mechanism")
    out = tmp / "figures"
    for result in ("index_profile", "rotation", "masked", "matrix"):
        assert (out / result / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", result
        assert len(pd.read_csv(out / result / "data.csv")) > 0, result
    rotation = json.loads((out / "rotation" / "config.json").read_text())["summary"]
    assert rotation["basis"]["verdict"] in BASIS_VERDICTS
    assert rotation["optimizer"]["verdict"] in OPTIMIZER_VERDICTS
    runs = {r["run"] for r in rotation["by_run"]}
    assert {"anger_rotated_s42", "untrained_rotated_s42", "anger_sgd_s42", "anger_s42"} <= runs
    assert "anger_sgdlow_s42" in runs and rotation["sgd_lr_used"] in rotation["sgd_lrs"]
    assert "untrained_sgd_s42" not in runs  # the same untrained IRM: the main set's baseline
    # every rule reads a null of the run set's size, on each host: the main set's (cached) and
    # one built on the rotated host
    null = [r["run"] for r in rotation["by_run"] if not r["trained"] and r["basis"] == "host basis"]
    n = len(null_seeds(FiguresConfig.from_env({"FAST": "1"})))
    assert n >= 3 and {"untrained_s1", "untrained_rotated_s1", "untrained_rotated_s2"} <= set(null)
    assert f"null n={n}" in rotation["basis"]["reason"]
    rotated_dir = next((tmp / "runs").glob("anger_rotated_s42-*"))
    host = json.loads((rotated_dir / "config.json").read_text())["host"]
    assert host == "tiny-random-llama+rotated0"
    sgd_dir = next((tmp / "runs").glob("anger_sgd_s42-*"))
    assert json.loads((sgd_dir / "config.json").read_text())["optimizer"] == "sgd"
    text = (out / "REPORT.md").read_text()
    written = json.loads((out / "verdicts.json").read_text())
    basis_claim = next(iter(mechanism_verdicts()))
    assert written[basis_claim] == rotation["basis"]["verdict"]
    assert f"**Where the dominant coordinate comes from: {rotation['basis']['verdict']}.**" in text
    assert "| rotated host, Adam | anger_rotated_s42 |" in text
    assert f"| rotated host, Adam | untrained null (n={n}) | control |" in text
    masked = json.loads((out / "masked" / "config.json").read_text())["summary"]
    assert masked["verdict"]["verdict"] in MASKING_VERDICTS and len(masked["masked_top"]) == 5
    assert not set(masked["masked_top"]) & set(masked["masked_random"])
    masked_dir = next((tmp / "runs").glob("anger_masktop_s42-*"))
    assert json.loads((masked_dir / "config.json").read_text())["masked"] == masked["masked_top"]
    assert f"**Are the dominant indices needed: {masked['verdict']['verdict']}.**" in text
    matrix = json.loads((out / "matrix" / "config.json").read_text())["summary"]
    sets = {r["layer_set"] for r in matrix["by_run"]}
    assert sets == {"q1", "q2", "q3", "q4", "every4", "all", "all + L1"}
    q1_dir = next((tmp / "runs").glob("anger_layersq1_s42-*"))
    assert json.loads((q1_dir / "config.json").read_text())["layers"] == "q1"
    for claim in mechanism_verdicts():
        assert written[claim] != "not run", claim  # every mechanism result ran
    assert (
        f"**Earlier layer sets get larger outputs: {matrix['early_layers']['verdict']}.**" in text
    )


@pytest.mark.slow
def test_long_tier_writes_a_trajectory_and_picks_a_budget(fast_run):
    tmp, proc = _tier(fast_run, "long")
    assert "run set ready" not in proc.stdout  # the long tier trains only its own runs
    out = tmp / "figures" / "trajectory"
    assert (out / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = pd.read_csv(out / "data.csv")
    runs = [
        "anger_long_s42",
        "sadness_long_s42",
        "joy_long_s42",
        "neutral_long_s42",
        "anger_paperloss_long_s42",
    ]
    assert list(data["run"].unique()) == runs
    assert sorted(data["step"].unique()) == [0, 2, 4]
    assert set(data.loc[data["run"] == runs[-1], "kind"]) == {"paper loss"}
    untrained = data[data["step"] == 0]
    assert (untrained["specificity"].abs() < 1e-4).all()  # step 0: the IRM before training
    assert data["verdict"].isin(["aligned", "not aligned", "not tested"]).all()
    summary = json.loads((out / "config.json").read_text())["summary"]
    assert summary["finished"] is True and summary["schedule"] == [0, 2, 4]
    assert summary["n_emotions"] == 4 and set(summary["aligned_by_step"]) == {"2", "4"}
    steps = [s for s, n in summary["aligned_by_step"].items() if n == 4]
    assert summary["budget_step"] == (int(min(steps)) if steps else None)
    assert set(pd.read_csv(out / "losses.csv")["run"]) == set(runs)
    paper_dir = next((tmp / "runs").glob("anger_paperloss_long_s42-*"))
    config = json.loads((paper_dir / "config.json").read_text())
    assert (config["prompt_mode"], config["lr"], config["grad_accum"]) == ("plain", 1e-4, 2)
    assert len(list((paper_dir / "snapshots").glob("step-*.safetensors"))) == 3
    again = _without_runs(tmp, "long", "*_long_s42-*")
    assert "[run " not in again.stdout
    pd.testing.assert_frame_equal(pd.read_csv(out / "data.csv"), data)
    assert (
        json.loads((out / "config.json").read_text())["summary"]["budget_step"]
        == (summary["budget_step"])
    )
    # the report cites it
    report_run = _figures(tmp, "--only", "report")
    assert report_run.returncode == 0, report_run.stderr[-3000:]
    text = (tmp / "figures" / "REPORT.md").read_text()
    assert "## Training budget: the trajectory (`make figures TIER=long`)" in text
    assert "| anger_long_s42 | 2 |" in text and "| anger_paperloss_long_s42 | 4 |" in text
    assert "Lowest validation loss: anger_long_s42 " in text
    # the verdict table's long-tier column: striation, consistency and dominance at the runs'
    # best IRMs
    long = json.loads((tmp / "figures" / "verdicts.json").read_text())[claims.LONG_TIER]
    measured = {k: v for k, v in long.items() if v != "not run"}
    assert len(measured) == 3 and set(measured.values()) <= set(VERDICTS)
    for claim, verdict in measured.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| {claim} | "))
        assert row.split(" | ")[-2] == verdict, row


@pytest.mark.slow
def test_the_report_is_rewritten_from_committed_results_without_the_run_cache(fast_run):
    tmp, first = fast_run
    assert first.returncode == 0
    before = (tmp / "figures" / "REPORT.md").read_text()
    costs = json.loads((tmp / "figures" / "costs.json").read_text())
    assert set(costs["stages"]) >= {"anger_s42", "untrained_s42"}  # kept by the cold run
    proc = _figures(tmp, "--only", "report", IRM_LENS_RUNS=str(tmp / "no-runs"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "run set ready" not in proc.stdout and not any((tmp / "no-runs").glob("*-*"))
    after = (tmp / "figures" / "REPORT.md").read_text()
    assert "The run cache is not here: as `costs.json` kept them" in after
    train_s = round(costs["stages"]["anger_s42"]["train_s"])
    assert f"| anger_s42 | next-token | {train_s} |" in after
    strip = lambda text: text[: text.index("## Cost of this run")]  # noqa: E731
    assert strip(after) == strip(before)  # the same report, from the same results


@pytest.mark.slow
def test_a_run_of_the_long_tier_under_another_key_stands_until_redone(fast_run, monkeypatch):
    """A tier whose settings changed (a longer schedule, say) shows each run's earlier rows,
    marked as such, until that run is trained and measured again."""
    import analyses.trajectory as trajectory
    from analyses.__main__ import cli

    tmp, first = fast_run
    assert first.returncode == 0
    out = tmp / "figures" / "trajectory"
    if not (out / "data.csv").exists():
        assert _figures(tmp, TIER="long").returncode == 0
    data = pd.read_csv(out / "data.csv")
    run = "neutral_long_s42"
    key = data.loc[data["run"] == run, "key"].iloc[0]
    data.loc[data["run"] == run, "key"] = "0" * 12  # as if measured under other settings
    data.to_csv(out / "data.csv", index=False)

    class Stopped(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stopped

    monkeypatch.setattr(trajectory, "run_measures", stop)  # stop before training anything
    settings = {
        "FAST": "1",
        "FIGURES_DIR": str(tmp / "figures"),
        "TIER": "long",
        "IRM_LENS_RUNS": str(tmp / "runs"),
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(Stopped):
        cli(["--no-progress"])
    summary = json.loads((out / "config.json").read_text())["summary"]
    assert summary["earlier"] == [run] and summary["finished"] is False
    assert run in summary["runs"] and run in pd.read_csv(out / "data.csv")["run"].tolist()
    assert _figures(tmp, "--only", "report").returncode == 0
    assert (
        f"{run}: the rows of an earlier invocation" in (tmp / "figures" / "REPORT.md").read_text()
    )
    monkeypatch.undo()
    again = _figures(tmp, TIER="long")  # trains and measures that run again
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"[run 1/1] {run}" in again.stdout
    summary = json.loads((out / "config.json").read_text())["summary"]
    assert summary["earlier"] == [] and summary["finished"] is True
    redone = pd.read_csv(out / "data.csv")
    assert set(redone.loc[redone["run"] == run, "key"]) == {key}
    # the run's best IRM: its snapshot's row where the best step is on the schedule ...
    rows = redone[redone["run"] == run]
    best = rows[rows["irm"] == "best"]
    assert len(best) == 1 and len(rows) == 4  # snapshots 0, 2, 4 and the best
    best_step = int(best["step"].iloc[0])
    same = rows[(rows["irm"] == "snapshot") & (rows["step"] == best_step)]
    assert same["specificity"].tolist() == best["specificity"].tolist()
    # ... else measured apart, from irm.safetensors (here the same IRM: equal measures)
    from analyses._common import Context
    from analyses._config import FiguresConfig

    ctx = Context(FiguresConfig.from_env({**settings, "TIER": ""}), progress=False)
    upto = ctx.subset([s for s in trajectory.long_specs(ctx) if s.name == run])
    summary_path = upto.runs[run] / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary_path.write_text(json.dumps({**summary, "best_step": 3}))  # as if it were off-schedule
    apart = trajectory.best_measures(upto, run, {}, rows[rows["irm"] == "snapshot"])
    assert apart["step"].tolist() == [3] and apart["irm"].tolist() == ["best"]
    assert apart["specificity"].iloc[0] == pytest.approx(same["specificity"].iloc[0], abs=1e-6)
    assert apart["top_index"].iloc[0] == same["top_index"].iloc[0]


@pytest.mark.slow
def test_a_missing_stage_is_redone_alone(fast_run, tiny_host):
    tmp, first = fast_run
    assert first.returncode == 0
    figures = FiguresConfig.from_env({"FAST": "1", "IRM_LENS_RUNS": str(tmp / "runs")})
    spec = run_specs(figures)[1]
    run_dir = spec.directory(figures)
    marker = run_dir / "recordings" / "heldout" / "recording.json"
    marker.unlink()  # as if the process died while recording
    assert stage_done(run_dir, "train") and not stage_done(run_dir, "record")
    lines: list[str] = []
    ensure_runs(figures, tiny_host, specs=[spec], progress=False, log=lines.append)
    assert lines == [f"[run 1/1] {spec.name} ({spec.kind}): record  [{run_dir}]"]
    assert marker.exists() and stage_done(run_dir, "evaluate")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HOST": "no-such-org/no-such-model"}, "Unknown host 'no-such-org/no-such-model'"),
        ({"DEVICE": "cuda"}, "DEVICE=cuda but torch"),
        ({"SEEDS": "42,x"}, "SEEDS='42,x': give whole numbers"),
        ({"PRESET": "huge"}, "PRESET='huge'; use one of"),
        ({"EMOTIONS": "anger,fear"}, "EMOTIONS has ['fear']"),
    ],
)
def test_bad_settings_fail_clearly_and_leave_no_runs(tmp_path, monkeypatch, capsys, env, message):
    if env.get("DEVICE") == "cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    code, stderr = _figures_here(tmp_path, monkeypatch, capsys, **env)
    assert code == 2, stderr[-2000:]  # (an uncaught exception would fail the test itself)
    assert message in stderr
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir())


def test_unwritable_figures_directory(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, stderr = _figures_here(
        tmp_path, monkeypatch, capsys, FIGURES_DIR=str(blocker / "figures")
    )
    assert code == 2
    assert "Cannot write results to" in stderr and "FIGURES_DIR" in stderr


def test_make_passes_only_the_variables_given():
    proc = subprocess.run(
        ["make", "--no-print-directory", "-n", "figures", "FAST=1", "SEEDS=7,8"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "FAST='1'" in proc.stdout and "SEEDS='7,8'" in proc.stdout
    assert "-m analyses" in proc.stdout and "HOST=" not in proc.stdout


def test_figures_config_from_environment():
    assert FiguresConfig.from_env({}) == FiguresConfig()
    cfg = FiguresConfig.from_env({"SEEDS": "1, 2 3", "EMOTIONS": "joy", "HOST": " ", "FAST": "0"})
    assert cfg.seeds == (1, 2, 3) and cfg.emotions == ("joy",) and cfg.host is None
    fast = FiguresConfig.from_env({"FAST": "1", "PRESET": "quick"})
    assert fast.host == "tiny-random-llama" and fast.preset == "quick" and fast.fast
    names = [s.name for s in run_specs(cfg)]
    assert names[:5] == ["joy_s1", "joy_s2", "joy_s3", "joy_paperloss_s1", "untrained_s1"]
    # the untrained null: each training seed's own, then the first free seeds, to 10
    nulls = [s for s in run_specs(cfg) if not s.trained]
    assert [s.config.seed for s in nulls] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert [s.null for s in nulls] == [False] + [True] * 9
    assert nulls[1].stages == ("train", "record") and nulls[0].stages == runset.STAGES
    with pytest.raises(FiguresConfigError, match="null_irms=0"):
        FiguresConfig(null_irms=0)
    with pytest.raises(FiguresConfigError, match="SEEDS is empty"):
        FiguresConfig(seeds=())


def test_cache_key_follows_the_config():
    base = FiguresConfig()
    spec = run_specs(base)[0]
    assert spec.directory(base) == spec.directory(FiguresConfig())
    other = run_specs(FiguresConfig(preset="paper"))[0]
    assert other.directory(base) != spec.directory(base)
    more_rows = FiguresConfig(eval_rows=base.eval_rows + 1)
    assert spec.directory(more_rows) != spec.directory(base)
    # A field added later keys a run only when set, so earlier runs keep their cache.
    sgd = dataclasses.replace(spec, config=dataclasses.replace(spec.config, optimizer="sgd"))
    assert sgd.directory(base) != spec.directory(base)
    assert "optimizer" not in runset._keyed_config(spec.config)


def _rule(verdict: str) -> Verdict:
    return Verdict(verdict, f"because {verdict}", {})


PROPAGATION = PropagationSummary(
    dominant_index=7,
    positions="after the first",
    linearity_median=1.0,
    persistence_median={"7": 1.0},
    random_persistence_median=1.0,
    final_layer_persistence={"7": 1.0},
    irm_run="anger_s42",
    irm_carried_median=0.99,
    irm_leak_median=0.01,
)


STRIATION = StriationSummary(
    n_trained=8,
    n_headline=4,
    headline_aligned=True,
    index_share_median=0.15,
    layer_share_median=0.07,
    index_over_layer_runs=4,
    significant_runs=4,
    cross_layer_corr_median=0.13,
    untrained_index_share=0.03,
    untrained_cross_layer_corr=0.0,
    null_index_shares=[0.03, 0.035],
    null_layer_shares=[0.01, 0.01],
    null_cross_layer_corrs=[0.0, 0.01],
    signed_index_share_median=0.2,
    signed_layer_share_median=0.05,
    above_untrained_runs=4,
    p_min_possible=0.005,
    rules={"next-token": _rule(verdicts.PARTLY), "paper loss": _rule(verdicts.NOT_TESTED)},
)


def test_report_claims_take_each_kinds_rule():
    rules, text = claims.striation_claim(STRIATION)
    assert rules["next-token"].verdict == verdicts.PARTLY
    assert rules["paper loss"].verdict == verdicts.NOT_TESTED and "0.150" in text
    assert "median over the 4 aligned next-token runs" in text
    # the residual control decides; without it: not tested, saying why
    rules, _ = claims.residual_claim(PROPAGATION, None, STRIATION.rules)
    assert rules["next-token"] == Verdict(
        verdicts.NOT_TESTED, "the rotated-injection control was not run", {}
    )
    assert rules["paper loss"].reason == "no stripes to explain"
    control = ResidualControlSummary(
        control_share=0.03,
        null_shares=[0.03, 0.035],
        by_run=[],
        shares={
            "next-token": {"delta": [0.2, 0.25], "output": [0.03, 0.04]},
            "paper loss": {"delta": [0.03, 0.03], "output": [0.03, 0.04]},
        },
    )
    rules, _ = claims.residual_claim(PROPAGATION, control, STRIATION.rules)
    assert rules["next-token"].verdict == verdicts.REPRODUCED
    assert rules["paper loss"].verdict == verdicts.NOT_TESTED  # no stripes there
    host = HostProfileSummary(
        d_model=16,
        massive_dims=[],
        dominant_index=7,
        dominant_is_massive=False,
        indices={"7": {"final_gain": 0.5, "final_gain_rank": 1, "max_over_median": 3.0}},
        median_final_gain=1.0,
        smallest_gain_index=7,
    )
    logits = LogitAttributionSummary(
        dominant_index=7,
        d_model=16,
        entropy_shift_x8={"7": 0.5},
        random_indices=[1, 2],
        random_entropy_shift_x8_median=0.1,
        direct_effect_rank={"7": 1},
        massive_index=None,
        direct_max_abs_effect={"7": 0.1},
        direct_top_promoted={"7": []},
        share_of_predicted_logit_median={"7": 0.02},
        centred_share_of_predicted_logit_median={"7": 0.02},
        norm={},
    )
    dominance = {"next-token": _rule(verdicts.REPRODUCED), "paper loss": _rule(verdicts.NOT)}
    mediation = MediationSummary(
        dominant_index=7,
        lever_percentile=0.99,
        lever_dominant=0.5,
        lever_median=0.01,
        lever_top_indices=[7, 2],
        massive_index=None,
        lever_massive_percentile=None,
        n_positions=54,
        by_kind={"next-token": {"gains": [0.3, 0.3], "frozen_gains": [0.1, 0.1]}},
    )
    rules, text = claims.lm_head_claim(host, logits, mediation, dominance)
    assert rules["next-token"].verdict == verdicts.REPRODUCED and "+0.500 nats" in text
    assert "entropy lever beats 99.0 % of them" in text
    assert rules["paper loss"].verdict == verdicts.NOT_TESTED
    assert "no subject" in rules["paper loss"].reason


def test_typed_summaries_round_trip_and_refuse_old_ones(tmp_path):
    target = tmp_path / "propagation"
    target.mkdir()
    (target / "config.json").write_text(json.dumps({"summary": dataclasses.asdict(PROPAGATION)}))
    assert read_typed(tmp_path, "propagation", PropagationSummary) == PROPAGATION
    assert read_typed(tmp_path, "striation", StriationSummary) is None  # not run
    old = dataclasses.asdict(PROPAGATION)
    del old["linearity_median"]
    (target / "config.json").write_text(json.dumps({"summary": old}))
    with pytest.raises(
        IrmLensError,
        match=r"propagation/config.json: the summary lacks "
        r"\['linearity_median'\]",
    ):
        read_typed(tmp_path, "propagation", PropagationSummary)
    rules = {"next-token": dataclasses.asdict(_rule(verdicts.PARTLY))}
    summary = from_dict(
        StriationSummary,
        {
            **dataclasses.asdict(dataclasses.replace(STRIATION, rules={})),
            "rules": rules,
        },
        "test",
    )
    assert summary.rules["next-token"] == _rule(verdicts.PARTLY)  # rebuilt as a Verdict
    # a field with a default (added later) may be absent from an older summary
    trajectory = json.loads((ROOT / "figures" / "trajectory" / "config.json").read_text())
    raw = {k: v for k, v in trajectory["summary"].items() if k != "earlier"}
    assert from_dict(TrajectorySummary, raw, "test").earlier == []


TYPED = {
    "striation": "StriationSummary",
    "dominant_index": "DominanceSummary",
    "fig3_timing": "TimingSummary",
    "propagation": "PropagationSummary",
    "residual_control": "ResidualControlSummary",
    "mediation": "MediationSummary",
    "host_profile": "HostProfileSummary",
    "logit_attribution": "LogitAttributionSummary",
    "ablation": "AblationSummary",
    "evaluation": "EvaluationSummary",
    "fig4_comparison": "Fig4ComparisonSummary",
    "lenses": "LensesSummary",
    "rotation": "RotationSummary",
    "masked": "MaskedSummary",
    "matrix": "MatrixSummary",
    "trajectory": "TrajectorySummary",
    "explain": "ExplainSummary",
    "steering": "SteeringSummary",
    "baselines": "BaselinesSummary",
    "subspace": "SubspaceSummary",
    "predict": "PredictSummary",
    "longer": "LongerSummary",
    "why": "WhySummary",
}


# Results trained across sessions, one run at a time: until the first run is committed there is
# nothing to read back (the report says "not run"); from then on they must read back typed.
GROWING = {"longer"}


@pytest.mark.parametrize(
    "result",
    [
        pytest.param(
            r,
            marks=pytest.mark.skipif(
                r in GROWING and not (ROOT / "figures" / r / "config.json").exists(),
                reason=f"figures/{r}: no run committed yet (make figures TIER=explain)",
            ),
        )
        for r in sorted(TYPED)
    ],
)
def test_every_committed_summary_reads_back_typed(result):
    """The committed figures/ (the cache of record) read with this code's typed summaries;
    verdicts come back as ``Verdict``s."""
    from analyses import _summaries

    cls = getattr(_summaries, TYPED[result])
    summary = read_typed(ROOT / "figures", result, cls)
    assert isinstance(summary, cls), f"figures/{result} was not committed"
    for field in dataclasses.fields(summary):
        value = getattr(summary, field.name)
        if field.type in ("Verdict", "Rules"):
            verdicts_in = [value] if field.type == "Verdict" else list(value.values())
            assert verdicts_in and all(isinstance(v, Verdict) for v in verdicts_in), field.name


def test_mechanism_verdicts_are_not_run_without_their_results():
    assert set(mechanism_verdicts().values()) == {"not run"}
    rotation = read_typed(ROOT / "figures", "rotation", RotationSummary)
    assert rotation is not None
    written = mechanism_verdicts(rotation)
    assert written["Where the dominant coordinate comes from (rotated-basis host)"] == (
        rotation.basis.verdict
    )
    assert list(written.values()).count("not run") == 3


def test_a_longer_schedule_extends_the_cached_shorter_run(tmp_path, tiny_host, monkeypatch):
    import torch
    from safetensors.torch import load_file

    import irm_lens.training.train as train_module
    from irm_lens.training.train import train

    figures = FiguresConfig.from_env({"FAST": "1", "IRM_LENS_RUNS": str(tmp_path / "runs")})
    base = run_specs(figures)[0]
    short_config = dataclasses.replace(
        base.config, max_steps=4, eval_every=2, epochs=3, snapshots=(0, 2, 4)
    )
    short = dataclasses.replace(base, name="anger_long", config=short_config)
    long = dataclasses.replace(
        short, config=dataclasses.replace(short_config, max_steps=8, snapshots=(0, 2, 4, 8))
    )
    assert short.directory(figures) != long.directory(figures)  # keyed by config
    steps: list[int] = []
    real_step = train_module._Trainer._step

    def counted(self):
        steps.append(self.prog.step + 1)
        return real_step(self)

    monkeypatch.setattr(train_module._Trainer, "_step", counted)
    for spec in (short, long):
        run_dir = spec.directory(figures)
        run_dir.mkdir(parents=True)
        runset._train(spec, run_dir, tiny_host, figures, progress=False)
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]  # the longer run trained only its last 4 steps
    assert stage_done(short.directory(figures), "train")  # the shorter run stays as it was
    monkeypatch.setattr(train_module._Trainer, "_step", real_step)
    train(long.config, tmp_path / "straight", host=tiny_host, progress=False)
    names = [
        "irm.safetensors",
        "last.safetensors",
        "snapshots/step-000008.safetensors",
        "snapshots/step-000002.safetensors",
    ]
    for name in names:  # the tensors (the state's header also keeps tokens/s)
        a = load_file(str(tmp_path / "straight" / name))
        b = load_file(str(long.directory(figures) / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_a_resumed_run_counts_its_seconds_per_step_from_where_it_resumed(tmp_path, tiny_host):
    import signal

    from analyses.trajectory import seconds_per_step
    from irm_lens.training.train import train

    figures = FiguresConfig.from_env({"FAST": "1", "IRM_LENS_RUNS": str(tmp_path / "runs")})
    spec = dataclasses.replace(
        run_specs(figures)[0],
        config=dataclasses.replace(
            run_specs(figures)[0].config, max_steps=6, eval_every=2, epochs=3
        ),
    )
    run_dir = spec.directory(figures)

    def ctrl_c(step: int) -> None:  # a Ctrl-C at step 2: a killed `make figures` leaves this
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    assert (
        train(spec.config, run_dir, host=tiny_host, progress=False, on_step=ctrl_c).stopped
        == "interrupted"
    )
    ensure_runs(figures, tiny_host, specs=[spec], progress=False, log=lambda _: None)
    times = runset.stage_seconds(run_dir)
    assert times["train_from_step"] == 2  # the seconds before the interruption were not kept
    steps = int(pd.read_csv(run_dir / "metrics.csv")["step"].max())
    assert steps == 6
    assert seconds_per_step(run_dir) == pytest.approx(times["train_s"] / 4)
    # trained again from scratch, every step is timed
    shutil.rmtree(run_dir)
    ensure_runs(figures, tiny_host, specs=[spec], progress=False, log=lambda _: None)
    times = runset.stage_seconds(run_dir)
    assert "train_from_step" not in times
    assert seconds_per_step(run_dir) == pytest.approx(times["train_s"] / 6)


def test_a_full_disk_mid_stage_leaves_the_cache_consistent(tmp_path, tiny_host, monkeypatch):
    import errno

    from analyses import _runset as runset

    figures = FiguresConfig.from_env({"FAST": "1", "IRM_LENS_RUNS": str(tmp_path / "runs")})
    spec = next(s for s in run_specs(figures) if not s.trained)  # the untrained baseline
    real_save = runset.save_recordings

    def full_disk(recordings, target, **kwargs):
        real_save(recordings, target, **kwargs)  # files land, then the disk "fills"
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runset, "save_recordings", full_disk)
    with pytest.raises(OSError, match="No space left"):
        ensure_runs(figures, tiny_host, specs=[spec], progress=False, log=lambda _: None)
    run_dir = spec.directory(figures)
    assert stage_done(run_dir, "train") and not stage_done(run_dir, "record")
    assert not any(p.name.endswith(".tmp") for p in run_dir.rglob("*"))
    monkeypatch.setattr(runset, "save_recordings", real_save)
    lines: list[str] = []
    ensure_runs(figures, tiny_host, specs=[spec], progress=False, log=lines.append)
    assert lines[0].endswith(f"record, evaluate  [{run_dir}]")
    assert all(stage_done(run_dir, s) for s in ("train", "record", "evaluate"))


@pytest.mark.slow
def test_torchrun_ranks_share_the_run_set_and_rank_0_writes(fast_run):
    tmp, first = fast_run
    assert first.returncode == 0
    redo = [next((tmp / "runs").glob(f"{name}_s42-*")) for name in ("anger", "sadness")]
    for run_dir in redo:
        (run_dir / "evaluation.csv").unlink()
    full = {
        **os.environ,
        "FAST": "1",
        "FIGURES_DIR": str(tmp / "figures"),
        "IRM_LENS_RUNS": str(tmp / "runs"),
        "OMP_NUM_THREADS": "1",
    }
    cmd = _procs.torchrun(2, "-m", "analyses", "--no-progress", "--only", "striation")
    proc = _procs.run(cmd, cwd=ROOT, env=full, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for run_dir in redo:  # each redone once, by one rank
        assert proc.stdout.count(f"{run_dir.name.rsplit('-', 1)[0]} (next-token): evaluate") == 1
        assert (run_dir / "evaluation.csv").exists()
    assert "rank 1 done; rank 0 writes the results" in proc.stdout
    assert proc.stdout.count("striation:") == 1  # the results are written once, by rank 0


def test_one_cache_helper_computes_once_and_never_leaves_half_a_table(tmp_path):
    calls = []

    def compute() -> pd.DataFrame:
        calls.append(1)
        return pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})

    path = tmp_path / "run" / "specificity" / "t.csv"
    first = figures_config.cached_table(path, compute)
    again = figures_config.cached_table(path, compute)
    assert calls == [1]
    pd.testing.assert_frame_equal(first, again)

    def broken() -> pd.DataFrame:
        raise RuntimeError("stopped mid-way")

    with pytest.raises(RuntimeError):
        figures_config.cached_table(tmp_path / "other.csv", broken)
    assert list(tmp_path.iterdir()) == [tmp_path / "run"]
    # the key scheme is pinned: results cached by earlier versions keep their names
    blob = json.dumps(
        [figures_config.RUNSET_VERSION, "nll_by_question", ["val", "test"], "chat", 256]
    )
    assert (
        figures_config.cache_key("nll_by_question", ("val", "test"), "chat", 256)
        == (hashlib.sha256(blob.encode()).hexdigest()[:12])
    )


def test_validation_lines_say_where_each_curve_bottomed_out():
    nan = float("nan")
    losses = pd.DataFrame(
        {
            "run": ["a"] * 6 + ["b"] * 4,
            "step": [1, 2, 3, 4, 5, 6, 1, 2, 3, 4],
            "val_loss": [nan, 2.0, nan, 1.5, nan, 1.7, nan, 3.0, nan, 2.5],
        }
    )
    assert report_trajectory.validation_lines(losses) == (
        "a 1.500 at step 4 of 6 (no lower in the 2 steps after it); "
        "b 2.500 at step 4 of 4 (still falling at its last evaluation)"
    )
    long = pd.DataFrame(
        {"run": ["c"] * 4, "step": [50, 100, 220, 240], "val_loss": [2.5, 2.0, 1.0, 1.1]}
    )
    assert report_trajectory.validation_lines(long) == (
        "c 1.000 at step 220 of 240 (no lower in the 20 steps after it; 50.0 % below its "
        "loss 120 steps before)"
    )


def test_step_cost_reads_one_number_or_a_range():
    from analyses.report.claims import step_cost

    assert step_cost({}) == ""
    assert step_cost({"a": 16.73}) == " Training took 16.7 s a step (wall time)."
    assert step_cost({"a": 16.7, "b": 4.9, "c": 39.3}) == (
        " Training took 4.9-39.3 s a step (wall time)."
    )
    assert step_cost({"a": 4.9, "b": 39.3}, n_runs=16) == (
        " Training took 4.9-39.3 s a step (wall time, 2 of 16 runs timed)."
    )


@pytest.mark.slow
def test_explain_tier_separates_the_loss_quirks_and_adds_its_section(fast_run):
    tmp, proc = _tier(fast_run, "explain")
    assert "anger_s42 (next-token): train" not in proc.stdout  # the run set is read, not trained
    out = tmp / "figures" / "explain"
    assert (out / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = pd.read_csv(out / "data.csv")
    cells = ["t2-counted", "t2-masked", "t1-counted", "t1-masked"]
    assert list(data["cell"].unique()) == cells and set(data["emotion"]) == {"anger"}
    assert sorted(data["step"].unique()) == [2, 4] and set(data["irm"]) == {"snapshot", "best"}
    assert data["pad_logit_z"].notna().all() and (data["gap"] >= 1).all()
    for cell, padding in (("t2-masked", "masked"), ("t1-counted", "counted")):
        run_dir = next((tmp / "runs").glob(f"anger_{cell}_s42-*"))
        config = json.loads((run_dir / "config.json").read_text())
        assert (config["loss"], config["paper_padding"]) == ("paper", padding)
    null = pd.read_csv(out / "null.csv")
    assert len(null) == 3 and null["seed"].tolist() == [1, 2, 42]
    summary = json.loads((out / "config.json").read_text())["summary"]
    assert summary["finished"] is True and summary["padding"]["verdict"] in PADDING_VERDICTS
    text = (tmp / "figures" / "REPORT.md").read_text()  # the tier rewrote the report
    assert "## Why one index? (`make figures TIER=explain`)" in text
    steering = pd.read_csv(tmp / "figures" / "steering" / "data.csv")
    assert set(steering["run_kind"]) == {"next-token", "paper loss", "untrained"}
    assert steering["constant_share"].between(0, 1).all()
    assert "### Is the IRM a fixed steering vector?" in text
    # each next-token IRM's exported vectors measured beside it, alike
    measured = steering.dropna(subset=["vector_specificity"])
    assert set(measured["run_kind"]) == {"next-token"} and len(measured) >= 2
    vectors = json.loads((tmp / "figures" / "steering" / "config.json").read_text())["summary"]
    assert vectors["vectors"]["verdict"] in VECTOR_VERDICTS
    assert f"**The exported vectors against the IRM: {vectors['vectors']['verdict']}.**" in text
    # a bias-only IRM trained like each next-token run, measured alike
    assert measured["bias_specificity"].notna().all() and measured["bias_top1"].notna().all()
    assert f"**A bias-only IRM against the IRM: {vectors['bias']['verdict']}.**" in text
    assert "### Does the host alone name the index? (`irm-lens predict`)" in text
    # the contrastive vector and prompting beside the IRM, by the same yardsticks
    baselines = pd.read_csv(tmp / "figures" / "baselines" / "data.csv")
    per_emotion = baselines.groupby("emotion")["intervention"].apply(set)
    assert (
        per_emotion
        == {
            "IRM",
            "exported vectors",
            "bias-only IRM",
            "host alone",
            "contrastive vector",
            "prompt",
        }
    ).all()
    assert baselines["voice"].between(0, 1).all() and (baselines["facts_n"] > 0).all()
    contrast = baselines[baselines["intervention"] == "contrastive vector"]
    assert contrast["scale"].isin(SMOKE_SCALES).all() and contrast["top_index"].notna().all()
    assert "### Steering baselines, by the same yardsticks" in text
    subspace = pd.read_csv(tmp / "figures" / "subspace" / "data.csv")
    # the smoke run trains one seed per emotion: no two-seed pair, so that verdict cannot be
    # decided; the other pairs are measured against their controls
    assert set(subspace["pair"]) == set(SUBSPACE_PAIRS[1:]) and subspace["control"].any()
    pairs = json.loads((tmp / "figures" / "subspace" / "config.json").read_text())["summary"]
    assert set(pairs["verdicts"]) == set(SUBSPACE_PAIRS)
    assert pairs["verdicts"][SUBSPACE_PAIRS[0]]["verdict"] == "not tested"
    assert subspace["agreement"].between(0, 1 + 1e-6).all()
    assert "### Do IRMs push in the same directions?" in text
    # longer runs where concentration was largest, measured at every snapshot
    longer = json.loads((tmp / "figures" / "longer" / "config.json").read_text())["summary"]
    assert longer["finished"] and longer["runs"] == [  # the cheapest setting first
        "sadness_layersq4_long_s42",
        "sadness_l1_long_s42",
        "sadness_long_s420",
    ]
    assert set(longer["concentration"]) == {"all + L1", "q4", "second seed", "all settings"}
    assert "### Trained longer where concentration was largest" in text
    # every explanation side by side, each with its verdict
    why = pd.read_csv(tmp / "figures" / "why" / "data.csv")
    assert why["explanation"].is_unique and len(why) >= 8
    assert "not run" not in set(why["verdict"]) and "| explanation | experiment |" in text
    seeds = why.set_index("explanation").loc["the host fixes the index, whatever the init"]
    predict = json.loads((tmp / "figures" / "predict" / "config.json").read_text())["summary"]
    assert seeds["verdict"] == longer["seeds"]["verdict"]  # the seed rule's, read as judged
    assert seeds["control"] == pytest.approx(1 / predict["d_model"])
    assert (
        f"**A shared top index only when padding counts: {summary['padding']['verdict']}.**" in text
    )
    verdicts = json.loads((tmp / "figures" / "verdicts.json").read_text())
    assert (
        verdicts["why one index / a shared top index only when padding counts"]
        == (summary["padding"]["verdict"])
    )
    again = _without_runs(tmp, "explain", "anger_t*_s42-*")
    assert ": train" not in again.stdout
    pd.testing.assert_frame_equal(pd.read_csv(out / "data.csv"), data)


@pytest.mark.slow
def test_predict_keeps_its_committed_ranks_and_computes_only_what_is_new(fast_run):
    """The committed predict result is its cache of record: without the run cache nothing is
    computed again; a run it lacks has its emotion-objective pair computed, to the same ranks;
    other settings (a new version of the computation) reuse nothing."""
    from analyses.predict import committed_ranks

    tmp, _ = fast_run
    out = tmp / "figures" / "predict"
    if not (out / "data.csv").exists():
        _tier(fast_run, "explain")
    data = pd.read_csv(out / "data.csv")
    summary = json.loads((out / "config.json").read_text())
    pairs = len(data[["emotion", "objective"]].drop_duplicates())
    cold = tmp / "no-runs-predict"

    def again() -> str:
        proc = _figures(tmp, "--only", "predict", TIER="explain", IRM_LENS_RUNS=str(cold))
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    n = len(data)
    text = again()
    assert (
        f"predict: {n} of {n} runs ranked by the committed result; computing 0 of {pairs}" in text
    )
    assert not (cold / "predict").exists()
    pd.testing.assert_frame_equal(pd.read_csv(out / "data.csv"), data)
    first = data[
        (data["emotion"] == data["emotion"][0]) & (data["objective"] == data["objective"][0])
    ]
    data.drop(index=0).to_csv(out / "data.csv", index=False)  # a run the result lacks
    text = again()
    assert f"{n - len(first)} of {n} runs ranked by the committed result; computing 1 of" in text
    assert len(list((cold / "predict").glob("gradient-*"))) == 1
    pd.testing.assert_frame_equal(pd.read_csv(out / "data.csv"), data)
    assert json.loads((out / "config.json").read_text())["summary"] == summary["summary"]
    settings = summary["settings"]
    assert (
        settings["version"] >= 1
        and settings["rows_per_gradient"] == summary["summary"]["rows_per_gradient"]
    )
    assert len(committed_ranks(tmp / "figures", settings)[0]) == n
    for changed in ({"version": settings["version"] + 1}, {"fit_steps": 1}, {"host": "other"}):
        assert committed_ranks(tmp / "figures", {**settings, **changed})[0].empty
