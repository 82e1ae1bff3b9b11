"""Data-parallel training for the harness under ``torchrun`` (gloo on CPU, nccl on GPU).

Every rank builds the same model from the same seed and walks the same global batch order; rank ``r``
of ``W`` trains on the strided shard ``batch[r::W]`` of each global batch. After ``backward()`` the
gradients are averaged across ranks with one all-reduce of their flattened concatenation — the
arithmetic of ``DistributedDataParallel`` (mean of the per-rank mean gradients, which is the
global-batch mean gradient when the shards have equal size), done explicitly so that it also covers
methods whose training path is not a single ``model(x)`` call (SigProp's layer-local backward,
LoCal's frozen layers whose gradients are ``None``). Parameters therefore stay identical on every
rank. Algorithms with extra per-sample or per-layer state keep it consistent in
:meth:`Method.sync_distributed`, called after the gradients are averaged. Only rank 0 writes files.

Launch: ``torchrun --nproc_per_node=2 -m advanced_optimizers.bench.cli compare ...``.
"""

from __future__ import annotations

import atexit
import gc
import os

import torch
import torch.distributed as dist
from torch import nn

from .._distributed import all_gather_rows, all_reduce_sum
from .device import backend_for, resolve_device
from .methods import Batch

__all__ = [
    "average_gradients",
    "barrier",
    "init_from_env",
    "is_main",
    "mean_over_ranks",
    "raise_together",
    "rank",
    "shard",
    "unshard",
    "world_size",
]


def init_from_env(device: str | torch.device | None = None) -> bool:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1); True if distributed.

    ``device`` is the one training will use (``None`` = ``auto``, see :mod:`.device`): the backend is
    ``nccl`` when it is a CUDA device (each process then uses the GPU of its ``LOCAL_RANK``) and
    ``gloo`` otherwise — also on a machine that has GPUs but trains on the CPU.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    target = resolve_device(device)
    if target.type == "cuda":
        torch.cuda.set_device(target)
    dist.init_process_group(backend=backend_for(target))
    atexit.register(_leave_process_group)
    return True


def _leave_process_group() -> None:
    """At exit, while the interpreter is still whole: free what holds gloo/nccl work, then leave.

    Work objects freed during interpreter finalization can abort the process ("terminate called
    without an active exception"); no barrier, so a rank that failed cannot hang the others.
    """
    gc.collect()
    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # leaving anyway; the exit status is the run's
            pass


def _collective_device() -> torch.device:
    """Where tensors for a collective must live: the current GPU under nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def raise_together(error: BaseException | None) -> None:
    """Collective error check: every rank passes its error (or ``None``) and, if any rank failed,
    every rank raises (the failed ones their own error, the others a ``ValueError`` quoting it).

    Without it, a check that fails on rank 0 only (the output directory, say) would leave the other
    ranks waiting at the next collective. Not distributed: raises ``error`` if there is one.
    """
    if world_size() == 1:
        if error is not None:
            raise error
        return
    messages: list[str | None] = [None] * world_size()
    dist.all_gather_object(messages, None if error is None else str(error))
    if error is not None:
        raise error
    for r, message in enumerate(messages):
        if message is not None:
            raise ValueError(f"rank {r} failed: {message}")


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if world_size() > 1:
        dist.barrier()


def mean_over_ranks(value: float) -> float:
    """The mean of a Python number over ranks (itself when not distributed)."""
    world = world_size()
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return t.item() / world


def shard(batch: Batch) -> Batch:
    """This rank's strided share of a global batch (the whole batch when not distributed)."""
    world = world_size()
    if world == 1:
        return batch
    r = rank()
    return Batch(batch.x[r::world], batch.y[r::world], batch.index[r::world])


def unshard(local: torch.Tensor) -> torch.Tensor:
    """The global batch's rows from every rank's strided shard (inverse of :func:`shard`)."""
    world = world_size()
    if world == 1:
        return local
    parts = all_gather_rows(local)
    whole = local.new_empty((sum(p.shape[0] for p in parts), *local.shape[1:]))
    for r, part in enumerate(parts):
        whole[r::world] = part
    return whole


def average_gradients(model: nn.Module) -> None:
    """Replace every existing ``.grad`` by its mean over ranks (one all-reduce per dtype)."""
    world = world_size()
    if world == 1:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    all_reduce_sum(grads)
    for grad in grads:
        grad.div_(world)
