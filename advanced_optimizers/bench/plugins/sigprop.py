"""Harness method ``sigprop``: Signal Propagation (forward-only local learning, no backprop across layers).

The model has the same layers as the harness's backprop model for the same ``ModelSpec`` (MLP:
``[Linear(width) → ReLU] x depth → Linear``; CNN: the VGG blocks with every conv a local block, then the
Linear(128) block and the output layer), plus the label → signal projection. Layer initialisation
draws from the RNG in the same order as ``ModelSpec.build()``, so under one seed the shared layers
start from the same weights as the backprop model. The optimizer is Adam (the official examples' and
the harness baseline's optimizer): layers at ``lr``, signal projection at ``signal_lr``.

Options: ``loss`` (v14 | topk | max_all | l2, default v14), ``topk`` (6), ``signal_lr`` (default
``0.1 * lr``, the seed API's 1e-3/1e-4 ratio), ``layerwise_backward`` (True: each local loss is
back-propagated at once so activation memory does not grow with depth).
Under ``torchrun`` the similarity columns range over the global batch's labels (gathered from every
rank), so the data-parallel gradients equal a single process's.
Extra metric per epoch: ``signal_train_acc``, nearest-class-signal accuracy of the last hidden block
on the epoch's training batches (measured during training from scores the loss already computes).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..._distributed import all_reduce_sum
from ..._validation import check_choice, check_int, check_positive
from ...sigprop import LOCAL_LOSSES, SigPropCNN, SigPropNet, create_sigprop_optimizer
from ..distributed import unshard, world_size
from ..methods import Batch, EpochInfo, Method, Setup, register
from ..models import ModelSpec


@register
class SigProp(Method):
    name = "sigprop"
    summary = "Signal Propagation: label signal sent forward, layer-local losses (no backprop)"
    default_lr = 1e-3

    def __init__(
        self,
        loss: str = "v14",
        topk: int = 6,
        signal_lr: float | None = None,
        layerwise_backward: bool = True,
    ) -> None:
        check_choice("loss", loss, LOCAL_LOSSES)
        check_int("topk", topk, 1)
        if signal_lr is not None:
            check_positive("signal_lr", signal_lr)
        check_choice("layerwise_backward", layerwise_backward, (True, False))
        self.options: dict[str, Any] = {
            "loss": loss,
            "topk": topk,
            "signal_lr": signal_lr,
            "layerwise_backward": layerwise_backward,
        }

    def build_model(self, spec: ModelSpec) -> nn.Module:
        loss, topk = self.options["loss"], self.options["topk"]
        if spec.arch == "mlp":
            if spec.depth < 1:
                raise ValueError("sigprop needs an mlp with depth >= 1 (a hidden layer to train)")
            return SigPropNet(
                spec.input_dim, [spec.width] * spec.depth, spec.num_classes, loss=loss, topk=topk
            )
        channels = [spec.width * 2**block for block in range(spec.depth)]
        return SigPropCNN(
            spec.input_shape, channels, spec.num_classes, fc_dims=(128,), loss=loss, topk=topk
        )

    def build_optimizer(self, model: nn.Module, setup: Setup) -> torch.optim.Optimizer:
        signal_lr = self.options["signal_lr"]
        return create_sigprop_optimizer(
            model,
            lr=setup.lr,
            signal_lr=0.1 * setup.lr if signal_lr is None else signal_lr,
            weight_decay=setup.weight_decay,
        )

    def start_epoch(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, info: EpochInfo
    ) -> None:
        model.reset_signal_accuracy()

    def batch_loss(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, info: EpochInfo
    ) -> torch.Tensor:
        columns = unshard(batch.y) if world_size() > 1 else None  # the global batch's labels
        return model.training_loss(
            batch.x,
            batch.y,
            layerwise_backward=self.options["layerwise_backward"],
            column_labels=columns,
        )

    def end_epoch(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        info: EpochInfo,
        train_loss: float,
    ) -> dict[str, float]:
        counts = torch.stack([model.signal_hits, model.signal_seen]).to(torch.float64)
        all_reduce_sum([counts])  # every rank's training batches (no-op in one process)
        hits, seen = counts.tolist()
        return {"signal_train_acc": hits / seen if seen else math.nan}
