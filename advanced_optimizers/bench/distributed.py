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

import os

import torch
import torch.distributed as dist
from torch import nn

from .._distributed import all_gather_rows, all_reduce_sum
from .methods import Batch

__all__ = [
    "average_gradients",
    "barrier",
    "init_from_env",
    "is_main",
    "mean_over_ranks",
    "rank",
    "shard",
    "unshard",
    "world_size",
]


def init_from_env() -> bool:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1); True if distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    return True


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
    t = torch.tensor([value], dtype=torch.float64)
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
