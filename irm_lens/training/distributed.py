"""Training one IRM across the processes of a ``torchrun`` job (torch.distributed).

``torchrun --nproc-per-node N --no-python irm-lens train RUN ...`` starts N processes; each joins
one process group (gloo on CPU, NCCL for CUDA tensors, chosen from the host's device), loads the
frozen host itself (never wrapped: it has no trainable parameter) and builds the same IRM. The IRM
is then either replicated with ``DistributedDataParallel`` (the default) or sharded with FSDP's
``fully_shard`` (``--fsdp``: parameters, gradients and Adam state split over the ranks, for IRMs
that do not fit one device). ``--batch-size`` stays the number of rows per optimizer step: every
rank walks the same data order and takes rows ``rank, rank + N, ...`` of each batch, so the
optimizer sees the same gradient as one process would (up to float summation order).

Rank 0 alone writes the run directory. Checkpoints hold the full (unsharded) IRM and Adam state in
the one-process format, so a run resumes under any number of processes, with or without FSDP.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypeVar, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn

from irm_lens.errors import IrmLensError

ParallelMode = Literal["auto", "none", "ddp", "fsdp"]
T = TypeVar("T")


class DistributedError(IrmLensError, RuntimeError):
    """A distributed run cannot start or continue (another rank failed, bad launch)."""


@dataclass(frozen=True)
class World:
    """This process's place in a ``torchrun`` job (rank 0 of 1 outside one)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1


def launched() -> World:
    """The world ``torchrun`` (or SLURM's ``srun`` with the same variables) describes."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise DistributedError(
            f"WORLD_SIZE / RANK / LOCAL_RANK must be whole numbers ({exc}); launch with torchrun."
        ) from None
    if size < 1 or not 0 <= rank < size:
        raise DistributedError(f"RANK {rank} is outside WORLD_SIZE {size}; launch with torchrun.")
    return World(rank, size, local)


def rank_device(device: str | None, world: World) -> str | None:
    """Each rank's device: ``cuda`` (or ``cuda:K``) becomes ``cuda:<local rank>``; others kept."""
    if world.parallel and device is not None and device.startswith("cuda"):
        return f"cuda:{world.local_rank}"  # also for cuda:0: one GPU per rank
    if world.parallel and device is None and torch.cuda.is_available():
        return f"cuda:{world.local_rank}"
    return device


@contextlib.contextmanager
def process_group(world: World, device: torch.device) -> Iterator[None]:
    """Join the job's process group for the block (nothing to do for one process).

    Backends: gloo for CPU tensors, plus NCCL for CUDA tensors when the host is on a GPU. A group
    someone else set up (a notebook, a launcher) is used as it is and left open.
    """
    if not world.parallel or (dist.is_available() and dist.is_initialized()):
        yield
        return
    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed; train in one process.")
    if "MASTER_ADDR" not in os.environ:
        raise DistributedError(
            "WORLD_SIZE > 1 but MASTER_ADDR is not set: start the job with torchrun "
            "(torchrun --nproc-per-node N --no-python irm-lens train ...)."
        )
    if device.type == "cuda":
        torch.cuda.set_device(device)
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    # Long timeout: rank 0 writes checkpoints and evaluates while the others wait.
    dist.init_process_group(backend, timeout=timedelta(minutes=30), device_id=None)
    try:
        yield
        # rank 0 writes the summary while the others are done: meet before the teardown (a rank
        # tearing gloo down alone hung the job after training, now and then, under load)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def shard_rows(items: Sequence[T], world: World) -> tuple[list[T], float]:
    """This rank's rows of one batch (``rank::size``) and their weight.

    A rank left without rows (a batch smaller than the world) gets the first row with weight 0:
    it still runs the forward and backward that DDP's and FSDP's collectives expect.
    """
    mine = list(items[world.rank :: world.size])
    if mine:
        return mine, 1.0
    return list(items[:1]), 0.0


def all_sum(values: Sequence[float], world: World, device: torch.device) -> list[float]:
    """The element-wise sum over ranks (float64); the values themselves for one process."""
    if not world.parallel:
        return [float(v) for v in values]
    where = device if device.type == "cuda" else torch.device("cpu")
    tensor = torch.tensor(list(values), dtype=torch.float64, device=where)
    dist.all_reduce(tensor)
    return tensor.tolist()


