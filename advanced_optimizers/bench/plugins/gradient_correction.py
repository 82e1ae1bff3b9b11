"""Gradient Correction in the harness: methods ``gc-adam`` and ``gc-sgd``.

The optimizer is :class:`advanced_optimizers.gradient_correction.GradientCorrectionOptimizer` around
``torch.optim.Adam`` (``gc-adam``) or ``torch.optim.SGD`` with the harness's momentum (``gc-sgd``),
with the harness's lr and weight decay. Options: its keyword parameters (``use_gcw``, ``use_gcode``,
``gcw_strength``, ``gcode_strength``, ``history``, ``meta_lr``, ``nonfinite``). ``end_epoch``
records the optimizer's diagnostics of the epoch.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ...gradient_correction import GradientCorrectionOptimizer
from ..methods import EpochInfo, Method, Setup, register


class _GradientCorrection(Method):
    base: ClassVar[type[torch.optim.Optimizer]]
    option_sources = ((GradientCorrectionOptimizer, frozenset({"base", "device"})),)

    def _base_kwargs(self, setup: Setup) -> dict[str, Any]:
        return {"weight_decay": setup.weight_decay}

    def build_optimizer(self, model: nn.Module, setup: Setup) -> GradientCorrectionOptimizer:
        base = self.base(model.parameters(), lr=setup.lr, **self._base_kwargs(setup))
        return GradientCorrectionOptimizer(base, **self.options)

    def end_epoch(
        self,
        model: nn.Module,
        optimizer: GradientCorrectionOptimizer,
        info: EpochInfo,
        train_loss: float,
    ) -> dict[str, float]:
        stats = optimizer.diagnostics(reset=True)
        return {k: v for k, v in stats.items() if k != "gc_tensor_steps"}


@register
class GCAdam(_GradientCorrection):
    name = "gc-adam"
    summary = "Gradient Correction (learned GC-W predictor + GC-ODE two-step) on Adam [our design]"
    default_lr = 1e-3
    base = torch.optim.Adam


@register
class GCSGD(_GradientCorrection):
    name = "gc-sgd"
    summary = "Gradient Correction (learned GC-W predictor + GC-ODE two-step) on SGD+momentum"
    default_lr = 0.05
    base = torch.optim.SGD

    def _base_kwargs(self, setup: Setup) -> dict[str, Any]:
        return {"momentum": setup.momentum, "weight_decay": setup.weight_decay}
