"""Harness method ``sigprop-adam``: Signal Propagation (forward-only local learning, no backprop across layers).

The model has the same layers as the harness's backprop model for the same ``ModelSpec`` (MLP:
``[Linear(width) → ReLU] x depth → Linear``; CNN: the VGG blocks with every conv a local block, then the
Linear(128) block and the output layer), plus the label → signal projection (and, only with
``norm="layer"``/``"instance"``, the normalisation layers). Layer initialisation
draws from the RNG in the same order as ``ModelSpec.build()``, so under one seed the shared layers
start from the same weights as the backprop model. The optimizer is Adam (the official examples' and
the harness baseline's optimizer): layers at ``lr``, signal projection at ``signal_lr``.

Options: the model's (``loss``, ``topk``, ``activation``, ``layerwise_backward``, ``norm``; CNN only:
``loss_before_pool``) and the optimizer's (``betas``, ``eps``, ``nonfinite``) keyword parameters,
and ``signal_lr`` (default ``None``: the run's ``lr``, as the official code, which trains every
module at one learning rate). Defaults are the official code's choices where it has them: local loss
before pooling, one learning rate; ``norm="none"`` keeps the layers of the backprop model. The batch
loss is ``model(x, y)``; under ``torchrun`` the similarity columns range over the global batch's
labels (gathered from every rank), so the data-parallel gradients equal a single process's. Extra
metric per epoch: ``signal_train_acc``, nearest-class-signal accuracy of the last hidden block on the
epoch's training batches.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..._distributed import all_reduce_sum
from ...sigprop import SigPropCNN, SigPropNet
from ..distributed import unshard, world_size
from ..methods import AlgorithmMethod, Batch, EpochInfo, Setup, TuneOption, register_algorithm
from ..models import ModelSpec

_MODEL_SUPPLIED = frozenset({"input_dim", "hidden_dims", "output_dim", "bias"})
_CNN_SUPPLIED = frozenset({"input_shape", "channels", "num_classes", "convs_per_stage", "fc_dims"})
_MODEL_OPTIONS = ("loss", "topk", "activation", "layerwise_backward", "norm")
_CNN_OPTIONS = ("loss_before_pool",)


def _harness_options(signal_lr: float | None = None) -> None:
    """``signal_lr``: the signal projection's learning rate (``None``: the run's lr)."""


@register_algorithm
class SigPropMethod(AlgorithmMethod):
    """SigProp: its own network (the harness model's layers plus the signal projection)."""

    algorithm = "sigprop"
    harness_supplied = frozenset({"signal_lr"})
    # advopt tune: the official code's plain layers against per-sample normalisation (LayerNorm on
    # vectors, InstanceNorm on conv maps), which docs/algorithms/sigprop.md measured helping the CNN
    tuned_option = TuneOption("norm", choices=("none", "instance"))
    option_sources = (
        (SigPropNet, _MODEL_SUPPLIED),
        (SigPropCNN, _CNN_SUPPLIED),
        (_harness_options, frozenset()),
    )

    def build_model(self, spec: ModelSpec) -> nn.Module:
        options = {k: self.options[k] for k in _MODEL_OPTIONS}
        if spec.arch == "mlp":
            if spec.depth < 1:
                raise ValueError("sigprop needs an mlp with depth >= 1 (a hidden layer to train)")
            return SigPropNet(
                spec.input_dim, [spec.width] * spec.depth, spec.num_classes, **options
            )
        channels = [spec.width * 2**block for block in range(spec.depth)]
        options.update({k: self.options[k] for k in _CNN_OPTIONS})
        return SigPropCNN(spec.input_shape, channels, spec.num_classes, fc_dims=(128,), **options)

    def build_optimizer(self, model: nn.Module, setup: Setup) -> torch.optim.Optimizer:
        from ...registry import create_optimizer

        signal_lr = self.options["signal_lr"]
        model_options = (*_MODEL_OPTIONS, *_CNN_OPTIONS, "signal_lr")
        rest = {k: v for k, v in self.options.items() if k not in model_options}
        return create_optimizer(
            self.name,
            model,
            **self.base_hyperparameters(setup),
            signal_lr=setup.lr if signal_lr is None else signal_lr,
            **rest,
        )

    def start_epoch(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, info: EpochInfo
    ) -> None:
        model.reset_signal_accuracy()

    def batch_loss(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, info: EpochInfo
    ) -> torch.Tensor:
        columns = unshard(batch.y) if world_size() > 1 else None  # the global batch's labels
        return model(batch.x, batch.y, column_labels=columns)

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
