"""Apply the μP table to a model: rescale its init once, and build the per-role param groups."""

from __future__ import annotations

import copy
import weakref
from typing import Any

import torch
from torch import nn

from .._validation import check_nonnegative, check_positive
from .classification import ParamInfo
from .factors import mup_factors
from .shapes import unwrap_model

__all__ = ["apply_mup_init", "check_lr_ratios", "mup_group_lrs", "mup_param_groups"]

_MARKS = "_mup_init_marks"  # on the owning module: {local parameter name: _InitMark}


def _data_ptr(param: torch.Tensor) -> int:
    return 0 if param.device.type == "meta" else param.data_ptr()


class _InitMark:
    """A parameter's μP init rescale: the factor, and the parameter's version counter and storage
    right after it (``-1`` once copied).

    Holds the parameter weakly (a wrapper such as FSDP may replace it; a mark must not keep it
    alive). ``copy.deepcopy`` and pickling carry the mark over to the copied parameter.
    """

    __slots__ = ("_ref", "factor", "ptr", "version")

    def __init__(
        self, param: torch.Tensor, factor: float, version: int = -1, ptr: int = -1
    ) -> None:
        self._ref = weakref.ref(param)
        self.factor, self.version, self.ptr = factor, version, ptr

    @property
    def param(self) -> torch.Tensor | None:
        return self._ref()

    def untouched(self) -> bool:
        """Whether the parameter was not written in place (trained, loaded) since its rescale."""
        p = self._ref()
        return p is not None and p._version == self.version and _data_ptr(p) == self.ptr

    def __deepcopy__(self, memo: dict[int, Any]) -> _InitMark:
        p = self._ref()
        return self if p is None else _InitMark(copy.deepcopy(p, memo), self.factor)

    def __reduce__(self) -> tuple[Any, ...]:
        p = self._ref()
        return (_InitMark, (torch.empty(0) if p is None else p, self.factor))


InitRecord = list[_InitMark]


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    prefix, _, local = name.rpartition(".")
    return (model.get_submodule(prefix) if prefix else model), local


def _mark(module: nn.Module, local: str, param: torch.Tensor) -> _InitMark | None:
    """The rescale mark of ``param``, if this very parameter object was rescaled."""
    mark = getattr(module, _MARKS, {}).get(local)
    return mark if mark is not None and mark.param is param else None


@torch.no_grad()
def apply_mup_init(
    model: nn.Module,
    infos: list[ParamInfo],
    *,
    readout_zero_init: bool = False,
    readout_multiplier: float = 1.0,
    init_scale: float = 1.0,
) -> int:
    """Rescale freshly initialised weights in place by each parameter's init factor; return how many
    changed.

    Applies once per parameter object: the rescale is marked on the owning module, keyed to the
    parameter object, so a second call (or a call on a ``copy.deepcopy`` of the model, which
    copies the mark along with the rescaled weights) leaves it alone; asking for other factors
    (another base, ``roles``, ``readout_zero_init``, ``readout_multiplier`` or ``init_scale``: see
    :func:`~.factors.mup_factors`) raises ``ValueError``. Loading a checkpoint
    into a rescaled model keeps the mark, so it is never rescaled again. A model whose weights were
    loaded *before* μP was applied is indistinguishable from a fresh one here: do not rescale it
    (``create_mu_transfer_optimizer(..., rescale_init=False)``); a μP optimizer detects the case on
    resume (see :class:`~.optimizers.MuPAdamW`).
    """
    plain = unwrap_model(model)
    params = dict(plain.named_parameters())
    changed = 0
    for info in infos:
        param = params[info.name]
        module, local = _owner(plain, info.name)
        factor = mup_factors(
            info,
            readout_zero_init=readout_zero_init,
            readout_multiplier=readout_multiplier,
            init_scale=init_scale,
        ).init
        mark = _mark(module, local, param)
        if mark is not None:
            if mark.factor != factor:
                raise ValueError(
                    f"parameter {info.name!r} was already rescaled by {mark.factor:.6g} for μP and is "
                    f"now asked to be rescaled by {factor:.6g} (another base, roles, "
                    "readout_zero_init, readout_multiplier or init_scale); the init is rescaled "
                    "once, when it is fresh: rebuild the model, or pass rescale_init=False"
                )
            continue
        if factor == 0.0:
            param.zero_()
        elif factor != 1.0:
            param.mul_(factor)
        changed += factor != 1.0
        marks = module.__dict__.setdefault(_MARKS, {})
        marks[local] = _InitMark(param, factor, param._version, _data_ptr(param))
    return changed


