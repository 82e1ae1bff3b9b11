"""One factory and one list of names for every optimizer of the library (like ``timm.optim``).

``create_optimizer("fer-adam", model, lr=1e-3, memory_size=len(train_set), epochs=10)`` builds the
optimizer registered under that name; :func:`list_optimizers` gives the names. A name is
``<algorithm>-<base optimizer>`` with the algorithm's one short name (``fer``, ``gc``,
``localized``, ``mup``, ``sigprop``). The experiment harness's algorithm methods are built from
this same list, so a name here is a method there.

Every builder takes the model (or its parameters) first, then ``lr``, the base optimizer's usual
hyperparameters, and the algorithm's options as keywords.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .fer import FEROptimizer
from .gradient_correction import GradientCorrectionOptimizer
from .localized import FreezeOutOptimizer, LocalizedOptimizer, create_freezeout_optimizer
from .mup import create_mu_transfer_optimizer
from .sigprop import SigPropBase, create_sigprop_optimizer

__all__ = ["OptimizerEntry", "create_optimizer", "get_entry", "list_optimizers"]


@dataclass(frozen=True)
class OptimizerEntry:
    """A registered optimizer: its name, algorithm, builder and what the builder needs.

    ``build(model_or_params, **options)`` returns the optimizer. ``base``: the base optimizer
    (``adam``, ``adamw`` or ``sgd``; SGD bases take ``momentum``, 0.9 by default). ``needs_model``: the algorithm
    works on the model itself (hooks, layers, shapes), not only its parameters. ``options``: the
    callables whose keyword parameters are the algorithm's options (for documentation and the
    harness), with the names the builder sets itself.
    """

    name: str
    algorithm: str
    summary: str
    build: Callable[..., torch.optim.Optimizer]
    default_lr: float
    base: str = "adam"
    needs_model: bool = False
    options: tuple[tuple[Callable[..., Any], frozenset[str]], ...] = ()


_REGISTRY: dict[str, OptimizerEntry] = {}


def _register(entry: OptimizerEntry) -> None:
    if entry.name in _REGISTRY:
        raise ValueError(f"optimizer name {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry


def list_optimizers(algorithm: str | None = None) -> list[str]:
    """Every registered name (of one ``algorithm``, if given), in registration order."""
    return [n for n, e in _REGISTRY.items() if algorithm is None or e.algorithm == algorithm]


def get_entry(name: str) -> OptimizerEntry:
    """The registry entry of ``name`` (``ValueError`` listing the names if unknown)."""
    if name not in _REGISTRY:
        raise ValueError(f"name must be one of {', '.join(_REGISTRY)}; got {name!r}")
    return _REGISTRY[name]


def create_optimizer(
    name: str, model_or_params: nn.Module | Iterable[Any], **options: Any
) -> torch.optim.Optimizer:
    """Build the optimizer registered as ``name`` for a model (or its parameters).

    Algorithms that need the model (LoCal, μP, SigProp) refuse a bare parameter list with an error
    that says so. ``options``: ``lr``, the base optimizer's hyperparameters (``weight_decay``,
    ``momentum`` for SGD bases, ``betas``/``eps`` for Adam bases) and the algorithm's options.
    """
    entry = get_entry(name)
    if entry.needs_model and not isinstance(model_or_params, nn.Module):
        raise TypeError(
            f"{name!r} works on the model itself (its layers or shapes): pass the nn.Module, "
            f"not {type(model_or_params).__name__}"
        )
    return entry.build(model_or_params, **options)


def _params(model_or_params: nn.Module | Iterable[Any]) -> Any:
    if isinstance(model_or_params, nn.Module):
        return model_or_params.parameters()
    return model_or_params


def _base_kwargs(base: str, lr: float, weight_decay: float, extra: dict[str, Any]) -> dict:
    kwargs = {"lr": lr, "weight_decay": weight_decay}
    keys = ("momentum", "dampening", "nesterov") if base == "sgd" else ("betas", "eps", "amsgrad")
    for key in keys:
        if key in extra:
            kwargs[key] = extra.pop(key)
    if base == "sgd":
        kwargs.setdefault("momentum", 0.9)
    return kwargs


_BASES = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
_DEFAULT_LR = {"adam": 1e-3, "adamw": 1e-3, "sgd": 0.05}


def _fer_builder(base: str) -> Callable[..., torch.optim.Optimizer]:
    def build(
        model_or_params: Any, lr: float = _DEFAULT_LR[base], weight_decay: float = 0.0, **options
    ) -> FEROptimizer:
        kwargs = _base_kwargs(base, lr, weight_decay, options)
        return FEROptimizer(_params(model_or_params), _BASES[base], kwargs, **options)

    return build


def _gc_builder(base: str) -> Callable[..., torch.optim.Optimizer]:
    def build(
        model_or_params: Any, lr: float = _DEFAULT_LR[base], weight_decay: float = 0.0, **options
    ) -> GradientCorrectionOptimizer:
        kwargs = _base_kwargs(base, lr, weight_decay, options)
        return GradientCorrectionOptimizer(
            _BASES[base](_params(model_or_params), **kwargs), **options
        )

    return build


def _localized_build(
    model: nn.Module, lr: float = 0.05, weight_decay: float = 0.0, **options: Any
) -> LocalizedOptimizer:
    kwargs = _base_kwargs("sgd", lr, weight_decay, options)
    return LocalizedOptimizer(model, torch.optim.SGD(model.parameters(), **kwargs), **options)


def _freezeout_build(
    model: nn.Module, lr: float = 0.05, weight_decay: float = 0.0, **options: Any
) -> FreezeOutOptimizer:
    kwargs = _base_kwargs("sgd", lr, weight_decay, options)
    del kwargs["lr"]
    return create_freezeout_optimizer(model, lr=lr, base_kwargs=kwargs, **options)


def _mup_builder(base: str) -> Callable[..., torch.optim.Optimizer]:
    def build(
        model: nn.Module, lr: float = _DEFAULT_LR[base], weight_decay: float = 0.0, **options
    ) -> torch.optim.Optimizer:
        hyper = {"lr": lr, "weight_decay": weight_decay}
        keys = (
            ("momentum", "nesterov", "dampening") if base == "sgd" else ("betas", "eps", "amsgrad")
        )
        hyper.update({k: options.pop(k) for k in keys if k in options})
        return create_mu_transfer_optimizer(
            model, base_hyperparams=hyper, optimizer=base, **options
        )

    return build


def _sigprop_build(
    model: SigPropBase, lr: float = 1e-3, weight_decay: float = 0.0, **options: Any
) -> torch.optim.Optimizer:
    return create_sigprop_optimizer(model, lr=lr, weight_decay=weight_decay, **options)


_FER_SUPPLIED = frozenset({"params", "base_optimizer", "base_optimizer_kwargs"})
for _base in ("adam", "sgd"):
    _register(
        OptimizerEntry(
            f"fer-{_base}",
            "fer",
            f"FER (self-distillation toward earlier correct predictions) on {_base}",
            _fer_builder(_base),
            _DEFAULT_LR[_base],
            base=_base,
            options=((FEROptimizer, _FER_SUPPLIED),),
        )
    )
for _base in ("adam", "sgd"):
    _register(
        OptimizerEntry(
            f"gc-{_base}",
            "gc",
            f"Gradient Correction (our design after the withdrawn GCGD paper) on {_base}",
            _gc_builder(_base),
            _DEFAULT_LR[_base],
            base=_base,
            options=((GradientCorrectionOptimizer, frozenset({"base", "device"})),),
        )
    )
_register(
    OptimizerEntry(
        "localized-sgd",
        "localized",
        "LoCal+SGD: Hebbian (Oja subspace) layers before a moving transition layer, SGD after",
        _localized_build,
        0.05,
        base="sgd",
        needs_model=True,
        options=((LocalizedOptimizer, frozenset({"model", "base"})),),
    )
)
_register(  # the progressive-freezing baseline LoCal must beat; served by the LoCal harness method
    OptimizerEntry(
        "freezeout-sgd",
        "localized",
        "FreezeOut (Brock et al. 2017): per-layer cosine-annealed SGD, layers frozen one by one",
        _freezeout_build,
        0.05,
        base="sgd",
        needs_model=True,
        options=((FreezeOutOptimizer, frozenset({"model", "base"})),),
    )
)
for _base in ("adam", "adamw", "sgd"):
    _register(
        OptimizerEntry(
            f"mup-{_base}",
            "mup",
            f"{_base} under μP (per-layer init and learning rates from the width multipliers)",
            _mup_builder(_base),
            _DEFAULT_LR[_base],
            base=_base,
            needs_model=True,
            options=(
                (
                    create_mu_transfer_optimizer,
                    frozenset({"large_model", "base_hyperparams", "optimizer"}),
                ),
            ),
        )
    )
_register(
    OptimizerEntry(
        "sigprop-adam",
        "sigprop",
        "Signal Propagation's Adam over a SigPropNet/SigPropCNN (layers and signal projection)",
        _sigprop_build,
        1e-3,
        needs_model=True,
        options=((create_sigprop_optimizer, frozenset({"model", "lr", "weight_decay"})),),
    )
)
