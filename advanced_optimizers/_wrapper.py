"""The base of every optimizer that wraps another (FER, Gradient Correction, LoCal).

A :class:`WrappedOptimizer` *is* a ``torch.optim.Optimizer`` whose ``param_groups``, ``state`` and
``defaults`` are its base optimizer's (so LR schedulers, ``GradScaler`` and trainers drive the base
directly), whose ``step()`` is the shared template of :mod:`._guard`, and whose ``state_dict()`` is
the base optimizer's state plus keys that name the algorithm and hold its own state::

    {"state": ..., "param_groups": ...,            (the base optimizer's state_dict)
     "algorithm": "fer", "version": 1, "nonfinite": {...}, "extra": {...}}

So the base optimizer's class alone can still load it (torch ignores the extra keys: moving from FER
back to plain Adam keeps Adam's moments). Loading checks the algorithm, its extra state and the base
state's shapes *before* changing anything, so a wrong state fails whole with a message that says
what it is.

A subclass sets ``algorithm`` and overrides what it adds: ``_before_step`` / ``_after_step`` /
``_discard_step`` / ``_guarded_tensors`` (the step), ``_extra_state`` / ``_check_extra_state`` /
``_load_extra_state`` (checkpoints), ``_on_param_group_added`` and ``_on_zero_grad``, and
``_repr_options`` (``repr``).
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from numbers import Real
from typing import Any, ClassVar

import torch

from ._guard import GuardedStep, NonFiniteGuard, call_unhooked_step
from ._state import check_base_state, describe_state, require_keys

__all__ = ["WrappedOptimizer", "build_base_optimizer", "check_base_optimizer"]

_ENVELOPE_KEYS = frozenset({"algorithm", "version", "nonfinite", "extra"})
_HOOK_DICTS = (
    "_optimizer_step_pre_hooks",
    "_optimizer_step_post_hooks",
    "_optimizer_state_dict_pre_hooks",
    "_optimizer_state_dict_post_hooks",
    "_optimizer_load_state_dict_pre_hooks",
    "_optimizer_load_state_dict_post_hooks",
)


def check_base_optimizer(base: Any, owner: str) -> torch.optim.Optimizer:
    """``base`` if it is a usable, built optimizer; else ``TypeError`` naming what is allowed."""
    if not isinstance(base, torch.optim.Optimizer):
        raise TypeError(
            f"{owner}: base_optimizer must be a torch.optim.Optimizer (or, in a constructor that "
            f"builds it, an optimizer class such as torch.optim.Adam), got "
            f"{type(base).__name__} ({base!r:.60})"
        )
    if isinstance(base, torch.optim.LBFGS):
        raise TypeError(
            f"{owner}: base_optimizer LBFGS re-evaluates the closure inside its step, which "
            f"{owner} cannot wrap; use a first-order optimizer (SGD, Adam, AdamW, ...)"
        )
    check_hyperparameters(base, owner)
    return base


def check_hyperparameters(base: torch.optim.Optimizer, owner: str) -> None:
    """Every numeric hyperparameter of every group must be finite (torch admits NaN/inf ``lr``)."""
    for index, group in enumerate(base.param_groups):
        for key, value in group.items():
            values = value if isinstance(value, tuple) else (value,)
            for v in values:
                if isinstance(v, torch.Tensor) and v.numel() == 1:
                    v = v.item()  # construction time only
                if isinstance(v, Real) and not isinstance(v, bool) and not math.isfinite(v):
                    raise ValueError(
                        f"{owner}: {key} must be a finite number, got {value!r} "
                        f"(parameter group {index})"
                    )


def build_base_optimizer(
    params: Any,
    base_optimizer: Any,
    base_kwargs: Mapping[str, Any] | None,
    owner: str,
) -> torch.optim.Optimizer:
    """``base_optimizer(params, **base_kwargs)`` with every misuse reported by argument name."""
    if isinstance(base_optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"{owner}: base_optimizer must be an optimizer class here (it is built on params), got "
            f"an instance of {type(base_optimizer).__name__}; pass the class, e.g. torch.optim.Adam"
        )
    not_optimizer_class = isinstance(base_optimizer, type) and not issubclass(
        base_optimizer, torch.optim.Optimizer
    )
    if not callable(base_optimizer) or not_optimizer_class:
        raise TypeError(
            f"{owner}: base_optimizer must be a torch.optim.Optimizer class such as "
            f"torch.optim.Adam, got {base_optimizer!r:.60}"
        )
    if base_kwargs is None:
        base_kwargs = {}
    if not isinstance(base_kwargs, Mapping):
        raise TypeError(
            f"{owner}: base_optimizer_kwargs must be a dict of the base optimizer's arguments, "
            f"got {type(base_kwargs).__name__} ({base_kwargs!r:.60})"
        )
    lr = base_kwargs.get("lr")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (Real, torch.Tensor))):
        raise TypeError(f"{owner}: lr must be a real number, got {type(lr).__name__} ({lr!r})")
    return check_base_optimizer(base_optimizer(params, **base_kwargs), owner)


class WrappedOptimizer(GuardedStep, torch.optim.Optimizer):
    """An optimizer that adds an algorithm around a built ``base`` optimizer (module docstring).

    Args:
        base: the optimizer that takes the parameter update (``torch.optim.Adam(...)``, ...).
        nonfinite: ``"skip"`` (default), ``"raise"`` or ``"ignore"``; see
            :class:`~advanced_optimizers._guard.NonFiniteGuard`.
    """

    algorithm: ClassVar[str] = ""
    state_version: ClassVar[int] = 1

    def __init__(self, base: torch.optim.Optimizer, *, nonfinite: str = "skip") -> None:
        owner = type(self).__name__
        self.base = check_base_optimizer(base, owner)
        self.guard = NonFiniteGuard(nonfinite, owner=owner)
        self.last_step_skipped = False
        self._warned: set[str] = set()
        for name in _HOOK_DICTS:  # what Optimizer.__init__ sets up, without taking the params
            setattr(self, name, OrderedDict())
        self._warned_capturable_if_run_uncaptured = True
        self._patch_step_function()

    # -- delegation ---------------------------------------------------------------------------
    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.base.param_groups

    @property
    def state(self) -> Any:  # type: ignore[override]
        return self.base.state

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        return self.base.defaults

    def _base_step(self) -> None:
        call_unhooked_step(self.base)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)
        self._on_zero_grad()

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.base.add_param_group(param_group)
        check_hyperparameters(self.base, type(self).__name__)
        self._on_param_group_added(self.param_groups[-1])

    def _on_zero_grad(self) -> None:
        """Called after every ``zero_grad``."""

    def _on_param_group_added(self, group: dict[str, Any]) -> None:
        """Called after ``add_param_group`` added ``group`` to the base."""

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        for hook in self._optimizer_state_dict_pre_hooks.values():
            hook(self)
        state = dict(self.base.state_dict())
        clash = _ENVELOPE_KEYS & set(state)
        if clash:
            raise RuntimeError(
                f"{type(self.base).__name__}.state_dict() uses the keys {sorted(clash)}, which "
                f"{type(self).__name__} needs for its own state"
            )
        state.update(
            algorithm=self.algorithm,
            version=self.state_version,
            nonfinite=self.guard.state_dict(),
            extra=self._extra_state(),
        )
        for hook in self._optimizer_state_dict_post_hooks.values():
            state = hook(self, state) or state
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            state_dict = hook(self, state_dict) or state_dict
        extra = self._check_envelope(state_dict)
        self._check_extra_state(extra)
        base_state = {k: v for k, v in state_dict.items() if k not in _ENVELOPE_KEYS}
        check_base_state(self.base, base_state)
        previous = self.base.state_dict()  # references: a load replaces these tensors, never writes
        skipped = self.guard.skipped_steps
        self.base.load_state_dict(base_state)
        try:
            self.guard.load_state_dict(state_dict["nonfinite"])
            self._load_extra_state(extra)
        except BaseException:  # the algorithm's part failed: give the base its state back
            self.base.load_state_dict(previous)
            self.guard.skipped_steps = skipped
            raise
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)

    def _check_envelope(self, state_dict: Mapping[str, Any]) -> dict[str, Any]:
        owner = type(self).__name__
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        if state_dict.get("algorithm") != self.algorithm:
            raise ValueError(
                f"{owner}.load_state_dict expects the state of a {self.algorithm!r} optimizer, got "
                f"{describe_state(state_dict)}"
            )
        require_keys(state_dict, ("version", "nonfinite", "extra"), f"{owner} state")
        if state_dict["version"] != self.state_version:
            raise ValueError(
                f"{owner} state has version {state_dict['version']}, this library reads version "
                f"{self.state_version}"
            )
        return dict(state_dict["extra"])

    def _extra_state(self) -> dict[str, Any]:
        """The algorithm's own state (tensors, numbers, lists, dicts: ``weights_only``-safe)."""
        return {}

    def _check_extra_state(self, extra: dict[str, Any]) -> None:
        """Raise ``ValueError`` if ``extra`` does not fit this optimizer (nothing is loaded yet)."""

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        """Restore what :meth:`_extra_state` returned (already checked)."""

    # -- misc ---------------------------------------------------------------------------------
    def warn_once(self, key: str, message: str) -> None:
        """A ``RuntimeWarning`` the first time ``key`` is seen (misuse that would repeat per step)."""
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    def _repr_options(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        options = ", ".join(
            f"{k}={v if isinstance(v, str) else repr(v)}" for k, v in self._repr_options().items()
        )
        base = f"{type(self.base).__name__}(lr={self.param_groups[0]['lr']})"
        return f"{type(self).__name__}({options}{', ' if options else ''}base={base})"

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        for name in _HOOK_DICTS:
            self.__dict__.setdefault(name, OrderedDict())
        self._patch_step_function()
