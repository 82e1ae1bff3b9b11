"""The baselines every algorithm is measured against: SGD with momentum, and Adam."""

from __future__ import annotations

import torch
from torch import nn

from ..methods import Method, Setup, register


@register
class SGD(Method):
    name = "sgd"
    summary = "SGD with momentum (baseline)"
    default_lr = 0.05

    def build_optimizer(self, model: nn.Module, setup: Setup) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            model.parameters(),
            lr=setup.lr,
            momentum=setup.momentum,
            weight_decay=setup.weight_decay,
        )


@register
class Adam(Method):
    name = "adam"
    summary = "Adam (baseline)"
    default_lr = 1e-3

    def build_optimizer(self, model: nn.Module, setup: Setup) -> torch.optim.Optimizer:
        return torch.optim.Adam(model.parameters(), lr=setup.lr, weight_decay=setup.weight_decay)
