"""LoCal+SGD in the harness: method ``localized-sgd`` (Hebbian early layers, SGD with momentum after T).

The optimizer is :func:`advanced_optimizers.localized.create_localized_optimizer` around
``torch.optim.SGD`` with the harness's lr, momentum and weight decay. Every batch's loss is fed to
the weak-supervision gate; ``end_epoch`` calls the optimizer's epoch hook (which moves the
transition layer) and records ``transition`` (T during the epoch), ``transition_next`` and
``hebbian_gate``. All state (T, its history, the gate) lives in the optimizer's ``state_dict``.
Under ``torchrun``, ``sync_distributed`` pools the ranks' Hebbian terms and averages the gate's
loss, so the update and the transition decisions are those of the global batch.
``hebbian_lr=0`` gives the "localized layers frozen" ablation with the same selection logic.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...localized import LocalizedOptimizer, create_localized_optimizer
from ..methods import Batch, EpochInfo, Method, Setup, register


@register
class LocalizedSGD(Method):
    name = "localized-sgd"
    summary = "LoCal+SGD: Hebbian (Oja subspace) layers before a moving transition layer, SGD after"
    default_lr = 0.05

    def __init__(
        self,
        hebbian_lr: float = 1e-4,
        selection_mode: str = "dynamic",
        weak_supervision_weight: float = 0.1,
        settle_ratio: float = 0.5,
        static_interval: int = 1,
        static_step: int = 1,
        warmup_epochs: int = 1,
        max_transition: int | None = None,
        min_sgd_layers: int = 1,
        hebbian_subsample: float = 0.25,
        hebbian_interval: int = 1,
    ) -> None:
        self.options: dict[str, Any] = {
            "hebbian_lr": hebbian_lr,
            "selection_mode": selection_mode,
            "weak_supervision_weight": weak_supervision_weight,
            "settle_ratio": settle_ratio,
            "static_interval": static_interval,
            "static_step": static_step,
            "warmup_epochs": warmup_epochs,
            "max_transition": max_transition,
            "min_sgd_layers": min_sgd_layers,
            "hebbian_subsample": hebbian_subsample,
            "hebbian_interval": hebbian_interval,
        }

    def build_optimizer(self, model: nn.Module, setup: Setup) -> LocalizedOptimizer:
        return create_localized_optimizer(
            model,
            lr=setup.lr,
            base_optimizer=torch.optim.SGD,
            base_kwargs={"momentum": setup.momentum, "weight_decay": setup.weight_decay},
            **self.options,
        )

    def batch_loss(
        self, model: nn.Module, optimizer: LocalizedOptimizer, batch: Batch, info: EpochInfo
    ) -> torch.Tensor:
        loss = F.cross_entropy(model(batch.x), batch.y)
        optimizer.observe_loss(loss)
        return loss

    def sync_distributed(self, model: nn.Module, optimizer: LocalizedOptimizer) -> None:
        optimizer.sync_distributed()  # pooled Hebbian terms and loss gate of the global batch

    def end_epoch(
        self, model: nn.Module, optimizer: LocalizedOptimizer, info: EpochInfo, train_loss: float
    ) -> dict[str, float]:
        return optimizer.end_epoch(train_loss)
