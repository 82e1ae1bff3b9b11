"""Gradient Correction in the harness: methods ``gc-adam`` and ``gc-sgd``.

The optimizer is :func:`advanced_optimizers.gradient_correction.create_gradient_correction_optimizer`
around ``torch.optim.Adam`` (``gc-adam``) or ``torch.optim.SGD`` with the harness's momentum
(``gc-sgd``), with the harness's lr and weight decay. Options (``--opt key=value``): ``use_gcw``,
``use_gcode``, ``gcw_strength``, ``gcode_strength``, ``history``, ``meta_lr``. ``end_epoch`` records
the epoch's mean GC-W relative prediction error (``gcw_pred_error``), that of the naive "next
gradient = this one" predictor (``gcw_naive_error``) and the mean GC-ODE coefficient
(``gcode_coef``). All state lives in the optimizer's ``state_dict``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...gradient_correction import GradientCorrectionOptimizer, create_gradient_correction_optimizer
from ..methods import EpochInfo, Method, Setup, register


class _GradientCorrection(Method):
    base: Any = None

    def __init__(
        self,
        use_gcw: bool = True,
        use_gcode: bool = True,
        gcw_strength: float = 0.1,
        gcode_strength: float = 1.0,
        history: int = 2,
        meta_lr: float = 1e-3,
    ) -> None:
        self.options: dict[str, Any] = {
            "use_gcw": use_gcw,
            "use_gcode": use_gcode,
            "gcw_strength": gcw_strength,
            "gcode_strength": gcode_strength,
            "history": history,
            "meta_lr": meta_lr,
        }

    def _base_kwargs(self, setup: Setup) -> dict[str, Any]:
        return {"weight_decay": setup.weight_decay}

    def build_optimizer(self, model: nn.Module, setup: Setup) -> GradientCorrectionOptimizer:
        return create_gradient_correction_optimizer(
            model.parameters(),
            lr=setup.lr,
            base_optimizer=self.base,
            **self.options,
            **self._base_kwargs(setup),
        )

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
