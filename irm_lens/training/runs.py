"""Run directories: the saved config, the resumable training state, the metrics table.

``last.safetensors`` holds the IRM, Adam's tensors and (in its JSON header) the counters,
scheduler, optimizer groups and metrics so far: one file, written atomically, so the state on
disk is always one consistent step.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from safetensors.torch import load_file
from torch import Tensor

from irm_lens.errors import CheckpointError, IrmLensError
from irm_lens.files import (
    atomic_path,
    result_kind,
    save_tensors_atomic,
    write_csv_atomic,
    write_text_atomic,
)
from irm_lens.irm import HostFingerprint
from irm_lens.rundir import RunDir
from irm_lens.training.config import RunDirError, TrainConfig

RUN_FILES = RunDir.FILES
_STATE_FORMAT = "irm_lens.train_state"
METRIC_COLUMNS = ["step", "epoch", "train_loss", "val_loss", "lr", "tokens_per_s"]


# What an extended run may change: a larger step cap, and snapshots after the old cap.
EXTENDABLE = ("max_steps", "snapshots")


def extension_problem(saved: TrainConfig, config: TrainConfig) -> str | None:
    """None when ``config`` continues the run ``saved`` describes exactly as if it had been
    trained under ``config`` from the start: it differs only in a larger ``max_steps`` and in
    snapshots after the old cap, and the old cap fell on a validation pass (a run evaluates
    at its last step, so another cap would add a pass the longer run never made). Otherwise
    the reason it does not."""
    others = [
        k
        for k in dataclasses.asdict(config)
        if k not in EXTENDABLE and getattr(saved, k) != getattr(config, k)
    ]
    if others:
        return f"it differs in {others}, not only in {list(EXTENDABLE)}"
    cap, new_cap = saved.max_steps, config.max_steps
    if cap is None or (new_cap is not None and new_cap <= cap):
        return f"max_steps {new_cap} is not larger than the saved run's {cap}"
    if cap % saved.eval_every:
        return f"the saved run's max_steps {cap} is not a multiple of eval_every {saved.eval_every}"
    if tuple(s for s in config.snapshots if s <= cap) != saved.snapshots:
        return f"its snapshots up to step {cap} differ from the saved {list(saved.snapshots)}"
    return None


def extend_run_dir(run_dir: Path, config: TrainConfig) -> None:
    """Make the run in ``run_dir`` the start of the longer run ``config`` (see
    :func:`extension_problem`): it is no longer finished, and its config is the new one. The
    summary goes first, so a crash in between leaves a run that is not marked finished."""
    RunDir(run_dir).summary.unlink(missing_ok=True)
    write_text_atomic(RunDir(run_dir).config, config.to_json())


def check_run_dir(run_dir: Path, config: TrainConfig, resume: bool, overwrite: bool) -> bool:
    """Validate the run directory, writing nothing; True when a saved state should be resumed.
    A new run's directory is set up by :func:`start_run_dir` once everything else checked out;
    a resumed run whose ``config`` extends the saved one, by :func:`extend_run_dir`."""
    config_path = RunDir(run_dir).config
    if resume:
        if not config_path.exists():
            raise RunDirError(f"{run_dir}: no run to resume (no config.json). Drop --resume.")
        saved = TrainConfig.load(config_path)
        if saved != config and extension_problem(saved, config) is not None:
            diff = {
                k: (getattr(saved, k), getattr(config, k))
                for k in dataclasses.asdict(config)
                if getattr(saved, k) != getattr(config, k)
            }
            raise RunDirError(
                f"{run_dir}: the saved run has a different config (saved, given): {diff}, and "
                f"the given one does not extend it ({extension_problem(saved, config)}). "
                "Resume with the saved config (the CLI reads it from the run directory), or "
                "extend it by a larger max_steps alone."
            )
        return RunDir(run_dir).last.exists()
    present = [name for name in RUN_FILES if (run_dir / name).exists()]
    if present and not overwrite:
        raise RunDirError(
            f"{run_dir} already holds a run ({', '.join(present)}). Pass --overwrite to replace "
            "it, --resume to continue it, or choose another directory."
        )
    return False


def run_status(run_dir: Path, config: TrainConfig) -> str:
    """``done``, ``partial`` (resumable), ``shorter`` (a run ``config`` extends: resume it),
    ``new``, or ``conflict`` (a different run is there)."""
    config_path = RunDir(run_dir).config
    if not config_path.exists():
        return "new"
    saved = TrainConfig.load(config_path)
    if saved != config:
        if extension_problem(saved, config) is None and RunDir(run_dir).last.exists():
            return "shorter"
        return "conflict"
    return "done" if RunDir(run_dir).summary.exists() else "partial"


def run_summary(run_dir: Path) -> dict[str, Any]:
    """A finished run's optimizer steps, best validation loss and stop reason (``steps``,
    ``best_val``, ``stopped``), read from its ``summary.json``."""
    path = RunDir(run_dir).summary
    try:
        summary = json.loads(path.read_bytes().decode("utf-8"))
        return {key: summary[key] for key in ("steps", "best_val", "stopped")}
    except FileNotFoundError:
        raise IrmLensError(
            f"{path} is missing: the run has not finished training. Finish it with "
            f"`irm-lens train {run_dir} --resume` first."
        ) from None
    except (ValueError, KeyError, TypeError) as exc:  # hand-edited or damaged
        raise IrmLensError(
            f"{path}: not a run summary ({type(exc).__name__}: {exc}). Delete it and resume the "
            "run: it is finished, and its summary is written again."
        ) from exc


def start_run_dir(run_dir: Path, config: TrainConfig, data_source: Path | None = None) -> None:
    """Replace whatever run ``run_dir`` held by a new one: its ``config.json`` and, for a
    custom-data run, a copy of the rows it trains on (``data.csv``, from ``data_source``,
    default ``config.data``). What was made from the old run goes with it (its snapshots, and
    the recordings and ablations irm_lens wrote there, by their markers); anything else in the
    directory is left alone."""
    kept = RunDir(run_dir).data
    given = data_source or config.data
    source = Path(given) if given is not None else None
    same = source is not None and source.resolve() == kept.resolve()
    for name in RUN_FILES:
        if not (same and name == RunDir.DATA):
            (run_dir / name).unlink(missing_ok=True)
    _clear_derived(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if source is not None and not same:
        with atomic_path(kept) as tmp:
            shutil.copyfile(source, tmp)
    write_text_atomic(RunDir(run_dir).config, config.to_json())


@dataclass
class Progress:
    """Where a run is: counters, best validation loss so far, and why it stopped."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_val: float = math.inf
    best_step: int = -1
    bad_evals: int = 0
    stopped: str = ""


