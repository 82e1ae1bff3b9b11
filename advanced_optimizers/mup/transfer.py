"""μTransfer in one call: :func:`create_mu_transfer_optimizer`."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from .._validation import check_choice, check_positive, check_range
from .classification import ParamInfo, classify_parameters
from .depth import set_depth_multipliers
from .factors import OPTIMIZERS
from .optimizers import MuPAdam, MuPAdamW, MuPSGD, check_hyperparameters
from .parametrize import apply_mup_init, init_record, mup_param_groups
from .shapes import Shapes, config_depth_ratio, unwrap_model

__all__ = ["create_mu_transfer_optimizer"]

_CLASSES = {"adamw": MuPAdamW, "adam": MuPAdam, "sgd": MuPSGD}
_EXTRA_KEYS = {"adamw": ("eps", "betas", "amsgrad"), "sgd": ("momentum", "nesterov", "dampening")}


def create_mu_transfer_optimizer(
    large_model: nn.Module,
    base_model_config: Mapping[str, int] | None = None,
    target_model_config: Mapping[str, int] | None = None,
    base_hyperparams: Mapping[str, Any] | None = None,
    optimizer: str = "adamw",
    *,
    base_model: Shapes | None = None,
    delta_model: Shapes | None = None,
    parametrization: str = "mup",
    depth_alpha: float | None = 0.5,
    roles: Mapping[str, str] | None = None,
    readout_zero_init: bool = False,
    readout_multiplier: float = 1.0,
    init_scale: float = 1.0,
    rescale_init: bool = True,
    scale_eps: bool = True,
    allow_coupled_weight_decay: bool = False,
    lr_ratio_check: str = "warn",
    nonfinite: str = "ignore",
) -> torch.optim.Optimizer:
    """A torch optimizer for ``large_model`` with μP groups, from hyperparameters tuned on the base.

    ``base_model_config`` / ``target_model_config``: ``{'width': w, 'depth': L}`` of the proxy the
    hyperparameters were tuned on and of ``large_model`` (``depth`` optional). Alternatively
    ``base_model``: a narrow instance (or its shapes), optionally with ``delta_model`` (another
    width) to mark the wide dims explicitly (see :func:`~.classification.classify_parameters`).
    ``base_hyperparams``: ``lr`` (required), ``weight_decay`` (0), and ``eps``/``betas``/``amsgrad``
    (Adam) or ``momentum``/``nesterov``/``dampening`` (SGD); every value is checked here (finite,
    in range). Steps: classify, set the :class:`~.depth.DepthScaledResidual` multipliers (a depth
    change on a model without such branches warns and transfers width only), rescale the init
    (``rescale_init``: only for freshly initialised weights — a model whose weights came from a
    checkpoint must be passed with ``rescale_init=False``; see
    :func:`~.parametrize.apply_mup_init`), build the groups (:func:`~.factors.mup_factors`).
    Returns a :class:`~.optimizers.MuPAdamW` / ``MuPAdam`` / ``MuPSGD``.
    ``readout_multiplier`` (mup's ``MuReadout(output_mult=...)``) and ``init_scale`` (a global
    multiplier of the weights' init std), the two multipliers μTransfer tunes with the LR, are
    folded into the readout's init and LR and into every weight's init
    (:func:`~.factors.mup_factors`); 1.0 (default) changes nothing.
    ``parametrization='sp'`` gives the same optimizer with every width factor 1 (the SP control);
    ``readout_multiplier``, ``init_scale`` and ``readout_zero_init`` apply there too, as to a
    model at the base width (an SP model with the same multipliers). Finding the readout in SP
    needs the base information (e.g. ``base_model_config = target_model_config = {'width': w}``,
    or ``base_model`` with ``delta_model``); without ``readout_multiplier``/``readout_zero_init``
    SP ignores it (one group of every parameter).
    ``optimizer='adam'`` with ``weight_decay > 0`` (coupled L2 decay, not width-invariant under
    μP) needs ``allow_coupled_weight_decay=True``.
    """
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_choice("parametrization", parametrization, ("mup", "sp"))
    if depth_alpha is not None:
        check_range("depth_alpha", depth_alpha, 0.0, 1.0)
    check_positive("readout_multiplier", readout_multiplier)
    check_positive("init_scale", init_scale)
    multipliers = {"readout_multiplier": readout_multiplier, "init_scale": init_scale}
    hyper = dict(base_hyperparams or {})
    if "lr" not in hyper:
        raise ValueError(
            "base_hyperparams must contain 'lr', e.g. {'lr': 1e-3, 'weight_decay': 0.01}"
        )
    allowed = _EXTRA_KEYS["sgd" if optimizer == "sgd" else "adamw"]
    for key in hyper:
        check_choice("base_hyperparams key", key, ("lr", "weight_decay", *allowed))
    check_hyperparameters(hyper, "base_hyperparams")
    lr = float(hyper.pop("lr"))
    weight_decay = float(hyper.pop("weight_decay", 0.0))
    if optimizer == "adam" and weight_decay > 0 and not allow_coupled_weight_decay:
        raise ValueError(
            "optimizer='adam' with weight_decay > 0 is Adam with coupled (L2) weight decay, which "
            "μP does not make width-invariant; use optimizer='adamw' (decoupled), or pass "
            "allow_coupled_weight_decay=True if you really mean L2 regularisation"
        )
    eps = hyper.pop("eps", 1e-8) if optimizer != "sgd" else None
    if parametrization == "sp":
        needs_readout = readout_multiplier != 1.0 or readout_zero_init
        if needs_readout:
            infos = _standard_infos(
                large_model, base_model, delta_model, base_model_config, target_model_config, roles
            )
        else:
            infos = [
                ParamInfo(n, tuple(p.shape), "fixed")
                for n, p in unwrap_model(large_model).named_parameters()
            ]
        if rescale_init and (needs_readout or init_scale != 1.0):
            apply_mup_init(large_model, infos, readout_zero_init=readout_zero_init, **multipliers)
    else:
        infos = classify_parameters(
            large_model,
            base_model,
            base_model_config=base_model_config,
            target_model_config=target_model_config,
            roles=roles,
            delta_model=delta_model,
        )
        _apply_depth(large_model, base_model_config, target_model_config, depth_alpha)
        if rescale_init:
            apply_mup_init(large_model, infos, readout_zero_init=readout_zero_init, **multipliers)
    groups = mup_param_groups(
        large_model,
        infos,
        lr,
        optimizer=optimizer,
        weight_decay=weight_decay,
        eps=eps,
        depth_alpha=depth_alpha,
        scale_eps=scale_eps,
        readout_multiplier=readout_multiplier,
    )
    kwargs: dict[str, Any] = {"lr": lr, "weight_decay": weight_decay, **hyper}
    if eps is not None:
        kwargs["eps"] = eps
    opt = _CLASSES[optimizer](groups, lr_ratio_check=lr_ratio_check, nonfinite=nonfinite, **kwargs)
    opt._init_record = init_record(large_model)
    return opt


def _standard_infos(
    model: nn.Module,
    base_model: Shapes | None,
    delta_model: Shapes | None,
    base_config: Mapping[str, int] | None,
    target_config: Mapping[str, int] | None,
    roles: Mapping[str, str] | None,
) -> list[ParamInfo]:
    """The roles of ``model``'s parameters with every multiplier 1 (SP: only the readout matters)."""
    if base_model is None and (base_config is None or target_config is None):
        raise ValueError(
            "parametrization='sp' with readout_multiplier != 1 or readout_zero_init must know "
            "which parameter is the readout: pass base_model_config = target_model_config = "
            "{'width': w} (w: the model's width), or base_model with delta_model"
        )
    infos = classify_parameters(
        model,
        base_model,
        base_model_config=base_config,
        target_model_config=target_config,
        roles=roles,
        delta_model=delta_model,
    )
    if not any(i.role == "output" for i in infos):
        raise ValueError(
            "parametrization='sp': no readout found (no dimension of the model is marked wide); "
            "pass base_model with a delta_model of another width, or the width configs"
        )
    ones = {"fan_in_mult": 1.0, "fan_out_mult": 1.0, "bias_fan_in_mult": 1.0}
    return [replace(i, **ones, depth_ratio=1.0, init_fan_mult=None) for i in infos]


def _apply_depth(
    model: nn.Module,
    base: Mapping[str, int] | None,
    target: Mapping[str, int] | None,
    alpha: float | None,
) -> None:
    ratio = config_depth_ratio(base, target)
    if alpha is None:
        return
    count = set_depth_multipliers(model, ratio, alpha)
    if ratio != 1.0 and count == 0:
        warnings.warn(
            f"depth changes from {base['depth']} to {target['depth']} (base_model_config → "  # type: ignore[index]
            "target_model_config) but the model has no DepthScaledResidual branches, so only width "
            "is transferred: depth transfer needs residual branches; wrap each residual branch as "
            "DepthScaledResidual(branch) (computes x + a·branch(x)), or pass depth_alpha=None to "
            "transfer width only without this warning",
            UserWarning,
            stacklevel=3,
        )
