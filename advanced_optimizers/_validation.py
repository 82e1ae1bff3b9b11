"""Argument checks shared by every optimizer: one clear message that names the argument.

Each check raises the exception type ``torch.optim`` raises for the same mistake (``ValueError`` for a
bad value, ``TypeError`` for a bad type) and names the argument and the allowed values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Real
from typing import Any

__all__ = [
    "check_choice",
    "check_index_tensor",
    "check_int",
    "check_nonnegative",
    "check_positive",
    "check_probability",
    "check_range",
]


def _as_real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} ({value!r})")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must be a number, got NaN")
    return value


def check_range(
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``float(value)`` if it lies in the interval, else raise naming ``name`` and the interval."""
    value = _as_real(name, value)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        raise ValueError(f"{name} must be in {left}{low}, {high}{right}, got {value}")
    return value


def check_positive(name: str, value: Any) -> float:
    """``value > 0`` and finite."""
    return check_range(name, value, 0.0, math.inf, low_open=True, high_open=True)


def check_nonnegative(name: str, value: Any) -> float:
    """``value >= 0`` and finite."""
    return check_range(name, value, 0.0, math.inf, high_open=True)


def check_probability(name: str, value: Any, *, open_high: bool = False) -> float:
    """``0 <= value <= 1`` (or ``< 1`` with ``open_high``)."""
    return check_range(name, value, 0.0, 1.0, high_open=open_high)


def check_int(name: str, value: Any, minimum: int | None = None) -> int:
    """An ``int`` (not a bool), at least ``minimum`` when given."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """``value`` must be one of ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def check_index_tensor(
    name: str, values: Any, high: int, hint: str = "", what: str | None = None
) -> None:
    """``values`` must be an integer tensor with entries in ``[0, high)``.

    On the CPU the range is checked here and the error names the offending values; on an
    accelerator it is an asynchronous device assertion (``torch._assert_async``), so the check adds
    no host synchronisation to the training step.
    """
    import torch

    if not isinstance(values, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(values).__name__}")
    if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got dtype {values.dtype}")
    if values.numel() == 0:
        return
    rule = f"must lie in [0, {high})" if what is None else f"must hold {what} in [0, {high - 1}]"
    if values.device.type != "cpu":
        inside = ((values >= 0) & (values < high)).all()
        torch._assert_async(inside, f"{name} {rule}{hint}")
        return
    lo, hi = (int(v) for v in torch.aminmax(values))
    if lo < 0 or hi >= high:
        raise ValueError(f"{name} {rule}, got values in [{lo}, {hi}]{hint}")