def init_record(model: nn.Module) -> InitRecord:
    """The marks of every parameter of ``model`` that ``apply_mup_init`` rescaled (factor ≠ 1)."""
    return [
        mark
        for module in unwrap_model(model).modules()
        for local, mark in getattr(module, _MARKS, {}).items()
        if mark.factor != 1.0 and mark.param is module._parameters.get(local)
    ]


def untouched_since_rescale(record: InitRecord) -> bool:
    """True when no recorded parameter was written in place (trained, loaded) since its rescale."""
    return bool(record) and all(mark.untouched() for mark in record)


def mup_param_groups(
    model: nn.Module,
    infos: list[ParamInfo],
    lr: float,
    *,
    optimizer: str = "adamw",
    weight_decay: float = 0.0,
    eps: float | None = None,
    depth_alpha: float | None = 0.5,
    scale_eps: bool = True,
    readout_multiplier: float = 1.0,
) -> list[dict[str, Any]]:
    """Param groups with μP learning rates, weight decays and (Adam) eps.

    ``readout_multiplier``: the readout's LR (and weight-decay) factor for mup's ``output_mult``
    (:func:`~.factors.mup_factors`).

    One group per distinct ``(role, factors)``, in parameter order. Each group carries ``mup_role``
    and ``mup_lr_factor``, so ``lr / mup_lr_factor`` is the base LR of every group.
    """
    check_positive("lr", lr)
    check_nonnegative("weight_decay", weight_decay)
    adam = optimizer != "sgd"
    if adam and eps is None:
        eps = 1e-8
    params = dict(unwrap_model(model).named_parameters())
    groups: dict[tuple, dict[str, Any]] = {}
    for info in infos:
        f = mup_factors(
            info,
            optimizer,
            depth_alpha=depth_alpha,
            scale_eps=scale_eps,
            readout_multiplier=readout_multiplier,
        )
        key = (info.role, f.lr, f.weight_decay, f.eps)
        if key not in groups:
            group: dict[str, Any] = {
                "params": [],
                "lr": lr * f.lr,
                "weight_decay": weight_decay * f.weight_decay,
                "mup_role": info.role,
                "mup_lr_factor": f.lr,
            }
            if adam:
                group["eps"] = eps * f.eps
            groups[key] = group
        groups[key]["params"].append(params[info.name])
    return list(groups.values())


def mup_group_lrs(optimizer: torch.optim.Optimizer, base_lr: float) -> list[float]:
    """``base_lr × mup_lr_factor`` per group, e.g. ``OneCycleLR(opt, max_lr=mup_group_lrs(opt, 1e-2))``."""
    check_positive("base_lr", base_lr)
    return [base_lr * g.get("mup_lr_factor", 1.0) for g in optimizer.param_groups]


def check_lr_ratios(optimizer: torch.optim.Optimizer, rtol: float = 1e-6) -> bool:
    """True when ``lr / mup_lr_factor`` is the same for every μP group (μP ratios intact).

    One pass over the groups in float arithmetic (no tensor work, no allocation); an ``lr`` held
    in an accelerator tensor is not read (that would synchronise) and is not checked.
    """
    lo = hi = None
    for group in optimizer.param_groups:
        factor = group.get("mup_lr_factor")
        if factor is None:
            continue
        lr = group["lr"]
        if isinstance(lr, torch.Tensor):
            if lr.device.type != "cpu":
                continue
            lr = lr.item()
        base = lr / factor
        if lo is None or hi is None:
            lo = hi = base
        elif base < lo:
            lo = base
        elif base > hi:
            hi = base
    return lo is None or hi is None or hi - lo <= rtol * max(abs(hi), 1e-30)
