"""One fast test shared by every optimizer's non-finite policy: are all these tensors finite?"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["all_finite", "grads_of"]


def grads_of(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The existing ``.grad`` of every parameter in ``optimizer.param_groups``."""
    return [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]


def all_finite(tensors: Iterable[torch.Tensor | None]) -> bool:
    """True when every entry of every tensor is finite (``None`` entries are ignored).

    One fused 2-norm per (device, dtype) group and one host sync: a NaN or ±inf entry makes its
    tensor's norm non-finite. (Per-tensor ``isfinite(t).all()`` is an order of magnitude slower on
    CPU.) A finite tensor whose norm overflows (entries near 1e19 in float32) also counts as
    non-finite; for a gradient that is as unusable, and the optimizers skip such a step.
    """
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for t in tensors:
        if t is None:
            continue
        if t.is_sparse:
            t = t.coalesce().values()
        groups.setdefault((t.device, t.dtype), []).append(t)
    if not groups:
        return True
    norms = [torch.stack(torch._foreach_norm(ts)).float().cpu() for ts in groups.values()]
    return bool(torch.isfinite(torch.cat(norms)).all())
