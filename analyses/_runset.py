"""The run set behind ``make figures``: which IRMs, where they are cached, and their stages.

A run set is every IRM the paper's figures need on one host: each emotion on all layers for each
seed (next-token loss), each emotion with the original's ``paper`` loss for the first seed, and an
untrained IRM of the first seed as the baseline. Every run lives in a cache directory keyed by a
hash of everything that defines it (training config, bundled data, stage settings), so a second
``make figures`` reuses it and a changed setting trains a new one beside it; a run whose config
only raises a cached run's ``max_steps`` (a longer schedule) starts from a copy of that run's
training state instead of step 0 (``extension_problem`` says when it may).

Each run goes through three stages, each resumable and skipped once done:
``train`` (``summary.json``), ``record`` (``recordings/paper`` with the original's sampling and
``recordings/heldout`` with greedy answers to test-split questions) and ``evaluate``
(``evaluation.csv`` + ``generations.csv``). Every file is written atomically, so an interrupted
or failed stage (Ctrl-C, full disk) leaves the cache consistent and is redone on the next call.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import itertools
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from transformer_lens.model_bridge import TransformerBridge

from analyses._config import RUNSET_VERSION, FiguresConfig, digest
from irm_lens.errors import IrmLensError
from irm_lens.files import atomic_path, write_text_atomic
from irm_lens.irm import IRM
from irm_lens.record import (
    PAPER_SAMPLING,
    GenerationSettings,
    RecordingSource,
    prompt_set,
    record,
    save_recordings,
)
from irm_lens.rundir import RECORDING_INFO, RunDir
from irm_lens.stack import versions
from irm_lens.training.config import FAITHFUL_PAPER_LOSS, TrainConfig, preset
from irm_lens.training.distributed import launched
from irm_lens.training.runlock import claim_each
from irm_lens.training.runs import extension_problem, run_status

STAGES = ("train", "record", "evaluate")


@dataclass(frozen=True)
class RunSpec:
    """One IRM of the run set: its name, its training config, whether it is trained, and
    whether it is a member of the untrained null only (recorded, not evaluated)."""

    name: str
    config: TrainConfig
    trained: bool = True
    null: bool = False

    @property
    def kind(self) -> str:
        if not self.trained:
            return "untrained"
        return "paper loss" if self.config.loss == "paper" else "next-token"

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages this run goes through: a null member is trained (built) and recorded."""
        return STAGES[:2] if self.null else STAGES

    def key(self, figures: FiguresConfig) -> str:
        """Hash of everything that defines this run's cached files."""
        stage_settings = {
            k: getattr(figures, k)
            for k in ("heldout", "paper_max_length", "heldout_tokens", "eval_rows", "eval_tokens")
        }
        return digest(
            {
                "version": RUNSET_VERSION,
                "config": _keyed_config(self.config),
                "trained": self.trained,
                "data": _data_digest(),
                "stages": stage_settings,
                "stack": versions(),  # another torch/transformers/TL: not the same run
            }
        )

    def directory(self, figures: FiguresConfig) -> Path:
        return figures.runs_dir / f"{self.name}-{self.key(figures)}"


# Config fields added after RUNSET_VERSION 3 enter a run's key only when they differ from the
# value every earlier run had, so adding a field does not throw away the cached runs.
_LATER_FIELDS: dict[str, Any] = {
    "optimizer": "adam",
    "masked": (),
    "snapshots": (),
    "rotated_output": None,
    "paper_offset": 2,
    "paper_padding": "counted",
    "data_sha256": None,
}


def _keyed_config(config: TrainConfig) -> dict[str, Any]:
    fields = dataclasses.asdict(config)
    return {k: v for k, v in fields.items() if _LATER_FIELDS.get(k, object()) != v}


def _data_digest() -> str:
    data = importlib.resources.files("irm_lens") / "data" / "emotion_qa.csv"
    return hashlib.sha256(data.read_bytes()).hexdigest()[:16]


def run_specs(figures: FiguresConfig) -> list[RunSpec]:
    """The run set, in the order it is trained."""
    host = dict(host=figures.host, device=figures.device, dtype=figures.dtype)
    specs = []
    for seed in figures.seeds:
        for emotion in figures.emotions:
            config = preset(figures.preset, emotion=emotion, seed=seed, **host)
            specs.append(RunSpec(f"{emotion}_s{seed}", config))
    first = figures.seeds[0]
    if figures.paper_loss:
        for emotion in figures.emotions:
            config = preset(
                figures.preset, emotion=emotion, seed=first, **{**FAITHFUL_PAPER_LOSS, **host}
            )
            specs.append(RunSpec(f"{emotion}_paperloss_s{first}", config))
    base = preset(figures.preset, emotion=figures.emotions[0], seed=first, **host)
    specs.append(RunSpec(f"untrained_s{first}", base, trained=False))
    for seed in null_seeds(figures)[1:]:
        config = dataclasses.replace(base, seed=seed)
        specs.append(RunSpec(f"untrained_s{seed}", config, trained=False, null=True))
    return specs


