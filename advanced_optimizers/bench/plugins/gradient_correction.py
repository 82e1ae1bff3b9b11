"""Gradient Correction in the harness: methods ``gc-adam`` and ``gc-sgd``.

The optimizer is :class:`advanced_optimizers.gradient_correction.GradientCorrectionOptimizer` around
``torch.optim.Adam`` (``gc-adam``) or ``torch.optim.SGD`` with the harness's momentum (``gc-sgd``),
with the harness's lr and weight decay. Options: its keyword parameters (``use_gcw``, ``use_gcode``,
``gcw_strength``, ``gcode_strength``, ``history``, ``meta_lr``, ``nonfinite``). ``end_epoch``
records the optimizer's diagnostics of the epoch.
"""

from __future__ import annotations

from torch import nn

from ...gradient_correction import GradientCorrectionOptimizer
from ..methods import AlgorithmMethod, EpochInfo, TuneOption, register_algorithm


@register_algorithm
class GradientCorrectionMethod(AlgorithmMethod):
    """Gradient Correction: the optimizer's diagnostics are recorded per epoch."""

    algorithm = "gc"
    # advopt tune: the GC-ODE difference, the last one (two-step scheme) or averaged (Adan-like)
    tuned_option = TuneOption("difference_decay", choices=(0.0, 0.9))

    def end_epoch(
        self,
        model: nn.Module,
        optimizer: GradientCorrectionOptimizer,
        info: EpochInfo,
        train_loss: float,
    ) -> dict[str, float]:
        stats = optimizer.diagnostics(reset=True)
        return {k: v for k, v in stats.items() if k != "gc_tensor_steps"}
