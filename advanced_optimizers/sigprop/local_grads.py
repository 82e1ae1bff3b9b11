"""Layer-local gradients computed early and added to ``.grad`` by the caller's ``backward()``.

SigProp's layer-wise mode back-propagates each local loss as soon as it is computed, so each layer's
autograd graph is freed at once (activation memory independent of depth). The gradients are not
written to ``.grad`` then: :func:`defer_gradients` returns a tensor whose ``backward`` adds
``incoming · g`` to each parameter. So the caller's ``loss.backward()`` is where every gradient
lands, as in any model, and

* a ``GradScaler``'s scale (the incoming gradient of a scaled loss) scales the local gradients too;
* a ``zero_grad()`` between the forward and ``backward()`` does not erase them;
* ``DistributedDataParallel`` sees every gradient arrive during its backward and reduces it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["defer_gradients"]


class _DeferredGradients(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, value: torch.Tensor, grads: Sequence[Any], *params: Any) -> torch.Tensor:
        ctx.grads = grads
        return value.detach().clone()

    @staticmethod
    def backward(ctx: Any, incoming: torch.Tensor) -> tuple[Any, ...]:
        grads = ctx.grads
        ctx.grads = None  # a second backward has nothing to add
        if grads is None:
            raise RuntimeError(
                "SigProp's layer-local gradients were already used by an earlier backward(); "
                "compute the training loss again for another backward"
            )
        present = [g for g in grads if g is not None]
        # The usual incoming gradient is exactly 1 (loss.backward() without a loss scale): then
        # the gradients are returned as they are, sparing a pass over each. Checking the value
        # costs a host sync, so only on the CPU; elsewhere they are always scaled.
        unit = incoming.device.type == "cpu" and incoming.numel() == 1 and bool(incoming == 1)
        if present and not unit:
            # in place: the stored gradients are ours, so scaling them allocates nothing
            for dtype in {g.dtype for g in present}:
                same = [g for g in present if g.dtype == dtype]
                torch._foreach_mul_(same, incoming.to(dtype))
        return (None, None, *grads)


def defer_gradients(
    value: torch.Tensor, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None]
) -> torch.Tensor:
    """A tensor equal to ``value`` whose backward adds ``incoming · grads[k]`` to ``params[k]``."""
    if not params:
        return value
    return _DeferredGradients.apply(value, list(grads), *params)
