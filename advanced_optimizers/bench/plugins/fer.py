"""FER in the harness: methods ``fer-adam`` and ``fer-sgd`` (FER on Adam / on SGD with momentum).

The optimizer is :class:`advanced_optimizers.fer.FEROptimizer` with ``memory_size`` equal to the
training-set size; every batch's loss is ``optimizer.fer_loss(model(x), y, batch.index)`` and
``start_epoch`` tells the optimizer the epoch. ``end_epoch`` records ``fer_flagged`` (fraction of
training samples in the store), ``fer_target_mass`` and ``fer_lambda``. Options: the keyword
parameters of ``FEROptimizer`` the harness does not set (``fer_weight``, ``consistency_threshold``,
``temperature``, ``mu``, ``warmup_epochs``, ``nonfinite``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ...fer import FEROptimizer
from ..methods import Batch, EpochInfo, Method, Setup, register

_SUPPLIED = frozenset(
    {"params", "base_optimizer", "base_optimizer_kwargs", "memory_size", "epochs", "num_classes"}
)


class _FERMethod(Method):
    base: ClassVar[str] = ""
    option_sources = ((FEROptimizer, _SUPPLIED),)

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