def agree(world: World, device: torch.device, error: BaseException | None, what: str) -> None:
    """Every rank reports whether ``what`` went well; if any failed, all raise.

    The failing rank re-raises its own error; the others raise a ``DistributedError`` pointing
    at it. This keeps one rank's bad input from leaving the rest waiting in a collective.
    """
    if not world.parallel:
        if error is not None:
            raise error
        return
    failed = all_sum([1.0 if error is not None else 0.0], world, device)[0]
    if error is not None:
        raise error
    if failed:
        raise DistributedError(
            f"{int(failed)} other rank(s) failed during {what}; their error is in the job's log."
        )


class Parallel:
    """One IRM trained in this process alone, replicated (DDP) or sharded (FSDP) over ranks.

    ``module`` is what the injection calls in the forward; ``irm`` stays the plain module (under
    FSDP its parameters become shards of the full ones).
    """

    def __init__(self, irm: nn.Module, world: World, mode: ParallelMode) -> None:
        if mode == "auto":
            mode = "ddp" if world.parallel else "none"
        if mode in ("ddp", "fsdp") and not world.parallel:
            raise DistributedError(
                f"--parallel {mode} spreads training over processes; start them with torchrun "
                f"(torchrun --nproc-per-node N --no-python irm-lens train ...), or drop it."
            )
        if mode == "none" and world.parallel:
            raise DistributedError(
                f"this process is rank {world.rank} of {world.size}, but --parallel none trains "
                "in one process: launch without torchrun, or use ddp / fsdp."
            )
        self.irm, self.world, self.mode = irm, world, mode
        self.module: nn.Module = irm
        device = next(irm.parameters()).device
        if mode == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            ids = [device] if device.type == "cuda" else None
            # gradients live in DDP's buckets: no second copy of them
            self.module = DistributedDataParallel(irm, device_ids=ids, gradient_as_bucket_view=True)
        elif mode == "fsdp":
            from torch.distributed.fsdp import fully_shard

            # The IRM returns a view ([inject, batch, pos, d_model] of one Linear's output);
            # nothing edits it in place, which is what FSDP's warning is about.
            warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* view tensor")
            # One FSDP group per Linear: only one layer's full weights (and full gradient) exist
            # at a time, gathered for its forward and again for its backward.
            for layer in irm.modules():
                if isinstance(layer, nn.Linear):
                    fully_shard(layer)
            fully_shard(irm)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.irm.named_parameters()]

    @contextlib.contextmanager
    def gradient_sync(self, enabled: bool) -> Iterator[None]:
        """Skip the gradient all-reduce on all but the last micro-batch of a step."""
        if self.mode == "ddp" and not enabled:
            with self.module.no_sync():  # type: ignore[operator]
                yield
            return
        if self.mode == "fsdp":
            self.irm.set_requires_gradient_sync(enabled)  # type: ignore[operator]
        yield

    def _options(self, cpu_offload: bool) -> Any:
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=True, cpu_offload=cpu_offload)

    def irm_state(self) -> dict[str, Tensor]:
        """The full IRM weights (a collective under FSDP; only rank 0's copy is complete)."""
        if self.mode != "fsdp":
            return {k: v.detach() for k, v in self.irm.state_dict().items()}
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return cast(dict[str, Tensor], get_model_state_dict(self.irm, options=self._options(True)))

    def optimizer_state(self, opt: torch.optim.Optimizer) -> dict[str, Any]:
        """Adam's full state, keyed by parameter index as ``opt.state_dict()`` is."""
        if self.mode != "fsdp":
            return opt.state_dict()
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        full: Any = get_optimizer_state_dict(self.irm, opt, options=self._options(True))
        if not self.world.is_main:
            return {"state": {}, "param_groups": []}
        index = {name: i for i, name in enumerate(self.names)}
        groups = [{**g, "params": [index[p] for p in g["params"]]} for g in full["param_groups"]]
        state = {index[name]: value for name, value in full["state"].items()}
        return {"state": state, "param_groups": groups}

    def load(
        self, irm_state: dict[str, Tensor], opt_state: dict[str, Any], opt: torch.optim.Optimizer
    ) -> None:
        """Load full weights and Adam state saved in the one-process format (every rank)."""
        if self.mode != "fsdp":
            self.irm.load_state_dict(irm_state)
            opt.load_state_dict(opt_state)
            return
        from torch.distributed.checkpoint.state_dict import (
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        names = self.names
        set_model_state_dict(self.irm, cast(Any, irm_state), options=self._options(False))
        full: Any = {
            "state": {names[int(i)]: value for i, value in opt_state["state"].items()},
            "param_groups": [
                {**g, "params": [names[int(p)] for p in g["params"]]}
                for g in opt_state["param_groups"]
            ],
        }
        set_optimizer_state_dict(self.irm, opt, full, options=self._options(False))