def save_state(
    path: Path,
    irm_state: dict[str, Tensor],
    opt_state: dict[str, Any],
    sched: Any,
    prog: Progress,
    metrics: list,
    host: dict[str, Any] | None = None,
) -> None:
    """Write the resumable state: the IRM's weights and Adam's ``state_dict()`` (full, keyed by
    parameter index); ``host`` (``host_identity``) is checked on resume."""
    tensors = {f"irm.{k}": v.detach().cpu().contiguous() for k, v in irm_state.items()}
    for idx, state in opt_state["state"].items():
        for key, value in state.items():
            tensors[f"opt.{idx}.{key}"] = value.detach().cpu().contiguous()
    meta = {
        "format": _STATE_FORMAT,
        "progress": json.dumps(dataclasses.asdict(prog)),
        "param_groups": json.dumps(opt_state["param_groups"]),
        "scheduler": json.dumps(sched.state_dict()),
        "metrics": json.dumps(metrics),
        "host": json.dumps(host),
    }
    save_tensors_atomic(tensors, path, meta)


FINAL_STOPS = ("epochs", "early_stop")
"""Why a run stops for good: ``--resume`` finds it finished and no larger ``max_steps`` extends
it (only a run stopped at its ``max_steps`` cap is extended), so its optimizer state is dead
weight (two thirds of ``last.safetensors`` under Adam)."""


