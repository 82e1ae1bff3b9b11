"""The few ``torch.distributed`` collectives the optimizers need to keep extra state in sync.

Every function is a no-op (or the identity) when ``torch.distributed`` is not initialised or the
group has one process, so single-process code pays nothing.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

__all__ = ["all_gather_rows", "all_reduce_sum", "is_distributed"]


def is_distributed(group: Any = None) -> bool:
    """True when a process group with more than one rank is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def all_reduce_sum(tensors: list[torch.Tensor], group: Any = None) -> None:
    """In place: every tensor becomes its sum over ranks (one all-reduce per dtype).

    Every rank must pass tensors of the same shapes and dtypes in the same order.
    """
    if not tensors or not is_distributed(group):
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for same in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in same])
        dist.all_reduce(flat, group=group)
        offset = 0
        for t in same:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()


def all_gather_rows(rows: torch.Tensor, group: Any = None) -> list[torch.Tensor]:
    """Every rank's ``rows`` (shape ``(n_r, ...)``, ``n_r`` may differ by rank), in rank order.

    Pads to the largest ``n_r`` for the collective and trims afterwards. ``[rows]`` when not
    distributed.
    """
    if not is_distributed(group):
        return [rows]
    world = dist.get_world_size(group)
    size = torch.tensor([rows.shape[0]], dtype=torch.long, device=rows.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size, group=group)
    counts = [int(s) for s in sizes]
    longest = max(counts)
    if longest == 0:
        return [rows[:0] for _ in counts]
    padded = rows.new_zeros((longest, *rows.shape[1:]))
    padded[: rows.shape[0]] = rows
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded, group=group)
    return [g[:n] for g, n in zip(gathered, counts, strict=True)]
