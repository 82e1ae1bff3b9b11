r"""Depth transfer for residual networks: :class:`DepthScaledResidual` branches and their multipliers.

With the depth ratio :math:`r = L / L_0` (target over base depth) and exponent :math:`\alpha`
(``depth_alpha``; :math:`\tfrac12` is Depth-μP, :math:`1` is CompleteP), every residual branch is
scaled by :math:`a = r^{-\alpha}` and its parameters' factors (see :func:`~.factors.mup_factors`)
by::

    branch multiplier a    Adam/AdamW LR       SGD LR              Adam eps
    r^(-α)                 × r^(α-1)           × r^(2α-1)          × r^(-α)

so that each block moves the residual stream by Θ(1/L). At the base depth every factor is 1.
"""

from __future__ import annotations

import torch
from torch import nn

from .._validation import check_positive

__all__ = ["DepthScaledResidual", "residual_mlp", "set_depth_multipliers"]


class DepthScaledResidual(nn.Module):
    r"""``x + a · branch(x)``, the branch multiplier :math:`a` kept as a (persistent) buffer.

    :math:`a = 1` until :func:`set_depth_multipliers` (called by
    :func:`~.transfer.create_mu_transfer_optimizer`) sets it to :math:`(L/L_0)^{-\alpha}`; it is
    saved in the model's ``state_dict``. Parameters inside ``branch`` get the depth factors of the
    module docstring.
    """

    def __init__(self, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch
        self.register_buffer("multiplier", torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.multiplier * self.branch(x)


def residual_mlp(in_features: int, width: int, depth: int, num_classes: int) -> nn.Sequential:
    """``Flatten → Linear(in, w) → [x + a·Linear(ReLU(x))] × depth → ReLU → Linear(w, classes)``."""
    blocks = [
        DepthScaledResidual(nn.Sequential(nn.ReLU(), nn.Linear(width, width))) for _ in range(depth)
    ]
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_features, width),
        *blocks,
        nn.ReLU(),
        nn.Linear(width, num_classes),
    )


def set_depth_multipliers(model: nn.Module, depth_ratio: float, alpha: float) -> int:
    """Set every :class:`DepthScaledResidual` multiplier to ``depth_ratio^(−alpha)``; return the count.

    Wrappers (DDP, ``torch.compile``) hold the model as a submodule, so their branches are found too.
    """
    check_positive("depth_ratio", depth_ratio)
    count = 0
    for module in model.modules():
        if isinstance(module, DepthScaledResidual):
            module.multiplier.fill_(depth_ratio ** (-alpha))
            count += 1
    return count