def drop_optimizer_state(path: Path) -> None:
    """Rewrite the training state at ``path`` without the optimizer's tensors (the IRM, the
    counters and the metrics stay; ``read_state`` reads it back with an empty optimizer state)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata() or {})
        kept = {k: fh.get_tensor(k) for k in fh.keys() if not k.startswith("opt.")}  # noqa: SIM118
    meta["optimizer_state"] = "dropped: the run finished for good"
    save_tensors_atomic(kept, path, meta)


def host_identity(host: Any, param_sums: Tensor) -> dict[str, Any]:
    """What the training state remembers of its host: the fingerprint IRM checkpoints keep
    (name, shapes, embedding probe) and the sum of every weight (any changed weight shows).
    ``param_sums``: each parameter's sum in float64 (training computes them to check the host
    stays frozen)."""
    total = float(param_sums.sum())
    return {"fingerprint": dataclasses.asdict(HostFingerprint.of(host)), "weights_sum": total}


def _host_change(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    then, now = (HostFingerprint.from_dict(h["fingerprint"]) for h in (saved, current))
    diff = then.mismatch(now)
    if diff:
        return diff
    a, b = saved["weights_sum"], current["weights_sum"]
    if abs(a - b) > 1e-6 * max(1.0, abs(a)):
        return f"same name and shapes but other weights (weight sum {a:.6g} vs {b:.6g})"
    return None


@dataclass
class SavedState:
    """A training state as read back: full IRM weights and Adam state (one-process format)."""

    irm: dict[str, Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    progress: Progress
    metrics: list


def read_state(path: Path, host: dict[str, Any] | None = None) -> SavedState:
    """Read a state written by ``save_state``; refuse it when ``host`` (``host_identity`` of
    the host loaded now) differs from the host it was trained on."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises several types for damaged files
        raise CheckpointError(f"{path}: cannot read the training state ({exc}).") from exc
    if meta.get("format") != _STATE_FORMAT:
        raise CheckpointError(f"{path}: not an irm_lens training state.")
    try:
        saved_host = json.loads(meta.get("host") or "null")
        saved = {
            k: json.loads(meta[k]) for k in ("param_groups", "scheduler", "progress", "metrics")
        }
        progress = Progress(**saved["progress"])
    except (ValueError, KeyError, TypeError) as exc:  # hand-edited or damaged metadata
        raise CheckpointError(
            f"{path}: the training state's header is damaged ({type(exc).__name__}: {exc}). "
            "Resume from another checkpoint, or start the run again with --overwrite."
        ) from exc
    if host is not None and saved_host is not None:
        change = _host_change(saved_host, host)
        if change:
            raise CheckpointError(
                f"{path} was trained on host {saved_host['fingerprint']['name']!r}, but the host "
                f"loaded now differs ({change}). Resume with the host it was trained on, or "
                "start the run again with --overwrite."
            )
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    return SavedState(
        irm={k[4:]: v for k, v in tensors.items() if k.startswith("irm.")},
        optimizer={"state": state, "param_groups": saved["param_groups"]},
        scheduler=saved["scheduler"],
        progress=progress,
        metrics=saved["metrics"],
    )


def write_metrics(path: Path, metrics: list[dict[str, Any]]) -> None:
    frame = pd.DataFrame(metrics, columns=METRIC_COLUMNS)
    write_csv_atomic(path, frame)


def _clear_derived(run_dir: Path) -> None:
    """Remove the old run's snapshots and the result folders irm_lens made from it."""
    for snapshot in RunDir(run_dir).snapshots.glob("step-*.safetensors"):
        snapshot.unlink()
    derived = [*RunDir(run_dir).recordings.glob("*"), *run_dir.glob("ablation_index*")]
    for folder in derived:
        if folder.is_dir() and not folder.is_symlink() and result_kind(folder) is not None:
            shutil.rmtree(folder)
    for folder in (RunDir(run_dir).snapshots, RunDir(run_dir).recordings):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def snapshot_path(run_dir: str | Path, step: int) -> Path:
    """Where a run keeps its IRM as it was after ``step`` optimizer steps (``snapshots``)."""
    return RunDir(run_dir).snapshot(step)
