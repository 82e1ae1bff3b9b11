"""LoCal+SGD in the harness: methods ``localized-sgd`` and ``freezeout-sgd`` (its baseline).

One method per registry entry of the ``localized`` algorithm: ``localized-sgd`` is
:class:`advanced_optimizers.localized.LocalizedOptimizer` around ``torch.optim.SGD`` (Hebbian early
layers, SGD after T), ``freezeout-sgd`` is :class:`advanced_optimizers.localized.FreezeOutOptimizer`
(per-layer cosine-annealed SGD, layers frozen one by one), both with the harness's lr, momentum and
weight decay. The harness supplies ``total_steps`` (epochs × batches per epoch) for the step-based
schedule (``selection_mode="freezeout"``, FreezeOut). Every batch's loss is fed to the
weak-supervision gate; ``end_epoch`` calls the optimizer's epoch hook (which moves the transition
layer) and records ``transition``, ``transition_next``, ``hebbian_gate`` and ``transition_update``.
Under ``torchrun`` ``sync_distributed`` pools the ranks' Hebbian terms and losses. Options: every
keyword parameter of the optimizer class (``hebbian_lr=0`` gives the "localized layers frozen"
ablation). Run FreezeOut with ``--schedule constant``: it anneals every layer itself.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...localized import LocalizedOptimizer
from ..methods import AlgorithmMethod, Batch, EpochInfo, Setup, register_algorithm


@register_algorithm
class LocalizedMethod(AlgorithmMethod):
    """LoCal: every batch's loss feeds the gate; the epoch hook moves the transition layer."""

    algorithm = "localized"
    harness_supplied = frozenset({"total_steps"})

    def run_options(self, setup: Setup) -> dict[str, Any]:
        return {"total_steps": setup.epochs * setup.steps_per_epoch}

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