def null_seeds(figures: FiguresConfig) -> list[int]:
    """Init seeds of the untrained null: each training seed (its own control), then 1, 2, ...
    (skipping those) up to ``figures.null_irms``."""
    seeds = list(dict.fromkeys(figures.seeds))[: figures.null_irms]
    extra = (s for s in itertools.count(1) if s not in seeds)
    return seeds + [next(extra) for _ in range(figures.null_irms - len(seeds))]


def stage_done(run_dir: Path, stage: str) -> bool:
    """Whether ``stage`` of the run in ``run_dir`` has finished (its last file exists)."""
    run = RunDir(run_dir)
    markers = {
        "train": [run.summary, run.irm],
        "record": [run.recordings / kind / RECORDING_INFO for kind in ("paper", "heldout")],
        "evaluate": [run.path / RunDir.EVALUATION, run.path / RunDir.GENERATIONS],
    }
    return all(m.exists() for m in markers[stage])


def _shorter_run(spec: RunSpec, figures: FiguresConfig) -> Path | None:
    """A finished run in the cache that ``spec`` extends: the same run (name, data, stages,
    library versions) but for a smaller ``max_steps`` (``extension_problem``)."""
    for path in sorted(figures.runs_dir.glob(f"{spec.name}-*/config.json")):
        saved = TrainConfig.load(path)
        same = dataclasses.replace(spec, config=saved).directory(figures) == path.parent
        if same and stage_done(path.parent, "train") and not extension_problem(saved, spec.config):
            return path.parent
    return None


@dataclass(frozen=True)
class Timed:
    """Training seconds already counted for a run's state, and the step they count from (a
    run resumed after an interruption counts only the steps trained since: the seconds before
    it were never kept)."""

    seconds: float = 0.0
    from_step: int = 0


def _timed(run_dir: Path) -> Timed:
    """What ``stages.json`` counted for the training in ``run_dir``; nothing, from the step
    of its saved state, where it kept no time (an interrupted run)."""
    times = stage_seconds(run_dir)
    if "train_s" not in times:
        return Timed(0.0, _saved_step(run_dir))
    return Timed(times["train_s"], int(times.get("train_from_step", 0)))


def _saved_step(run_dir: Path) -> int:
    """The optimizer step of the resumable state in ``run_dir`` (``metrics.csv`` is written
    with it), 0 when there is none."""
    path = RunDir(run_dir).metrics
    if not path.exists():
        return 0
    steps = pd.read_csv(path, usecols=["step"])["step"]
    return int(steps.max()) if len(steps) else 0


def _copy_training(source: Path, run_dir: Path) -> Timed:
    """Copy the training files of the run in ``source`` into ``run_dir``, each atomically and
    ``config.json`` last (a copy cut short is not a run); the time it trained for."""
    names = [p.relative_to(source) for p in sorted(source.glob("snapshots/*.safetensors"))]
    names += [
        Path(n) for n in (RunDir.LAST, RunDir.IRM, RunDir.METRICS, RunDir.SUMMARY, RunDir.CONFIG)
    ]
    for name in names:
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(run_dir / name) as tmp:
            shutil.copyfile(source / name, tmp)
    return _timed(source)


def _train(
    spec: RunSpec, run_dir: Path, host: TransformerBridge, figures: FiguresConfig, progress: bool
) -> Timed:
    """Train ``spec`` into ``run_dir``, resuming what is there or extending a shorter cached
    run of it; the training time counted before this call (an extended run's) and the step it
    counts from (``Timed``)."""
    from irm_lens.training.train import train

    if not spec.trained:
        config = spec.config
        irm = config.untrained_irm(host)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.json", config.to_json())
        irm.save(RunDir(run_dir).irm)
        summary = {"steps": 0, "stopped": "untrained", "best_val": None}
        write_text_atomic(RunDir(run_dir).summary, json.dumps(summary, indent=2))
        return Timed()
    status = run_status(run_dir, spec.config)
    earlier = Timed() if status == "new" else _timed(run_dir)  # resumed, or extended in place
    shorter = _shorter_run(spec, figures) if status == "new" else None
    if shorter is not None:  # go on from where it stopped instead of training from step 0
        earlier, status = _copy_training(shorter, run_dir), "shorter"
    if status == "conflict":
        raise IrmLensError(
            f"{run_dir} holds another run's config; the cache is keyed by config, so it was "
            "edited by hand. Delete that directory and run again."
        )
    result = train(
        spec.config, run_dir, resume=status != "new", host=host, progress=progress, parallel="none"
    )
    if result.stopped == "interrupted":
        raise KeyboardInterrupt(f"training of {spec.name} interrupted; run again to resume")
    return earlier


