"""μP in the harness: methods ``mup-adam``, ``mup-adamw``, ``mup-sgd`` (relative to a base width).

The harness model (MLP or CNN) is built as usual, then its init is rescaled to μP relative to the
same architecture at ``base_width`` (base and a ``base_width + 1`` delta are built on the ``meta``
device; the dims where they differ are the wide ones, as with mup's delta model, so classification
cannot be fooled by a dimension that happens to be a multiple of the width, and the roles are known
even at ``width == base_width``, where ``readout_zero_init`` then still applies). The optimizer is
the registry's μP optimizer with the harness's lr and weight decay taken as the base-width
hyperparameters; at ``width == base_width`` every factor is 1, so ``mup-adam`` is then identical to
the ``adam`` baseline. ``mup-adam`` keeps the baseline's coupled (L2) weight decay to stay comparable
with it (``allow_coupled_weight_decay``); ``mup-adamw`` is decoupled. The residual-depth part of μP
does not apply (the harness models have no residual branches), so only width is transferred.
Options: ``base_width`` and the keyword parameters of ``create_mu_transfer_optimizer``, among them
the two multipliers μTransfer tunes with the LR, ``readout_multiplier`` (mup's ``output_mult``) and
``init_scale`` (the weights' init std), and ``parametrization``: ``"sp"`` trains the same model in
standard parametrization *with the same multipliers* (the readout's and the weights' init and LR
factors at multiplier 1; ``base_width`` is then not used), so SP can be tuned over the same space
(``advopt mu-study``); at ``readout_multiplier = init_scale = 1`` it is identical to ``adam``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ...mup import apply_mup_init, classify_parameters
from ..methods import AlgorithmMethod, Setup, register_algorithm
from ..models import ModelSpec

_SUPPLIED = frozenset(
    {
        "base_model_config",
        "target_model_config",
        "base_model",
        "delta_model",
        "rescale_init",
        "allow_coupled_weight_decay",
    }
)


def _harness_options(base_width: int = 64) -> None:
    """``base_width``: the width of the proxy the hyperparameters are meant for."""


def _shapes(spec: ModelSpec, width: int) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = replace(spec, width=width).build()
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


@register_algorithm
class MuPMethod(AlgorithmMethod):
    """μP: the init is rescaled when the model is built, the learning rates per parameter group."""

    algorithm = "mup"
    harness_supplied = _SUPPLIED
    option_sources = ((_harness_options, frozenset()),)

    def build_model(self, spec: ModelSpec) -> nn.Module:
        model = spec.build()
        base, delta = self._base_shapes(spec)
        infos = classify_parameters(model, base, delta_model=delta)
        apply_mup_init(
            model,
            infos,
            readout_zero_init=self.options["readout_zero_init"],
            readout_multiplier=self.options["readout_multiplier"],
            init_scale=self.options["init_scale"],
        )
        self._spec = spec
        return model

    def _base_shapes(self, spec: ModelSpec) -> tuple[dict, dict]:
        """The base and delta shapes: ``base_width`` (μP), or the model's own width (SP)."""
        sp = self.options["parametrization"] == "sp"
        width = spec.width if sp else self.options["base_width"]
        return _shapes(spec, width), _shapes(spec, width + 1)

    def run_options(self, setup: Setup) -> dict[str, Any]:
        spec = getattr(self, "_spec", None)
        if spec is None:
            raise RuntimeError(f"{self.name}: build_model must be called before build_optimizer")
        base, delta = self._base_shapes(spec)
        return {
            "base_model": base,
            "delta_model": delta,
            "rescale_init": False,  # done in build_model
            "allow_coupled_weight_decay": True,
        }

    def build_optimizer(self, model: nn.Module, setup: Setup) -> torch.optim.Optimizer:
        from ...registry import create_optimizer

        options = {k: v for k, v in self.options.items() if k != "base_width"}
        return create_optimizer(
            self.name,
            model,
            **self.base_hyperparameters(setup),
            **self.run_options(setup),
            **options,
        )
