"""Training an IRM on a frozen host.

One frozen ``TrainConfig`` per run, saved as ``config.json`` in the run directory beside
``irm.safetensors`` (best by validation loss), ``last.safetensors`` (the resumable state: IRM,
Adam and counters), ``metrics.csv`` and, once finished, ``summary.json``. Every file is written
atomically. Ctrl-C finishes the current optimizer step, saves the state and stops; ``resume=True``
continues, and on CPU ends bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from irm_lens.batches import Batch, collate, encode_rows
from irm_lens.datasets import EMOTIONS, load_dataset
from irm_lens.errors import CheckpointError, IrmLensError
from irm_lens.files import atomic_path, write_text_atomic
from irm_lens.host import host_name, load_host
from irm_lens.importers import read_qa_csv
from irm_lens.inject import attach
from irm_lens.irm import IRM, parse_layers
from irm_lens.memory import cap_allocator_cache
from irm_lens.prompts import PromptMode

LossKind = Literal["next-token", "paper"]
RUN_FILES = (
    "config.json",
    "irm.safetensors",
    "last.safetensors",
    "metrics.csv",
    "summary.json",
    "evaluation.csv",
)
_STATE_FORMAT = "irm_lens.train_state"
METRIC_COLUMNS = ["step", "epoch", "train_loss", "val_loss", "lr", "tokens_per_s"]


class RunDirError(IrmLensError, FileExistsError):
    """A run directory that cannot be used as asked (exists, or has no run to resume)."""


class TrainingDivergedError(IrmLensError, FloatingPointError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (saved as ``config.json``).

    Args:
        emotion: bundled dataset to align to (``anger``, ``sadness``, ``neutral``, ``joy``), or
            the label of the rows in ``data``.
        data: a question/answer CSV to train on instead of a bundled dataset (see
            ``irm_lens.importers.read_qa_csv``; split by question id).
        host: host name for ``load_host`` (None = embedded SmolLM2-135M-Instruct).
        layers: injected layers, as ``parse_layers`` reads them ("all", "0-7", "every4", "3,7").
        width_mult, depth, init: IRM architecture (paper: 3, 5, "paper").
        loss: "next-token" (answer tokens only, padding ignored, one shift) or "paper" (the
            original code: every position of EOS-padded ``max_len`` rows, position t predicts t+2).
        prompt_mode: "chat" (host chat template) or "plain" (the original "question answer" text).
        l1_alpha: L1 penalty weight on IRM outputs: ``alpha / n_inject * sum|output|`` (0 = off).
        lr, gamma: Adam learning rate; StepLR decay per epoch.
        batch_size, grad_accum: rows per forward; forwards per optimizer step.
        max_len: tokens per row (longer rows are truncated).
        epochs, max_steps: stop after this many epochs or optimizer steps (None = no cap).
        eval_every: optimizer steps between validation passes (and checkpoints).
        patience: stop after this many validation passes without improvement.
        max_train_rows, max_val_rows: use only the first rows of each split (None = all).
        seed: IRM initialisation and data order.
        device, dtype: where the host runs (the IRM trains in fp32).
    """

    emotion: str = "anger"
    data: str | None = None
    host: str | None = None
    layers: str = "all"
    width_mult: int = 3
    depth: int = 5
    init: Literal["paper", "torch"] = "paper"
    loss: LossKind = "next-token"
    prompt_mode: PromptMode = "chat"
    l1_alpha: float = 0.0
    lr: float = 1e-4
    gamma: float = 0.85
    batch_size: int = 8
    grad_accum: int = 1
    max_len: int = 128
    epochs: int = 15
    max_steps: int | None = None
    eval_every: int = 50
    patience: int = 6
    max_train_rows: int | None = None
    max_val_rows: int | None = None
    seed: int = 42
    device: str | None = None
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.data is None and self.emotion not in EMOTIONS:
            raise ValueError(
                f"emotion={self.emotion!r} is not a bundled dataset; the bundled ones are "
                f"{list(EMOTIONS)} (or pass data=PATH to a question/answer CSV)."
            )
        if self.loss not in ("next-token", "paper"):
            raise ValueError(f"loss={self.loss!r}; use 'next-token' or 'paper'.")
        if self.prompt_mode not in ("chat", "plain"):
            raise ValueError(f"prompt_mode={self.prompt_mode!r}; use 'chat' or 'plain'.")
        positive = ("batch_size", "grad_accum", "max_len", "epochs", "eval_every", "patience")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.lr <= 0 or not 0 < self.gamma <= 1 or self.l1_alpha < 0:
            raise ValueError("lr must be > 0, gamma in (0, 1], l1_alpha >= 0.")
        if self.max_len < 3:
            raise ValueError("max_len must be at least 3 tokens.")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str, source: str = "config.json") -> TrainConfig:
        try:
            raw = json.loads(text)
            return cls(**raw)
        except (json.JSONDecodeError, TypeError) as exc:
            raise RunDirError(f"{source}: not a valid irm_lens training config ({exc}).") from exc


