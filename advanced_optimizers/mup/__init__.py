"""μP (maximal-update parametrization) and zero-shot hyperparameter transfer (μTransfer).

Modules, by concept (docs: ``docs/algorithms/mup.md``):

* :mod:`.classification` — which dims grow with width; each parameter's role (:func:`classify_parameters`).
* :mod:`.factors` — the μP table: LR / init / weight-decay / eps factors per role (:func:`mup_factors`).
* :mod:`.parametrize` — rescale the init once, build the param groups, check LR ratios.
* :mod:`.depth` — residual branches scaled with depth (:class:`DepthScaledResidual`).
* :mod:`.attention` — the μP attention scale.
* :mod:`.optimizers` — :class:`MuPAdamW`, :class:`MuPAdam`, :class:`MuPSGD` (torch's, on the shared
  guarded step).
* :mod:`.transfer` — :func:`create_mu_transfer_optimizer`, the one-call entry point.
"""

from .attention import mup_attention_scale, mup_scaled_dot_product_attention
from .classification import (
    ROLES,
    AmbiguousParameterError,
    ParamInfo,
    classify_parameters,
    unwrap_model,
)
from .depth import DepthScaledResidual, residual_mlp, set_depth_multipliers
from .factors import describe_parametrization, mup_factors
from .optimizers import MuPAdam, MuPAdamW, MuPSGD
from .parametrize import apply_mup_init, check_lr_ratios, mup_group_lrs, mup_param_groups
from .transfer import create_mu_transfer_optimizer

__all__ = [
    "ROLES",
    "AmbiguousParameterError",
    "DepthScaledResidual",
    "MuPAdam",
    "MuPAdamW",
    "MuPSGD",
    "ParamInfo",
    "apply_mup_init",
    "check_lr_ratios",
    "classify_parameters",
    "create_mu_transfer_optimizer",
    "describe_parametrization",
    "mup_attention_scale",
    "mup_factors",
    "mup_group_lrs",
    "mup_param_groups",
    "mup_scaled_dot_product_attention",
    "residual_mlp",
    "set_depth_multipliers",
    "unwrap_model",
]
