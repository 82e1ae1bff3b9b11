"""μP in the harness: method ``mup-adam`` (Adam under μP, relative to a base width).

The harness model (MLP or CNN) is built as usual, then its init is rescaled to μP relative to the
same architecture at ``base_width`` (base and a ``base_width + 1`` delta are built on the ``meta``
device; the dims where they differ are the wide ones, as with mup's delta model, so classification
cannot be fooled by a dimension that happens to be a multiple of the width, and the roles are known
even at ``width == base_width``, where ``readout_zero_init`` then still applies).
The optimizer is :class:`advanced_optimizers.mup.MuPAdam` (``torch.optim.Adam`` with
μP param groups), with the harness's lr and weight decay taken as the base-width hyperparameters.
At ``width == base_width`` every factor is 1, so the run is identical to the ``adam`` baseline.

Coupled weight decay: the ``adam`` baseline is ``torch.optim.Adam(weight_decay=...)`` (L2), so to stay
comparable ``mup-adam`` keeps that form (``allow_coupled_weight_decay=True``); with ``decoupled=True``
it uses AdamW instead. The residual-depth part of μP does not apply (the harness models have no
residual branches), so only width is transferred.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ..._validation import check_int
from ...mup import (
    apply_mup_init,
    classify_parameters,
    create_mu_transfer_optimizer,
)
from ..methods import Method, Setup, register
from ..models import ModelSpec


def _base_shapes(spec: ModelSpec, base_width: int) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        base = replace(spec, width=base_width).build()
    return {name: tuple(p.shape) for name, p in base.named_parameters()}


@register
class MuPAdamMethod(Method):
    name = "mup-adam"
    summary = "Adam under muP (width multiplier width/base_width; = adam at base width)"
    default_lr = 1e-3

    def __init__(
        self, base_width: int = 64, readout_zero_init: bool = False, decoupled: bool = False
    ) -> None:
        check_int("base_width", base_width, 1)
        self.options: dict[str, Any] = {
            "base_width": base_width,
            "readout_zero_init": bool(readout_zero_init),
            "decoupled": bool(decoupled),
        }
        self._base: dict[str, tuple[int, ...]] | None = None
        self._delta: dict[str, tuple[int, ...]] | None = None

    def build_model(self, spec: ModelSpec) -> nn.Module:
        model = spec.build()
        self._base = _base_shapes(spec, self.options["base_width"])
        self._delta = _base_shapes(spec, self.options["base_width"] + 1)
        infos = classify_parameters(model, self._base, delta_model=self._delta)
        apply_mup_init(model, infos, readout_zero_init=self.options["readout_zero_init"])
        return model

    def build_optimizer(self, model: nn.Module, setup: Setup) -> torch.optim.Optimizer:
        if self._base is None:
            raise RuntimeError("mup-adam: build_model must be called before build_optimizer")
        return create_mu_transfer_optimizer(
            model,
            base_model=self._base,
            delta_model=self._delta,
            base_hyperparams={"lr": setup.lr, "weight_decay": setup.weight_decay},
            optimizer="adamw" if self.options["decoupled"] else "adam",
            allow_coupled_weight_decay=True,
            rescale_init=False,  # done in build_model
            readout_zero_init=self.options["readout_zero_init"],
        )
