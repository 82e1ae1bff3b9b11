"""FER in the harness: methods ``fer-adam`` and ``fer-sgd`` (FER on Adam / on SGD with momentum).

One method per FER entry of the library's registry (``fer-adam``, ``fer-sgd``). The optimizer is
:class:`advanced_optimizers.fer.FEROptimizer` with ``memory_size`` equal to the
training-set size; every batch's loss is ``optimizer.fer_loss(model(x), y, batch.index)`` and
``start_epoch`` tells the optimizer the epoch. ``end_epoch`` records ``fer_flagged`` (fraction of
training samples in the store), ``fer_target_mass`` and ``fer_lambda``. Options: the keyword
parameters of ``FEROptimizer`` the harness does not set (``fer_weight``, ``consistency_threshold``,
``temperature``, ``mu``, ``warmup_epochs``, ``nonfinite``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...fer import FEROptimizer
from ..methods import AlgorithmMethod, Batch, EpochInfo, Setup, TuneOption, register_algorithm


@register_algorithm
class FERMethod(AlgorithmMethod):
    """FER: the loss is ``optimizer.fer_loss(model(x), y, index)``; the epoch goes to the store."""

    algorithm = "fer"
    harness_supplied = frozenset({"memory_size", "epochs", "num_classes"})
    tuned_option = TuneOption("consistency_threshold", choices=(0.0, 0.9))  # advopt tune: tau

    def run_options(self, setup: Setup) -> dict[str, Any]:
        return {
            "memory_size": setup.n_train,
            "epochs": setup.epochs,
            "num_classes": setup.num_classes,
        }

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
