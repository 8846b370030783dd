"""Training an IRM on a frozen host.

One frozen ``TrainConfig`` per run (``irm_lens.training.config``), saved as ``config.json`` in
the run directory beside ``irm.safetensors`` (best by validation loss), ``last.safetensors``
(the resumable state: IRM, Adam and counters), ``metrics.csv`` and, once finished,
``summary.json`` (``irm_lens.training.runs``). Every file is written atomically. Ctrl-C finishes
the current optimizer step, saves the state and stops; ``resume=True`` continues, and on CPU
ends bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from irm_lens.data.batches import Batch, collate, encode_rows, pad_id
from irm_lens.data.importers import qa_frame, write_qa_csv
from irm_lens.errors import CheckpointError, IrmLensError
from irm_lens.files import sha256_file, write_text_atomic
from irm_lens.host import host_name, load_host
from irm_lens.inject import attach
from irm_lens.irm import IRM
from irm_lens.prompts import Encoded
from irm_lens.rundir import RunDir
from irm_lens.training.config import RunDirError, TrainConfig, pin_data, preset
from irm_lens.training.distributed import (
    Parallel,
    ParallelMode,
    World,
    agree,
    all_sum,
    launched,
    process_group,
    rank_device,
    shard_rows,
)
from irm_lens.training.losses import loss_sum, loss_terms, pads_to_max_len
from irm_lens.training.memory import cap_allocator_cache, checkpoint_blocks
from irm_lens.training.runlock import run_lock
from irm_lens.training.runs import (
    FINAL_STOPS,
    Progress,
    check_run_dir,
    drop_optimizer_state,
    extend_run_dir,
    host_identity,
    read_state,
    save_state,
    snapshot_path,
    start_run_dir,
    write_metrics,
)

__all__ = ["RunDirError", "TrainConfig", "TrainResult", "TrainingDivergedError", "preset", "train"]


class TrainingDivergedError(IrmLensError, FloatingPointError):
    """The training loss became NaN or infinite."""


# ------------------------------------------------------------------------------- interruption


class _StopRequest:
    """Set by the first Ctrl-C; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, _signum: int, _frame: Any) -> None:
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


def _check_answers_fit(examples: list[Encoded], max_len: int, what: str) -> None:
    """Refuse rows whose answers are cut away by ``max_len``: the next-token loss would have no
    terms and the run would "train" on nothing. Most such rows is an error; a tenth or more, a
    warning."""
    lost = [i for i, ex in enumerate(examples) if len(ex.prompt_ids) >= max_len]
    if not lost:
        return
    longest = max(len(examples[i].prompt_ids) for i in lost)
    detail = (
        f"{len(lost)} of {len(examples)} rows of {what} have no answer token within max_len "
        f"{max_len} (questions up to {longest} tokens; first such row: {lost[0]})"
    )
    if len(lost) * 2 > len(examples):
        raise IrmLensError(f"{detail}; raise --max-len or shorten the questions.")
    if len(lost) * 10 >= len(examples):  # a stray long question is not worth a warning
        warnings.warn(f"{detail}; those rows add nothing to the loss.", stacklevel=3)


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