PRESETS: dict[str, dict[str, Any]] = {
    # Minutes on 2 CPU cores with the embedded host; enough to make answers visibly angrier.
    "quick": dict(
        lr=1e-3, batch_size=8, max_len=96, epochs=1, max_steps=60, eval_every=20,
        max_val_rows=27, patience=6,
    ),
    # The original code's schedule (16 rows per step: 8 per GPU on 2 GPUs).
    "paper": dict(lr=1e-4, batch_size=8, grad_accum=2, max_len=128, epochs=15, eval_every=100),
    # Seconds, for the tiny host in tests and smoke runs.
    "smoke": dict(
        lr=1e-3, batch_size=4, max_len=48, epochs=1, max_steps=4, eval_every=2,
        max_train_rows=16, max_val_rows=8, patience=6,
    ),
}  # fmt: skip


def preset(name: str, **overrides: Any) -> TrainConfig:
    """A ``TrainConfig`` from a named preset (``quick``, ``paper``, ``smoke``) plus overrides."""
    if name not in PRESETS:
        raise ValueError(f"preset={name!r}; use one of {list(PRESETS)}.")
    return TrainConfig(**{**PRESETS[name], **overrides})


# ---------------------------------------------------------------------------------------- losses


def next_token_loss(
    logits: Float[Tensor, "batch pos d_vocab"],
    tokens: Int[Tensor, "batch pos"],
    answer_mask: Int[Tensor, "batch pos"],
) -> Float[Tensor, ""]:
    """Mean NLL of the answer tokens, each predicted from the position before it."""
    mask = answer_mask[:, 1:].bool()
    if not mask.any():
        return logits.sum() * 0.0
    # Only the answer positions go through the softmax: a fraction of the vocab-wide memory.
    return F.cross_entropy(logits[:, :-1][mask].float(), tokens[:, 1:][mask])


def paper_loss(
    logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"]
) -> Float[Tensor, ""]:
    """The original code's loss: every position (padding included) predicts the token 2 ahead.

    Its dataset shifted the labels once and the model shifted them again.
    """
    return F.cross_entropy(logits[:, :-2].float().flatten(0, 1), tokens[:, 2:].flatten())


def batch_loss(logits: Tensor, batch: Batch, kind: LossKind) -> Tensor:
    if kind == "paper":
        return paper_loss(logits, batch.tokens)
    return next_token_loss(logits, batch.tokens, batch.answer_mask)


# ------------------------------------------------------------------------------ run directories


def _prepare_run_dir(run_dir: Path, config: TrainConfig, resume: bool, overwrite: bool) -> bool:
    """Validate the run directory; return True when a saved state should be resumed."""
    config_path = run_dir / "config.json"
    if resume:
        if not config_path.exists():
            raise RunDirError(f"{run_dir}: no run to resume (no config.json). Drop --resume.")
        saved = TrainConfig.from_json(config_path.read_text(), str(config_path))
        if saved != config:
            diff = {
                k: (getattr(saved, k), getattr(config, k))
                for k in dataclasses.asdict(config)
                if getattr(saved, k) != getattr(config, k)
            }
            raise RunDirError(
                f"{run_dir}: the saved run has a different config (saved, given): {diff}. "
                "Resume with the saved config (the CLI reads it from the run directory)."
            )
        return (run_dir / "last.safetensors").exists()
    present = [name for name in RUN_FILES if (run_dir / name).exists()]
    if present and not overwrite:
        raise RunDirError(
            f"{run_dir} already holds a run ({', '.join(present)}). Pass --overwrite to replace "
            "it, --resume to continue it, or choose another directory."
        )
    for name in present:
        (run_dir / name).unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(config_path, config.to_json())
    return False


@dataclass
class _Progress:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_val: float = math.inf
    best_step: int = -1
    bad_evals: int = 0
    stopped: str = ""


