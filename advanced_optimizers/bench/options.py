"""A method's options, read from the library signatures they end up in (defaults live once).

A harness method builds library objects (an optimizer, a model); its user-settable options are the
keyword parameters of those callables minus the ones the harness supplies itself (the parameters,
the learning rate, the training-set size, ...). :func:`option_parameters` collects them with their
defaults and annotations; :func:`resolve_options` checks a user's options against them, turns CLI
strings into the annotated type where that is unambiguous (``"false"`` for a ``bool``), and fills
in every default, so a run records the full configuration it used.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable, Iterable, Mapping
from numbers import Real
from typing import Any

__all__ = ["OptionSource", "option_parameters", "resolve_options"]

# (callable whose keyword parameters are options, names the harness supplies itself)
OptionSource = tuple[Callable[..., Any], frozenset[str]]

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def option_parameters(sources: Iterable[OptionSource]) -> dict[str, inspect.Parameter]:
    """Every user-settable keyword parameter of ``sources`` (first source wins on a clash)."""
    out: dict[str, inspect.Parameter] = {}
    for function, supplied in sources:
        target = function.__init__ if inspect.isclass(function) else function
        hints = _hints(target)
        for name, param in inspect.signature(function).parameters.items():
            if name in supplied or name in out or name == "self":
                continue
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            if param.default is param.empty:
                continue
            out[name] = param.replace(annotation=hints.get(name, param.annotation))
    return out


def _hints(function: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except Exception:  # unresolvable annotations: fall back to the raw ones
        return {}


def resolve_options(
    method: str, parameters: Mapping[str, inspect.Parameter], options: Mapping[str, Any]
) -> dict[str, Any]:
    """Every option with its value: the user's (checked and converted) or the default."""
    unknown = sorted(set(options) - set(parameters))
    if unknown and not parameters:
        raise TypeError(f"method {method!r} takes no options, got {unknown}")
    if unknown:
        allowed = ", ".join(sorted(parameters)) or "none"
        raise TypeError(
            f"method {method!r} has no option {', '.join(map(repr, unknown))}; its options are: "
            f"{allowed}"
        )
    resolved = {}
    for name, param in parameters.items():
        if name in options:
            resolved[name] = _convert(method, name, options[name], param.annotation)
        else:
            resolved[name] = param.default
    return resolved


def _convert(method: str, name: str, value: Any, annotation: Any) -> Any:
    """``value`` as the annotated type where the conversion is unambiguous; else a clear error."""
    allowed = _simple_types(annotation)
    if allowed is None or (value is None and type(None) in allowed):
        return value
    label = f"method {method!r} option {name!r}"
    if bool in allowed:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        if bool in allowed and len(allowed - {bool, type(None)}) == 0:
            raise TypeError(f"{label} must be true or false, got {value!r}")
    if int in allowed and isinstance(value, int) and not isinstance(value, bool):
        return value
    if float in allowed and isinstance(value, Real) and not isinstance(value, bool):
        if not math.isfinite(float(value)):
            raise ValueError(f"{label} must be a finite number, got {value!r}")
        return float(value)
    if str in allowed and isinstance(value, str):
        return value
    names = " or ".join(sorted(t.__name__ for t in allowed))
    raise TypeError(f"{label} must be {names}, got {type(value).__name__} ({value!r})")


def _simple_types(annotation: Any) -> set[type] | None:
    """The plain types an annotation admits (``float | None`` → {float, NoneType}); None if other."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return None
    args = typing.get_args(annotation) if typing.get_origin(annotation) is not None else ()
    members = args if args else (annotation,)
    if not all(m in (bool, int, float, str, type(None)) for m in members):
        return None
    return set(members)