def _optimizer(config: TrainConfig, params: Any, *, fused: bool) -> torch.optim.Optimizer:
    """Adam (fused where supported), or SGD with momentum 0.9 for ``optimizer="sgd"``."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9)
    return torch.optim.Adam(params, lr=config.lr, fused=fused)


def _host_fingerprint(host: TransformerBridge) -> Tensor:
    return torch.stack([p.detach().double().sum() for p in host.parameters()]).cpu()


def _device_of(device: str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    host: TransformerBridge | None = None,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
    parallel: ParallelMode = "auto",
    checkpoint_host: bool = False,
    data: pd.DataFrame | Sequence[tuple[str, str]] | None = None,
    keep_optimizer: bool = False,
) -> TrainResult:
    """Train an IRM as ``config`` says, writing the run to ``run_dir``.

    Args:
        config: the run's configuration.
        run_dir: output directory (created; an existing run needs ``resume`` or ``overwrite``).
        resume: continue the run saved in ``run_dir``: its config must equal ``config``, or
            ``config`` extends a finished run by a larger ``max_steps`` (and snapshots after
            the old cap), ending as if it had been trained under ``config`` from the start.
        overwrite: replace a run already in ``run_dir``.
        host: an already-loaded host matching ``config.host`` (saves reloading it).
        progress: show a progress bar with loss and tokens/s.
        on_step: called with the step number after each optimizer step.
        parallel: ``auto`` (DDP when started by torchrun, else one process), ``none`` (this
            process alone, also under torchrun), ``ddp`` or ``fsdp``
            (``irm_lens.training.distributed``).
        checkpoint_host: recompute the host's blocks (after block 0) in the backward pass
            instead of keeping their activations: less memory, about one more forward of time.
        data: rows to train on from Python instead of a CSV: a DataFrame with ``question`` and
            ``answer`` columns (``reference``, ``topic``, ``question_id`` kept when present),
            or ``(question, answer)`` pairs. They are kept in the run as ``data.csv``, which
            ``config.data`` then names; split 90/5/5 as a CSV would be.
        keep_optimizer: keep the optimizer's state in ``last.safetensors`` after the run has
            stopped for good (its epochs done, or early stopping): by default it is dropped
            then, since nothing can resume or extend such a run (``runs.FINAL_STOPS``).

    Returns:
        A ``TrainResult``; the best IRM is ``RunDir(run_dir).irm``.
    """
    run_dir = Path(run_dir)
    with contextlib.ExitStack() as staging:
        source = None
        if data is not None:  # staged outside the run until the run directory is started
            source = Path(staging.enter_context(tempfile.TemporaryDirectory())) / RunDir.DATA
            write_qa_csv(qa_frame(data, config.emotion), source)
            digest = sha256_file(source)
            config = dataclasses.replace(
                config, data=str(RunDir(run_dir).data.resolve()), data_sha256=digest
            )
        return _train(
            pin_data(config) if source is None else config,
            run_dir,
            source,
            resume=resume,
            overwrite=overwrite,
            host=host,
            progress=progress,
            on_step=on_step,
            parallel=parallel,
            checkpoint_host=checkpoint_host,
            keep_optimizer=keep_optimizer,
        )


def _train(
    config: TrainConfig,
    run_dir: Path,
    data_source: Path | None,
    *,
    resume: bool,
    overwrite: bool,
    host: TransformerBridge | None,
    progress: bool,
    on_step: Callable[[int], None] | None,
    parallel: ParallelMode,
    checkpoint_host: bool,
    keep_optimizer: bool,
) -> TrainResult:
    world = World() if parallel == "none" else launched()
    device = rank_device(config.device, world)
    with process_group(world, _device_of(device)), contextlib.ExitStack() as stack:
        trainer, error = None, None
        try:
            if world.is_main:
                stack.enter_context(run_lock(run_dir, "train"))
            trainer = _Trainer(
                config, run_dir, host, world, device, parallel, resume, overwrite, data_source
            )
        except Exception as exc:  # shared with the other ranks before it is raised
            error = exc
        agree(world, _device_of(device), error, "setup")
        assert trainer is not None
        try:  # only now that every rank is ready may rank 0 replace what the directory held
            trainer.start_run_dir()
        except Exception as exc:
            error = exc
        agree(world, _device_of(device), error, "starting the run directory")
        if checkpoint_host:
            stack.enter_context(checkpoint_blocks(trainer.host, skip=(0,)))
        trainer.keep_optimizer = keep_optimizer
        return trainer.run(progress, on_step)


class _Trainer:
    """One run's training: data, IRM, optimizer and progress, and the steps that move them."""

    keep_optimizer = False  # keep the optimizer state once the run stops for good (``train``)

    def __init__(
        self,
        config: TrainConfig,
        run_dir: Path,
        host: TransformerBridge | None,
        world: World,
        device: str | None,
        parallel: ParallelMode,
        resume: bool,
        overwrite: bool,
        data_source: Path | None = None,
    ) -> None:
        # Everything that can fail on bad input (host, data, layers, IRM) runs before anything of
        # the run directory is written or replaced.
        self.config, self.run_dir, self.world = config, run_dir, world
        self.data_source = data_source  # rows given from Python, staged until the run starts
        continuing = check_run_dir(run_dir, config, resume, overwrite)
        if host is None:
            host = load_host(config.host, device=device, dtype=config.dtype)
        elif config.host is not None and host_name(host) != config.host:
            raise ValueError(
                f"host {host_name(host)!r} does not match config.host {config.host!r}."
            )
        self.host, self.device = host, host.W_E.device
        if self.device.type == "cpu":
            cap_allocator_cache()
        self.pad = pad_id(host.tokenizer)
        self.train_ex, val_ex = self._examples()
        self.val_batches = [
            self._collate(val_ex[i : i + config.batch_size])
            for i in range(0, len(val_ex), config.batch_size)
        ]
        self.irm = config.untrained_irm(host)
        self.irm.train()
        self.parallel = Parallel(self.irm, world, parallel)
        fused = _fused_ok(self.device) and self.parallel.mode != "fsdp"
        self.opt = _optimizer(config, self.irm.parameters(), fused=fused)
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, step_size=1, gamma=config.gamma)
        self.prog, self.metrics = Progress(), cast(list[dict[str, Any]], [])
        self.before = _host_fingerprint(host)  # per-parameter sums: frozen check and identity
        self.identity = host_identity(host, self.before)
        if continuing:
            saved = read_state(RunDir(run_dir).last, self.identity)
            self.parallel.load(saved.irm, saved.optimizer, self.opt)
            self.sched.load_state_dict(saved.scheduler)
            self.prog, self.metrics = saved.progress, saved.metrics
        self.fresh = not continuing and not resume
        # resumed under a config that extends the saved one (a larger max_steps)
        self.extended = continuing and TrainConfig.load(RunDir(run_dir).config) != config
        rows = config.batch_size * config.grad_accum
        self.rows_per_step = rows
        self.steps_per_epoch = max(1, len(self.train_ex) // rows)
        total = self.steps_per_epoch * config.epochs
        self.total = total if config.max_steps is None else min(total, config.max_steps)
        if self.extended and self.total <= self.prog.step:  # refused before config.json moves
            raise RunDirError(
                f"{run_dir}: a larger max_steps ({config.max_steps}) adds nothing: its "
                f"{config.epochs} epochs of {self.steps_per_epoch} steps end at step "
                f"{total}, where the run already is ({self.prog.step}). Raise --epochs too."
            )

    def start_run_dir(self) -> None:
        """A new run replaces what its directory held; an extended one takes the new config
        (rank 0 writes)."""
        if not self.world.is_main:
            return
        if self.fresh:
            start_run_dir(self.run_dir, self.config, self.data_source)
        elif self.extended:
            extend_run_dir(self.run_dir, self.config)

    def _examples(self) -> tuple[list[Encoded], list[Encoded]]:
        config = self.config
        staged = self.data_source is not None and not RunDir(self.run_dir).data.exists()
        reading = dataclasses.replace(config, data=str(self.data_source)) if staged else config
        every = reading.rows()

        def rows(split: str, cap: int | None) -> pd.DataFrame:
            frame = every[every["split"] == split]
            return frame if cap is None else frame.iloc[:cap]

        tok = self.host.tokenizer
        train_ex = encode_rows(tok, rows("train", config.max_train_rows), config.prompt_mode)
        val_ex = encode_rows(tok, rows("val", config.max_val_rows), config.prompt_mode)
        data_name = config.data or f"the bundled {config.emotion!r} dataset"
        for split, examples in (("train", train_ex), ("val", val_ex)):
            if not examples:
                raise IrmLensError(
                    f"{data_name} has no {split} rows (questions are split 90/5/5 by question "
                    "id; the validation split gets its first question at 11 distinct "
                    "questions). Add rows, or raise --max-train-rows / --max-val-rows."
                )
            if config.objective.kind == "next-token":
                _check_answers_fit(examples, config.max_len, f"{data_name}, {split} split")
        return train_ex, val_ex

    def _collate(self, examples: list[Encoded]) -> Batch:
        return collate(
            examples,
            self.pad,
            self.config.max_len,
            pad_to_max=pads_to_max_len(self.config.objective),
        )

    def _share(self, whole: Batch) -> tuple[Batch, float]:
        """This rank's rows of a collated batch (``rank::size``, see ``shard_rows``), on the
        device, and their weight; one process takes the whole batch."""
        if not self.world.parallel:
            return whole.to(self.device), 1.0
        rows, weight = shard_rows(range(whole.tokens.shape[0]), self.world)
        parts = (whole.tokens, whole.attention_mask, whole.answer_mask)
        return Batch(*(t[rows] for t in parts)).to(self.device), weight

    # ------------------------------------------------------------------------------ steps

    def run(self, progress: bool, on_step: Callable[[int], None] | None) -> TrainResult:
        prog = self.prog
        more = prog.stopped == "max_steps" and prog.step < self.total  # extended: a larger cap
        if prog.stopped and prog.stopped != "interrupted" and not more:
            self._check_finished()  # finished: check what it points at
            # a run stopped between its last checkpoint and its summary is finished here
            unsummarised = not RunDir(self.run_dir).summary.exists()
            return self._finish() if self.extended or unsummarised else self._result()
        stop = _StopRequest()
        show = progress and self.world.is_main
        bar = tqdm(
            total=self.total, initial=prog.step, disable=not show, desc=f"IRM {self.config.emotion}"
        )
        prog.stopped = ""
        # the bar closes (and ends its line) before any error reaches the user
        with bar, _graceful_sigint(stop):
            self._snapshot()  # step 0: the initial IRM, when asked for
            while not prog.stopped:
                if prog.step >= self.total:
                    max_steps = self.config.max_steps
                    capped = max_steps is not None and prog.step >= max_steps
                    prog.stopped = "max_steps" if capped else "epochs"
                    break
                row = self._step()
                bar.update(1)
                bar.set_postfix(
                    loss=f"{row['train_loss']:.3f}",
                    best_val=f"{prog.best_val:.3f}",
                    tok_s=f"{row['tokens_per_s']:.0f}",
                )
                self._snapshot()
                if on_step is not None:
                    on_step(prog.step)
                # Ctrl-C reaches each rank on its own: stop when any rank was asked to
                asked = all_sum([float(stop.requested)], self.world, self.device)[0]
                if asked and not prog.stopped:
                    prog.stopped = "interrupted"
                last_step = prog.step >= self.total
                if prog.step % self.config.eval_every == 0 or prog.stopped or last_step:
                    self._checkpoint()
        return self._finish()

    def _step(self) -> dict[str, Any]:
        """One optimizer step over ``batch_size x grad_accum`` rows, shared among the ranks."""
        config, prog = self.config, self.prog
        order = torch.randperm(
            len(self.train_ex),
            generator=torch.Generator().manual_seed(config.seed * 1009 + prog.epoch),
        ).tolist()
        start = prog.batch_in_epoch * self.rows_per_step
        group = [self.train_ex[i] for i in order[start : start + self.rows_per_step]]
        chunks = [group[i : i + config.batch_size] for i in range(0, len(group), config.batch_size)]
        began = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        partial, tokens, finite = [], 0, True
        for k, chunk in enumerate(chunks):
            whole = self._collate(chunk)
            batch, weight = self._share(whole)
            terms = max(loss_terms(whole, config.objective), 1)
            # DDP and FSDP average gradients over ranks: scale each rank's share up by the world
            scale = weight * self.world.size / config.grad_accum
            with (
                self.parallel.gradient_sync(k == len(chunks) - 1),
                attach(self.host, self.irm, call=self.parallel.module) as inj,
            ):
                logits = self.host(batch.tokens, attention_mask=batch.attention_mask)
                share = loss_sum(logits, batch, config.objective) / terms
                objective = share
                if config.l1_alpha > 0 and inj.last is not None:
                    penalty = inj.last.abs().sum() * (config.l1_alpha / self.irm.n_inject)
                    objective = share + penalty
                (objective * scale).backward()
            partial.append(float(share.detach()) * weight)
            finite = finite and bool(torch.isfinite(objective.detach()))
            tokens += int(batch.n_real_tokens * weight)
        shared = all_sum([*partial, float(tokens), float(not finite)], self.world, self.device)
        losses, n_tokens = shared[: len(chunks)], shared[len(chunks)]
        if shared[len(chunks) + 1]:
            self._diverged(losses)
        self.opt.step()
        prog.step += 1
        prog.batch_in_epoch += 1
        row: dict[str, Any] = {
            "step": prog.step,
            "epoch": prog.epoch,
            "train_loss": sum(losses) / len(losses),
            "val_loss": None,
            "lr": self.opt.param_groups[0]["lr"],
            "tokens_per_s": n_tokens / (time.perf_counter() - began),
        }
        if prog.batch_in_epoch >= self.steps_per_epoch:
            prog.epoch += 1
            prog.batch_in_epoch = 0
            self.sched.step()
        if prog.step % config.eval_every == 0 or prog.step >= self.total:
            self._evaluate(row)
            if prog.bad_evals >= config.patience:
                prog.stopped = "early_stop"
        self.metrics.append(row)
        return row

    def _diverged(self, losses: list[float]) -> None:
        run_dir = self.run_dir
        raise TrainingDivergedError(
            f"Non-finite loss ({losses}) at step {self.prog.step + 1} of {run_dir}; stopped. The "
            f"last good state is kept in {RunDir(run_dir).last} and the best IRM in "
            f"{RunDir(run_dir).irm}. Lower --lr (now {self.config.lr}) or --l1."
        )

    def _val_loss(self) -> float:
        """Mean validation loss over rows (each batch's mean weighted by its rows)."""
        means, sizes = [], []
        with torch.no_grad(), attach(self.host, self.irm, call=self.parallel.module):
            for whole in self.val_batches:
                batch, weight = self._share(whole)
                logits = self.host(batch.tokens, attention_mask=batch.attention_mask)
                terms = max(loss_terms(whole, self.config.objective), 1)
                means.append(float(loss_sum(logits, batch, self.config.objective) / terms) * weight)
                sizes.append(whole.tokens.shape[0])
        means = all_sum(means, self.world, self.device)
        return sum(m * n for m, n in zip(means, sizes, strict=True)) / max(sum(sizes), 1)

    def _evaluate(self, row: dict[str, Any]) -> None:
        prog = self.prog
        val = self._val_loss()
        row["val_loss"] = val
        if val < prog.best_val:
            prog.best_val, prog.best_step, prog.bad_evals = val, prog.step, 0
            state = self.parallel.irm_state()  # a collective under FSDP
            if self.world.is_main:
                self.irm.save(RunDir(self.run_dir).irm, state)
        else:
            prog.bad_evals += 1

    def _snapshot(self) -> None:
        """Save the IRM as it is now when ``config.snapshots`` asks for this step."""
        step = self.prog.step
        path = snapshot_path(self.run_dir, step)
        if step not in self.config.snapshots:
            return
        state = self.parallel.irm_state()  # a collective under FSDP
        if self.world.is_main:
            path.parent.mkdir(exist_ok=True)
            self.irm.save(path, state)

    def _checkpoint(self) -> None:
        irm_state = self.parallel.irm_state()  # collectives under FSDP: every rank takes part
        opt_state = self.parallel.optimizer_state(self.opt)
        if self.world.is_main:
            path = RunDir(self.run_dir).last
            save_state(
                path, irm_state, opt_state, self.sched, self.prog, self.metrics, self.identity
            )
            write_metrics(RunDir(self.run_dir).metrics, self.metrics)

    def _check_finished(self) -> None:
        try:
            IRM.load(RunDir(self.run_dir).irm, self.host)
        except CheckpointError as exc:
            raise CheckpointError(
                f"{self.run_dir} finished training, but its best IRM cannot be used: {exc} Train "
                "the run again with --overwrite."
            ) from None

    def _result(self) -> TrainResult:
        p = self.prog
        return TrainResult(self.run_dir, p.step, p.best_val, p.best_step, p.stopped)

    def _finish(self) -> TrainResult:
        if self.prog.stopped != "interrupted":
            self._checkpoint()
        if self.prog.stopped in FINAL_STOPS and not self.keep_optimizer and self.world.is_main:
            drop_optimizer_state(RunDir(self.run_dir).last)
        host = self.host
        after = _host_fingerprint(host)
        grads = any(p.grad is not None for p in host.parameters())
        if not torch.equal(self.before, after) or grads:
            raise RuntimeError("The host changed during IRM training: it must stay frozen.")
        result = self._result()
        if self.prog.stopped != "interrupted" and self.world.is_main:
            summary = {
                **dataclasses.asdict(result),
                "run_dir": str(self.run_dir),
                "host": host_name(host),
                "layers": list(self.irm.layers),
                "irm_params": self.irm.n_params(),
            }
            write_text_atomic(RunDir(self.run_dir).summary, json.dumps(summary, indent=2))
        return result