def _save_state(
    path: Path, irm: IRM, opt: torch.optim.Optimizer, sched: Any, prog: _Progress, metrics: list
) -> None:
    tensors = {f"irm.{k}": v.detach().cpu().contiguous() for k, v in irm.state_dict().items()}
    opt_state = opt.state_dict()
    for idx, state in opt_state["state"].items():
        for key, value in state.items():
            tensors[f"opt.{idx}.{key}"] = value.detach().cpu().contiguous()
    meta = {
        "format": _STATE_FORMAT,
        "progress": json.dumps(dataclasses.asdict(prog)),
        "param_groups": json.dumps(opt_state["param_groups"]),
        "scheduler": json.dumps(sched.state_dict()),
        "metrics": json.dumps(metrics),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _load_state(
    path: Path, irm: IRM, opt: torch.optim.Optimizer, sched: Any
) -> tuple[_Progress, list]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises several types for damaged files
        raise CheckpointError(f"{path}: cannot read the training state ({exc}).") from exc
    if meta.get("format") != _STATE_FORMAT:
        raise CheckpointError(f"{path}: not an irm_lens training state.")
    device = next(irm.parameters()).device
    irm.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("irm.")})
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value if name == "step" else value.to(device)
    opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    sched.load_state_dict(json.loads(meta["scheduler"]))
    return _Progress(**json.loads(meta["progress"])), json.loads(meta["metrics"])


def _write_metrics(path: Path, metrics: list[dict[str, Any]]) -> None:
    frame = pd.DataFrame(metrics, columns=METRIC_COLUMNS)
    write_text_atomic(path, frame.to_csv(index=False))


# ------------------------------------------------------------------------------- interruption


