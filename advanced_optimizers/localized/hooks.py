"""The forward hooks that collect the localized rule's terms: a part of the LocalizedOptimizer.

In the training forward pass, each localized layer's hook computes the rule's numerator and energy
(:mod:`.rule`) on the first ``ceil(hebbian_subsample·B)`` samples, every ``hebbian_interval``-th
step, in the weight's precision, and pools them until the step applies them. The first training
pass also checks that the layers run in their registration order.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .layers import describe_order

__all__ = ["HebbianHooks"]


class HebbianHooks:
    """The forward hooks' work: a mixin of :class:`~.optimizer.LocalizedOptimizer`.

    It reads and writes the optimizer's attributes (set in its ``__init__``) named below.
    """

    layers: list[tuple[str, nn.Module]]
    layer_names: list[str]
    transition: int
    hebbian_lr: float
    hebbian_subsample: float
    hebbian_interval: int
    steps: int
    _rule_terms: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    _pending: dict[int, list[torch.Tensor]]
    _order_seen: list[int] | None
    _hook_handles: list[Any]

    def _forward_hook(
        self, index: int, module: nn.Module, args: tuple, output: torch.Tensor
    ) -> None:
        if not module.training:
            return
        if self._order_seen is not None:
            self._verify_order(index)
        if index >= self.transition or self.hebbian_lr == 0.0 or self.steps % self.hebbian_interval:
            return
        x = args[0]
        keep = max(1, math.ceil(self.hebbian_subsample * x.shape[0]))
        dtype = module.weight.dtype  # the rule in the weight's precision, also under autocast
        with torch.no_grad(), _autocast_off(x.device.type):
            numerator, energy = self._rule_terms(
                module, x[:keep].detach().to(dtype), output[:keep].detach().to(dtype)
            )
        pending = self._pending.get(index)
        if pending is None:
            self._pending[index] = [numerator, energy]
        else:  # several forward passes in one step: pool their rows
            pending[0].add_(numerator)
            pending[1].add_(energy)

    def _verify_order(self, index: int) -> None:
        """The first training pass must run the layers in registration order (0, 1, 2, ...)."""
        seen = self._order_seen
        if index != len(seen):
            order = describe_order(self.layers, [*seen, index])
            raise RuntimeError(
                f"LocalizedOptimizer: the model's layers run in the order {order}, not in their "
                f"registration order {self.layer_names}; LoCal localizes a prefix of the layers, so "
                "register them in the order they run (e.g. build the model as nn.Sequential)"
            )
        seen.append(index)
        if len(seen) == len(self.layers):
            self._order_seen = None

    def remove_hooks(self) -> None:
        """Detach the forward hooks from the model (the optimizer stops computing Hebbian updates)."""
        for handle in self._hook_handles:
            handle.remove()
        self._hook_handles = []


def _autocast_off(device_type: str) -> Any:
    if device_type in ("cpu", "cuda", "mps", "xpu") and torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()
