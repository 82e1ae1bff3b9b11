"""The μP optimizers: ``torch.optim.AdamW`` / ``Adam`` / ``SGD`` on the library's guarded step."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from numbers import Real
from typing import Any

import torch

from .._guard import GuardedTorchOptimizer
from .._state import check_base_state
from .._validation import check_choice
from .parametrize import InitRecord, check_lr_ratios, untouched_since_rescale

__all__ = ["LR_RATIO_CHECKS", "MuPAdam", "MuPAdamW", "MuPSGD", "check_hyperparameters"]

LR_RATIO_CHECKS = ("warn", "raise", "ignore")
# key -> (low, high, low open, high open, wording)
_RANGES = {
    "lr": (0.0, math.inf, True, True, "> 0"),
    "weight_decay": (0.0, math.inf, False, True, ">= 0"),
    "eps": (0.0, math.inf, True, True, "> 0"),
    "momentum": (0.0, 1.0, False, True, "in [0, 1)"),
    "dampening": (0.0, 1.0, False, False, "in [0, 1]"),
}
_FLAGS = ("amsgrad", "nesterov", "maximize")


def _check_number(name: str, value: Any, key: str) -> None:
    low, high, low_open, high_open, wording = _RANGES[key]
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.requires_grad:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(
            f"{name} must be a real number {wording}, got {type(value).__name__} ({value!r})"
        )
    v = float(value)
    inside = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not (math.isfinite(v) and inside):
        raise ValueError(f"{name} must be a finite number {wording}, got {value!r}")


def check_hyperparameters(values: Mapping[str, Any], where: str = "") -> None:
    """Check every known numeric entry (``lr``, ``betas``, ``eps``, ``momentum``, ...) of ``values``.

    Finite; ``lr > 0``, ``eps > 0``, ``weight_decay >= 0``, ``momentum`` and each of ``betas`` in
    ``[0, 1)``, ``dampening`` in ``[0, 1]``; flags are bools. Errors name ``where[key]``.
    """
    for key, value in values.items():
        name = f"{where}[{key!r}]" if where else key
        if key in _RANGES:
            _check_number(name, value, key)
        elif key == "betas":
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                raise TypeError(
                    f"{name} must be a pair (beta1, beta2) in [0, 1), got "
                    f"{type(value).__name__} ({value!r})"
                )
            for i, beta in enumerate(value):
                _check_number(f"{name}[{i}]", beta, "momentum")
        elif key in _FLAGS and not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")


class _MuPStep(GuardedTorchOptimizer):
    """μP's hooks on the shared step: the LR-ratio check and the resume check."""

    lr_ratio_check: str = "warn"
    _init_record: InitRecord | tuple = ()
    _verify_init = False

    def __init__(
        self, params: Any, lr_ratio_check: str = "warn", nonfinite: str = "ignore", **kwargs: Any
    ) -> None:
        check_hyperparameters(kwargs)
        super().__init__(params, **kwargs)  # the torch optimizer class that follows in the MRO
        self._init_mup(lr_ratio_check, nonfinite)

    def _init_mup(self, lr_ratio_check: str, nonfinite: str) -> None:
        self.lr_ratio_check = check_choice("lr_ratio_check", lr_ratio_check, LR_RATIO_CHECKS)
        for i, group in enumerate(self.param_groups):  # type: ignore[attr-defined]
            check_hyperparameters(
                {k: v for k, v in group.items() if k != "params"}, f"param_groups[{i}]"
            )
        self._init_guard(nonfinite)

    def _before_step(self) -> None:
        """Check that ``lr / mup_lr_factor`` is equal across μP groups (a scheduler set absolute LRs?).

        One pass over the groups in float arithmetic (:func:`~.parametrize.check_lr_ratios`).
        """
        if self.lr_ratio_check == "ignore" or check_lr_ratios(self):  # type: ignore[arg-type]
            return
        message = (
            "μP learning-rate ratios between param groups changed (lr / mup_lr_factor differs): "
            "something set absolute learning rates, e.g. OneCycleLR/CyclicLR with a scalar max_lr "
            "or a non-zero eta_min/min_lr; use relative schedulers or mup_group_lrs()"
        )
        if self.lr_ratio_check == "raise":
            raise RuntimeError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)

    def _start_step(self, loss: Any) -> None:
        if self._verify_init:
            self._verify_init = False
            if untouched_since_rescale(self._init_record):  # type: ignore[arg-type]
                raise RuntimeError(
                    f"{type(self).__name__}: a trained optimizer state was loaded, but no "
                    "parameter rescaled by μP's init has been written since the rescale: the "
                    "model's weights were loaded before create_mu_transfer_optimizer rescaled them "
                    "(rescaled twice), or never loaded. Load checkpoint weights into a model built "
                    "by create_mu_transfer_optimizer(..., rescale_init=False), or create the "
                    "optimizer first and load the model and optimizer states after"
                )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load after checking, before anything changes, that the state is for this model and
        parametrization (shapes, groups and their ``mup_role``)."""
        check_base_state(self, state_dict)  # type: ignore[arg-type]
        for i, (group, saved) in enumerate(
            zip(self.param_groups, state_dict["param_groups"], strict=True)  # type: ignore[attr-defined]
        ):
            if group.get("mup_role") != saved.get("mup_role"):
                raise ValueError(
                    f"state_dict's param group {i} has mup_role {saved.get('mup_role')!r}, this "
                    f"optimizer's has {group.get('mup_role')!r}: it was saved for a model "
                    "classified differently (another architecture, base or roles)"
                )
        super().load_state_dict(state_dict)
        self._verify_init = bool(state_dict["state"])

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        for key in ("lr_ratio_check", "_init_record", "_verify_init"):
            state[key] = getattr(self, key)
        return state


class MuPAdamW(_MuPStep, torch.optim.AdamW):
    """``torch.optim.AdamW`` over μP param groups (:func:`~.parametrize.mup_param_groups`).

    Each group carries ``mup_role`` and ``mup_lr_factor``. Before each step that the non-finite
    guard lets through (``nonfinite``: ``"ignore"``, the default, as torch and mup, with no host
    sync; ``"skip"`` or ``"raise"``; skips are counted in ``skipped_steps``), ``lr_ratio_check``
    (``"warn"``, ``"raise"``, ``"ignore"``) checks that ``lr / mup_lr_factor`` is equal across μP
    groups. ``load_state_dict`` refuses, before
    loading anything, a state saved for another model size or parametrization; after it, the first
    step refuses to continue a trained state on weights that were rescaled but never written since
    (a checkpoint loaded before the rescale).
    """

    torch_class = torch.optim.AdamW


class MuPAdam(_MuPStep, torch.optim.Adam):
    """``torch.optim.Adam`` over μP param groups; as :class:`MuPAdamW`."""

    torch_class = torch.optim.Adam


class MuPSGD(_MuPStep, torch.optim.SGD):
    """``torch.optim.SGD`` over μP param groups; as :class:`MuPAdamW`."""

    torch_class = torch.optim.SGD
