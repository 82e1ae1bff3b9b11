"""FER in the harness: methods ``fer-adam`` and ``fer-sgd`` (FER on Adam / on SGD with momentum).

The optimizer is :class:`advanced_optimizers.fer.FEROptimizer` with ``memory_size`` equal to
the training-set size; every batch's loss is ``optimizer.fer_loss(model(x), y, batch.index)`` and
``start_epoch`` tells the optimizer the epoch (``λ_t`` needs ``t`` and ``E``). ``end_epoch`` records
``fer_flagged`` (fraction of training samples in the store), ``fer_target_mass`` and ``fer_lambda``.
All FER state (store, flags, epoch) lives in the optimizer's ``state_dict``. Under ``torchrun``,
``sync_distributed`` shares the store rows each rank wrote, so all ranks hold the same store. Options:
``fer_weight`` (γ), ``consistency_threshold`` (τ), ``temperature``, ``mu``, ``warmup_epochs``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ...fer import FEROptimizer
from ..methods import Batch, EpochInfo, Method, Setup, register


class _FERMethod(Method):
    base: ClassVar[str] = ""

    def __init__(
        self,
        fer_weight: float = 0.1,
        consistency_threshold: float = 0.9,
        temperature: float = 5.0,
        mu: float = 1.0,
        warmup_epochs: int = 1,
    ) -> None:
        self.options: dict[str, Any] = {
            "fer_weight": fer_weight,
            "consistency_threshold": consistency_threshold,
            "temperature": temperature,
            "mu": mu,
            "warmup_epochs": warmup_epochs,
        }

    def _base(self, setup: Setup) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
        if self.base == "sgd":
            kwargs = {"lr": setup.lr, "momentum": setup.momentum}
            return torch.optim.SGD, kwargs | {"weight_decay": setup.weight_decay}
        return torch.optim.Adam, {"lr": setup.lr, "weight_decay": setup.weight_decay}

    def build_optimizer(self, model: nn.Module, setup: Setup) -> FEROptimizer:
        base, kwargs = self._base(setup)
        return FEROptimizer(
            model.parameters(),
            base,
            kwargs,
            memory_size=setup.n_train,
            epochs=setup.epochs,
            num_classes=setup.num_classes,
            **self.options,
        )

    def start_epoch(self, model: nn.Module, optimizer: FEROptimizer, info: EpochInfo) -> None:
        optimizer.set_epoch(info.epoch, info.epochs)

    def batch_loss(
        self, model: nn.Module, optimizer: FEROptimizer, batch: Batch, info: EpochInfo
    ) -> torch.Tensor:
        return optimizer.fer_loss(model(batch.x), batch.y, batch.index)

    def sync_distributed(self, model: nn.Module, optimizer: FEROptimizer) -> None:
        optimizer.sync_distributed()  # every rank gets the store rows of the others' shards

    def end_epoch(
        self, model: nn.Module, optimizer: FEROptimizer, info: EpochInfo, train_loss: float
    ) -> dict[str, float]:
        return optimizer.store_summary()


@register
class FERAdam(_FERMethod):
    name = "fer-adam"
    summary = "FER (self-distillation toward earlier correct predictions) on Adam"
    default_lr = 1e-3
    base = "adam"


@register
class FERSGD(_FERMethod):
    name = "fer-sgd"
    summary = "FER (self-distillation toward earlier correct predictions) on SGD with momentum"
    default_lr = 0.05
    base = "sgd"