def _record(
    spec: RunSpec, run_dir: Path, host: TransformerBridge, figures: FiguresConfig, progress: bool
) -> None:
    irm_path = RunDir(run_dir).irm
    irm = IRM.load(irm_path, host)
    irm.eval()
    sets: dict[str, tuple[list[str], str, GenerationSettings]] = {
        # The original recorded BOS + prompt, sampled (T 1, top-k 50) to 100 tokens in all.
        "paper": (
            prompt_set("paper"),
            "plain",
            dataclasses.replace(PAPER_SAMPLING, max_length=figures.paper_max_length),
        ),
        "heldout": (
            prompt_set("heldout", emotion=spec.config.emotion, limit=figures.heldout),
            spec.config.prompt_mode,
            GenerationSettings(max_new_tokens=figures.heldout_tokens),
        ),
    }
    for name, (prompts, mode, settings) in sets.items():
        target = RunDir(run_dir).recordings / name
        if (target / RECORDING_INFO).exists():
            continue
        recordings = record(host, irm, prompts, mode=mode, settings=settings, progress=progress)  # type: ignore[arg-type]
        save_recordings(
            recordings, target, source=RecordingSource.of(host, irm_path, mode, settings)
        )


def _evaluate(
    run_dir: Path,
    host: TransformerBridge,
    figures: FiguresConfig,
    progress: bool,
    memo: dict[tuple[Any, ...], Any],
) -> None:
    from irm_lens.evaluate import evaluate_run

    evaluate_run(
        run_dir,
        host=host,
        max_rows=figures.eval_rows,
        max_new_tokens=figures.eval_tokens,
        progress=progress,
        host_memo=memo,
    )


def ensure_runs(
    figures: FiguresConfig,
    host: TransformerBridge | Callable[[], TransformerBridge],
    *,
    specs: Sequence[RunSpec] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    poll_s: float = 5.0,
) -> dict[str, Path]:
    """Train, record and evaluate every run of the set that is not cached yet.

    Started by ``torchrun``, every rank runs this: each takes whole runs (by their locks) and
    returns once all are finished, so rank 0 can go on to the analyses.

    Args:
        figures: the configuration.
        host: the loaded host, or a function loading it (called only if some stage must run).
        specs: runs to ensure (default ``run_specs(figures)``).
        log: receives a line per run (``make figures`` passes ``print``).
        poll_s: seconds between looks at runs another process is working on.

    Returns:
        Run name -> run directory, in run-set order.
    """
    specs = run_specs(figures) if specs is None else specs
    loaded: list[TransformerBridge] = []

    def get_host() -> TransformerBridge:
        if not loaded:
            loaded.append(
                host() if callable(host) and not isinstance(host, TransformerBridge) else host
            )  # type: ignore[arg-type]
        return loaded[0]

    host_memo: dict[tuple[Any, ...], Any] = {}  # host-alone evaluations, shared by all runs
    dirs = {spec.name: spec.directory(figures) for spec in specs}
    world = launched()  # under torchrun each rank takes whole runs; the ranks share the list
    who = f"rank {world.rank}: " if world.parallel else ""

    def work(i: int) -> None:
        spec = specs[i]
        run_dir = dirs[spec.name]
        todo = [s for s in spec.stages if not stage_done(run_dir, s)]
        state = "cached" if not todo else ", ".join(todo)
        if log is not None and (todo or not world.parallel):
            log(f"{who}[run {i + 1}/{len(specs)}] {spec.name} ({spec.kind}): {state}  [{run_dir}]")
        for stage in todo:  # under the run's lock, which also clears what killed writers left
            started, earlier = time.monotonic(), Timed()
            if stage == "train":
                earlier = _train(spec, run_dir, get_host(), figures, progress)
            elif stage == "record":
                _record(spec, run_dir, get_host(), figures, progress)
            else:
                _evaluate(run_dir, get_host(), figures, progress, host_memo)
            _note_duration(
                run_dir,
                stage,
                earlier.seconds + time.monotonic() - started,
                from_step=earlier.from_step,
            )

    # Another process (a rank of this job, a second `make figures`) working on a run: come back
    # to it until it is finished; a run left half done by a killed worker is taken over.
    claim_each(list(dirs.values()), "make figures", work, first=world.rank, poll_s=poll_s)
    return dirs


def _note_duration(run_dir: Path, stage: str, seconds: float, *, from_step: int = 0) -> None:
    """Keep how long each stage took in ``stages.json`` (for the report's cost table);
    ``from_step``: training's seconds count the steps after it only (a resumed run)."""
    path = run_dir / "stages.json"
    times = json.loads(path.read_text()) if path.exists() else {}
    times[f"{stage}_s"] = round(seconds, 1)
    if stage == "train":
        times.pop("train_from_step", None)
        if from_step:
            times["train_from_step"] = from_step
    write_text_atomic(path, json.dumps(times, indent=2))


def stage_seconds(run_dir: Path) -> dict[str, float]:
    """Seconds each stage of a run took when it ran (empty for runs cached before)."""
    path = run_dir / "stages.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}
