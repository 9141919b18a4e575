"""Multi-process data-parallel training: the same `mriad train` under ``torchrun --nproc_per_node N``.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK (and the rendezvous address); we then join a process
group (NCCL on CUDA, gloo on CPU), every rank holds the whole (small) training split and samples its
own slices with its own seed, DistributedDataParallel all-reduces the gradients, and only rank 0
writes files. Launch examples (one node, a Slurm job) are in docs/training.md.

DDP only synchronises gradients when the loss is computed through the wrapper's ``forward``; models
compute their loss in ``training_loss``, so the wrapper's module is a thin adapter whose forward
calls it, and :func:`route_training_loss` points the model's ``training_loss`` at the wrapper while
the (unchanged) ``training_step`` runs.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from mriad.infra.errors import MriadError

if TYPE_CHECKING:
    from mriad.models.base import AnomalyModel


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


# How long a process waits for its peers (joining, and any collective), instead of torch's 30 minutes:
# a node that never started or died then costs minutes and one line, not a silent half hour.
TIMEOUT_ENV = "MRIAD_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 300.0


def _env_int(name: str, default: str | None = None) -> int:
    text = os.environ.get(name, default)
    if text is None:
        raise MriadError(f"{name}: not set, but WORLD_SIZE={os.environ.get('WORLD_SIZE')} asks for several processes")
    try:
        return int(text)
    except ValueError:
        raise MriadError(f"{name}={text!r}: expected a whole number (set by torchrun or srun)") from None


def detect() -> DistEnv:
    """The launcher's environment; a plain process is rank 0 of 1. A broken one is one line."""
    world = _env_int("WORLD_SIZE", "1")
    if world <= 1:
        return DistEnv()
    rank, local = _env_int("RANK"), _env_int("LOCAL_RANK", "0")
    if not 0 <= rank < world:
        raise MriadError(f"RANK={rank}: must be in 0..{world - 1} (WORLD_SIZE={world})")
    return DistEnv(rank, world, local)


def timeout_seconds() -> float:
    """``$MRIAD_DIST_TIMEOUT`` seconds (default 300): the longest wait for a peer."""
    text = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT))
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise MriadError(f"{TIMEOUT_ENV}={text!r}: expected seconds > 0")
    return value


def setup(env: DistEnv, device: torch.device) -> torch.device:
    """Join the process group; on CUDA each rank takes the GPU of its local rank."""
    if not env.active:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        from datetime import timedelta

        seconds = timeout_seconds()
        try:
            with _held_stderr():
                dist.init_process_group(
                    backend="nccl" if device.type == "cuda" else "gloo",
                    rank=env.rank,
                    world_size=env.world_size,
                    timeout=timedelta(seconds=seconds),
                )
        except (RuntimeError, ValueError) as exc:  # DistStoreError (a timeout), a missing MASTER_ADDR...
            address = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise MriadError(
                f"distributed training: rank {env.rank} of {env.world_size} could not join the others at {address} "
                f"within {seconds:g} s ({reason}); start every node (one torchrun each) with the same "
                f"rendezvous address, or raise {TIMEOUT_ENV}"
            ) from None
    return device


@contextlib.contextmanager
def _held_stderr() -> Iterator[None]:
    """Hold what C++ code writes to stderr during the join: while a peer is missing, c10d logs every
    retry with a stack trace, and the one line that explains the failure would drown in them. When
    the join works, what was held is passed on."""
    import sys
    import tempfile

    sys.stderr.flush()
    with tempfile.TemporaryFile() as file:
        saved = os.dup(2)
        os.dup2(file.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            raise
        else:
            os.dup2(saved, 2)
            file.seek(0)
            if text := file.read():
                os.write(2, text)
        finally:
            os.close(saved)


def teardown(env: DistEnv) -> None:
    if env.active and dist.is_initialized():
        dist.destroy_process_group()


class _LossAdapter(nn.Module):
    """What DDP wraps: ``forward(batch, generator)`` is the model's own ``training_loss``."""

    def __init__(self, model: AnomalyModel):
        super().__init__()
        self.model = model

    def forward(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        # The class attribute, not the instance one: that is rerouted to this wrapper during a step.
        return type(self.model).training_loss(self.model, batch, generator)


def wrap(model: AnomalyModel, env: DistEnv, device: torch.device) -> nn.Module | None:
    """A DDP wrapper around the model's loss, or None in a single process."""
    if not env.active:
        return None
    from torch.nn.parallel import DistributedDataParallel

    # Buffers (e.g. the diffusion schedule) are constants: syncing them every step is wasted work.
    # torch >= 2.13 names the option forward_sync_buffers; older versions broadcast_buffers.
    parameters = inspect.signature(DistributedDataParallel.__init__).parameters
    no_sync: dict[str, Any] = (
        {"forward_sync_buffers": False} if "forward_sync_buffers" in parameters else {"broadcast_buffers": False}
    )
    return DistributedDataParallel(
        _LossAdapter(model), device_ids=[device.index] if device.type == "cuda" else None, **no_sync
    )


@contextlib.contextmanager
def route_training_loss(model: nn.Module, wrapper: nn.Module | None) -> Iterator[None]:
    """While active, ``model.training_loss(...)`` runs through the DDP wrapper (gradients synchronise)."""
    if wrapper is None:
        yield
        return

    def through_wrapper(batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return wrapper(batch, generator)

    object.__setattr__(model, "training_loss", through_wrapper)
    try:
        yield
    finally:
        object.__delattr__(model, "training_loss")


def all_reduce_sum(value: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.active:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not env.active:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, env: DistEnv) -> Any:
    """Rank 0's ``obj`` on every rank (e.g. a decision only rank 0 can make)."""
    if not env.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(env: DistEnv) -> None:
    if env.active:
        dist.barrier()
