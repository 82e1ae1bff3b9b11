"""The one step template every optimizer of the library shares, and its non-finite-gradient guard.

Every optimizer here steps the same way::

    loss = closure()                       (if given, under enable_grad)
    start_step()                           (misuse warnings; runs for every step)
    if guard refuses the gradients:        policy "skip": warn, count, change nothing
        discard what this step prepared    (FER's pending store rows, LoCal's Hebbian terms)
        return loss
    before_step()                          (an algorithm's work on the gradients)
    base step                              (torch's own update, called without its hook runner)
    after_step()                           (an algorithm's work after the update)

:class:`GuardedStep` holds that template; :class:`~advanced_optimizers._wrapper.WrappedOptimizer`
(FER, Gradient Correction, LoCal) takes its base step from a wrapped optimizer, and
:class:`GuardedTorchOptimizer` (μP, SigProp) from a torch optimizer class it subclasses.

Hooks: torch wraps a class's ``step`` with the runner of step pre/post hooks (once per class,
``step.hooked``). The template runs under that runner, so the base step must be called *unwrapped*,
or every hook fires twice (:func:`call_unhooked_step`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch

from ._finite import all_finite, grads_of
from ._state import check_base_state
from ._validation import check_choice

__all__ = [
    "NONFINITE_POLICIES",
    "GuardedStep",
    "GuardedTorchOptimizer",
    "NonFiniteGuard",
    "call_unhooked_step",
    "evaluate_closure",
]

NONFINITE_POLICIES = ("skip", "raise", "ignore")


class NonFiniteGuard:
    """What a step does when a gradient (or other step input) holds NaN or ±inf.

    ``policy``: ``"skip"`` (default) counts the step in :attr:`skipped_steps`, warns at the 1st,
    10th, 100th, ... skipped step (a diverged run does not print one warning per step), and leaves
    the parameters and *all* optimizer state untouched; ``"raise"`` raises ``FloatingPointError``;
    ``"ignore"`` steps anyway, as plain ``torch.optim`` does, and costs no host sync. The check is
    exact for every dtype (a large finite ``float16`` gradient is never skipped) and costs one host
    sync per step (:func:`~advanced_optimizers._finite.all_finite`).
    """

    def __init__(self, policy: str = "skip", owner: str = "optimizer") -> None:
        self.policy = check_choice("nonfinite", policy, NONFINITE_POLICIES)
        self.owner = owner
        self.skipped_steps = 0

    def allows(self, tensors: Iterable[torch.Tensor | None]) -> bool:
        """Whether the step may go ahead given its inputs (warns or raises per the policy)."""
        if self.policy == "ignore" or all_finite(tensors):
            return True
        if self.policy == "raise":
            raise FloatingPointError(
                f"{self.owner}: non-finite gradient; step refused (nonfinite='raise')"
            )
        self.skipped_steps += 1
        if _is_power_of_ten(self.skipped_steps):  # the 1st, 10th, 100th, ...: not one per step
            warnings.warn(
                f"{self.owner}: non-finite gradient, step skipped (parameters and optimizer state "
                f"unchanged; {self.skipped_steps} skipped so far, counted in skipped_steps; "
                f"the next warning at {10 * self.skipped_steps})",
                RuntimeWarning,
                stacklevel=4,
            )
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped_steps = int(state["skipped_steps"])


def evaluate_closure(closure: Callable[[], Any] | None) -> Any:
    """``closure()`` under ``enable_grad`` (``None`` without a closure), as torch optimizers do."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def _unhooked(step: Callable[..., Any]) -> Callable[..., Any]:
    return step.__wrapped__ if getattr(step, "hooked", False) else step


def call_unhooked_step(optimizer: torch.optim.Optimizer) -> Any:
    """``optimizer.step()`` without torch's hook runner (the caller's runner already ran it)."""
    return _unhooked(type(optimizer).step)(optimizer)


class GuardedStep:
    """The step template (see the module docstring); subclasses provide :meth:`_base_step`.

    Subclasses may override :meth:`_start_step`, :meth:`_guarded_tensors` (what must be finite),
    :meth:`_before_step`,
    :meth:`_after_step` and :meth:`_discard_step`. ``last_step_skipped`` tells hooks and trainers
    whether the latest ``step()`` changed anything.
    """

    guard: NonFiniteGuard
    last_step_skipped: bool = False

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Evaluate ``closure``; unless the guard refuses, run the algorithm's step; return the loss."""
        loss = evaluate_closure(closure)
        self._start_step(loss)
        if not self.guard.allows(self._guarded_tensors()):
            self.last_step_skipped = True
            self._discard_step()
            return loss
        self.last_step_skipped = False
        self._before_step()
        self._base_step()
        self._after_step()
        return loss

    @property
    def skipped_steps(self) -> int:
        """Steps skipped for a non-finite gradient so far (saved in ``state_dict``)."""
        return self.guard.skipped_steps

    def _start_step(self, loss: Any) -> None:
        """Called at every ``step()``, taken or skipped, before the guard, with the closure's loss
        (``None`` without a closure): misuse warnings, losses an algorithm observes."""

    def _guarded_tensors(self) -> list[torch.Tensor]:
        return grads_of(self)  # type: ignore[arg-type]

    def _before_step(self) -> None:
        """The algorithm's work before the base update (the gradients are finite here)."""

    def _base_step(self) -> None:
        raise NotImplementedError

    def _after_step(self) -> None:
        """The algorithm's work after the base update."""

    def _discard_step(self) -> None:
        """Drop what this step prepared (the step was skipped)."""


class GuardedTorchOptimizer(GuardedStep):
    """Mixin for a subclass of a torch optimizer class: the template around that class's step.

    Put it first among the bases (``class MuPAdamW(GuardedTorchOptimizer, torch.optim.AdamW)``) and
    call :meth:`_init_guard` at the end of ``__init__``. The skip counter is saved in
    ``state_dict()["nonfinite"]`` (torch's ``load_state_dict`` ignores the extra key, so such a
    state still loads into the plain torch class).
    """

    torch_class: ClassVar[type[torch.optim.Optimizer]]

    def _init_guard(self, nonfinite: str) -> None:
        self.guard = NonFiniteGuard(nonfinite, owner=type(self).__name__)

    def _base_step(self) -> None:
        _unhooked(self.torch_class.step)(self)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()  # type: ignore[misc]
        state["guard"] = self.guard  # torch keeps only defaults, state and param_groups
        return state

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()  # type: ignore[misc]
        state["nonfinite"] = self.guard.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        guard = state_dict.pop("nonfinite", None)
        check_base_state(self, state_dict)  # type: ignore[arg-type]
        super().load_state_dict(state_dict)  # type: ignore[misc]
        if guard is not None:
            self.guard.load_state_dict(guard)


def _is_power_of_ten(n: int) -> bool:
    while n % 10 == 0:
        n //= 10
    return n == 1
