"""Which layers LoCal can localize, in the order they run, and the checks that keep that honest."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

__all__ = ["check_owns_parameters", "describe_order", "find_localizable_layers"]


def find_localizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ``(name, module)`` of every parametrised layer, in registration order.

    Registration order must be execution order (true for ``nn.Sequential``); the optimizer checks
    it during the first training forward pass. Raises ``ValueError`` naming the first module that
    owns parameters but is not a supported ``nn.Linear`` / ``nn.Conv2d`` (groups=1, zero numeric
    padding), and a parameter shared by two layers (tied weights: a "localized" layer would still
    get gradient updates through its twin).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    layers = []
    owner: dict[int, str] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        own = list(module.parameters(recurse=False))
        if not own:
            continue
        _check_supported(name, module)
        for param in own:
            if id(param) in owner:
                raise ValueError(
                    f"layer {name!r} shares a parameter with layer {owner[id(param)]!r} (tied "
                    "weights); localized learning needs every layer to own its parameters"
                )
            owner[id(param)] = name
        layers.append((name, module))
    if len(layers) < 2:
        raise ValueError(
            f"model must have at least 2 Linear/Conv2d layers to split (a localized part and the "
            f"SGD classifier), found {len(layers)}"
        )
    return layers


def _check_supported(name: str, module: nn.Module) -> None:
    label = f"layer {name!r} ({type(module).__name__})"
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            raise ValueError(
                f"{label}: groups must be 1 for localized learning, got {module.groups}"
            )
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise ValueError(
                f"{label}: padding must be numeric with padding_mode='zeros', got "
                f"padding={module.padding!r}, padding_mode={module.padding_mode!r}"
            )
    elif not isinstance(module, nn.Linear):
        raise ValueError(
            f"{label} owns parameters but localized learning supports only nn.Linear and "
            "nn.Conv2d layers (parameter-free layers such as ReLU, MaxPool2d, Flatten are fine)"
        )


def check_owns_parameters(layers: Iterable[tuple[str, nn.Module]], groups: Iterable[dict]) -> None:
    """Every layer parameter must be one the base optimizer updates (same model, not a copy)."""
    updated = {id(p) for g in groups for p in g["params"]}
    for name, module in layers:
        for local, param in module.named_parameters(recurse=False):
            if id(param) not in updated:
                raise ValueError(
                    f"the base optimizer does not update {name}.{local}: its params must be the "
                    "parameters of the model given to LoCal (hooks and updates would otherwise act "
                    "on different models)"
                )


def describe_order(layers: list[tuple[str, nn.Module]], seen: list[int]) -> str:
    """Text for an execution-order error: the order the layers ran in."""
    return ", ".join(repr(layers[i][0]) for i in seen)


def _unwrap(model: nn.Module) -> nn.Module:
    inner = getattr(model, "module", None)
    if type(model).__name__ in ("DistributedDataParallel", "DataParallel") and isinstance(
        inner, nn.Module
    ):
        return inner
    return model


def _refuse_ddp_without_unused_parameters(model: Any) -> None:
    if type(model).__name__ == "DistributedDataParallel" and not getattr(
        model, "find_unused_parameters", False
    ):
        raise ValueError(
            "LoCal freezes the localized layers (requires_grad=False), so under "
            "DistributedDataParallel some parameters get no gradient: wrap the model with "
            "DistributedDataParallel(model, find_unused_parameters=True)"
        )