class _StopRequest:
    """Set by the first Ctrl-C; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


@contextmanager
def _graceful_sigint(stop: _StopRequest) -> Iterator[None]:
    try:
        previous = signal.signal(signal.SIGINT, stop)
    except ValueError:  # not the main thread: leave Ctrl-C as it is
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# ------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    steps: int
    best_val: float
    best_step: int
    stopped: str  # "max_steps", "epochs", "early_stop" or "interrupted"


def _fused_ok(device: torch.device) -> bool:
    """Fused Adam (one kernel for all parameters) where torch supports it: 3x faster on CPU."""
    return device.type in ("cpu", "cuda")


def _host_fingerprint(host: TransformerBridge) -> Tensor:
    return torch.stack([p.detach().double().sum() for p in host.parameters()]).cpu()


def _val_loss(
    host: TransformerBridge, irm: IRM, batches: list[Batch], kind: LossKind, device: Any
) -> float:
    total, weight = 0.0, 0
    with torch.no_grad(), attach(host, irm):
        for batch in batches:
            b = batch.to(device)
            loss = batch_loss(host(b.tokens, attention_mask=b.attention_mask), b, kind)
            n = b.tokens.shape[0]
            total += float(loss) * n
            weight += n
    return total / max(weight, 1)


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    host: TransformerBridge | None = None,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train an IRM as ``config`` says, writing the run to ``run_dir``.

    Args:
        config: the run's configuration.
        run_dir: output directory (created; an existing run needs ``resume`` or ``overwrite``).
        resume: continue the run saved in ``run_dir`` (its config must equal ``config``).
        overwrite: replace a run already in ``run_dir``.
        host: an already-loaded host matching ``config.host`` (saves reloading it).
        progress: show a progress bar with loss and tokens/s.
        on_step: called with the step number after each optimizer step.

    Returns:
        A ``TrainResult``; the best IRM is ``run_dir / "irm.safetensors"``.
    """
    run_dir = Path(run_dir)
    continuing = _prepare_run_dir(run_dir, config, resume, overwrite)
    if host is None:
        host = load_host(config.host, device=config.device, dtype=config.dtype)
    elif config.host is not None and host_name(host) != config.host:
        raise ValueError(f"host {host_name(host)!r} does not match config.host {config.host!r}.")
    device = host.W_E.device
    if device.type == "cpu":
        cap_allocator_cache()
    tok = host.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    source = (
        read_qa_csv(config.data, emotion=config.emotion)[0] if config.data is not None else None
    )

    def rows(split: str, cap: int | None) -> pd.DataFrame:
        if source is None:
            frame = load_dataset(config.emotion, split=split)
        else:
            frame = source[source["split"] == split]
        return frame if cap is None else frame.iloc[:cap]

    train_ex = encode_rows(tok, rows("train", config.max_train_rows), config.prompt_mode)
    val_ex = encode_rows(tok, rows("val", config.max_val_rows), config.prompt_mode)
    pad_to_max = config.loss == "paper"
    val_batches = [
        collate(val_ex[i : i + config.batch_size], pad_id, config.max_len, pad_to_max=pad_to_max)
        for i in range(0, len(val_ex), config.batch_size)
    ]

    layers = parse_layers(config.layers, host.cfg.n_layers)
    irm = IRM.for_host(
        host, layers, config.width_mult, config.seed, depth=config.depth, init=config.init
    )
    irm.train()
    opt = torch.optim.Adam(irm.parameters(), lr=config.lr, fused=_fused_ok(device))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=config.gamma)
    prog, metrics = _Progress(), cast(list[dict[str, Any]], [])
    if continuing:
        prog, metrics = _load_state(run_dir / "last.safetensors", irm, opt, sched)
    if prog.stopped and prog.stopped != "interrupted":
        return TrainResult(run_dir, prog.step, prog.best_val, prog.best_step, prog.stopped)

    rows_per_step = config.batch_size * config.grad_accum
    steps_per_epoch = max(1, len(train_ex) // rows_per_step)
    total = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    before = _host_fingerprint(host)
    stop = _StopRequest()
    bar = tqdm(total=total, initial=prog.step, disable=not progress, desc=f"IRM {config.emotion}")
    prog.stopped = ""

    def checkpoint() -> None:
        _save_state(run_dir / "last.safetensors", irm, opt, sched, prog, metrics)
        _write_metrics(run_dir / "metrics.csv", metrics)

    def evaluate(row: dict[str, Any]) -> None:
        val = _val_loss(host, irm, val_batches, config.loss, device)
        row["val_loss"] = val
        if val < prog.best_val:
            prog.best_val, prog.best_step, prog.bad_evals = val, prog.step, 0
            irm.save(run_dir / "irm.safetensors")
        else:
            prog.bad_evals += 1
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", val=f"{val:.3f}")

    with _graceful_sigint(stop):
        while not prog.stopped:
            if prog.step >= total:
                capped = config.max_steps is not None and prog.step >= config.max_steps
                prog.stopped = "max_steps" if capped else "epochs"
                break
            order = torch.randperm(
                len(train_ex),
                generator=torch.Generator().manual_seed(config.seed * 1009 + prog.epoch),
            ).tolist()
            start = prog.batch_in_epoch * rows_per_step
            group = [train_ex[i] for i in order[start : start + rows_per_step]]
            began = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            losses, n_tokens = [], 0
            for i in range(0, len(group), config.batch_size):
                batch = collate(
                    group[i : i + config.batch_size], pad_id, config.max_len, pad_to_max=pad_to_max
                ).to(device)
                with attach(host, irm) as inj:
                    logits = host(batch.tokens, attention_mask=batch.attention_mask)
                    loss = batch_loss(logits, batch, config.loss)
                    objective = loss
                    if config.l1_alpha > 0 and inj.last is not None:
                        penalty = inj.last.abs().sum() * (config.l1_alpha / irm.n_inject)
                        objective = loss + penalty
                if not torch.isfinite(objective):
                    raise TrainingDivergedError(
                        f"Non-finite loss ({float(objective.detach())}) at step {prog.step + 1} "
                        f"of {run_dir}; stopped. The last good state is kept in "
                        f"{run_dir / 'last.safetensors'} and the best IRM in "
                        f"{run_dir / 'irm.safetensors'}. Lower --lr (now {config.lr}) or --l1."
                    )
                (objective / config.grad_accum).backward()
                losses.append(float(loss.detach()))
                n_tokens += batch.n_real_tokens
            opt.step()
            prog.step += 1
            prog.batch_in_epoch += 1
            row: dict[str, Any] = {
                "step": prog.step,
                "epoch": prog.epoch,
                "train_loss": sum(losses) / len(losses),
                "val_loss": None,
                "lr": opt.param_groups[0]["lr"],
                "tokens_per_s": n_tokens / (time.perf_counter() - began),
            }
            if prog.batch_in_epoch >= steps_per_epoch:
                prog.epoch += 1
                prog.batch_in_epoch = 0
                sched.step()
            last_step = prog.step >= total
            if prog.step % config.eval_every == 0 or last_step:
                evaluate(row)
                if prog.bad_evals >= config.patience:
                    prog.stopped = "early_stop"
            metrics.append(row)
            bar.update(1)
            bar.set_postfix(
                loss=f"{row['train_loss']:.3f}",
                best_val=f"{prog.best_val:.3f}",
                tok_s=f"{row['tokens_per_s']:.0f}",
            )
            if on_step is not None:
                on_step(prog.step)
            if stop.requested and not prog.stopped:
                prog.stopped = "interrupted"
            if prog.step % config.eval_every == 0 or prog.stopped or last_step:
                checkpoint()
    bar.close()
    if prog.stopped != "interrupted":
        checkpoint()
    after = _host_fingerprint(host)
    if not torch.equal(before, after) or any(p.grad is not None for p in host.parameters()):
        raise RuntimeError("The host changed during IRM training: it must stay frozen.")
    result = TrainResult(run_dir, prog.step, prog.best_val, prog.best_step, prog.stopped)
    if prog.stopped != "interrupted":
        summary = {
            **dataclasses.asdict(result),
            "run_dir": str(run_dir),
            "host": host_name(host),
            "layers": list(layers),
            "irm_params": irm.n_params(),
        }
        write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=2))
    return result
