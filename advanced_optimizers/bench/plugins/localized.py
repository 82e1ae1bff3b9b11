"""LoCal+SGD in the harness: method ``localized-sgd`` (Hebbian early layers, SGD after T).

The optimizer is :class:`advanced_optimizers.localized.LocalizedOptimizer` around ``torch.optim.SGD``
with the harness's lr, momentum and weight decay. Every batch's loss is fed to the weak-supervision
gate; ``end_epoch`` calls the optimizer's epoch hook (which moves the transition layer) and records
``transition``, ``transition_next``, ``hebbian_gate`` and ``transition_update``. Under ``torchrun``
``sync_distributed`` pools the ranks' Hebbian terms and losses. Options: every keyword parameter of
``LocalizedOptimizer`` (``hebbian_lr=0`` gives the "localized layers frozen" ablation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...localized import LocalizedOptimizer
from ..methods import AlgorithmMethod, Batch, EpochInfo, register_algorithm


@register_algorithm
class LocalizedMethod(AlgorithmMethod):
    """LoCal: every batch's loss feeds the gate; the epoch hook moves the transition layer."""

    algorithm = "localized"

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
