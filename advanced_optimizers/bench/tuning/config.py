"""A tuning study's settings (:class:`TuneConfig`) and each method's search space.

**Search space** (per method, written into ``tuning.json``):

* ``lr``: log-uniform on ``[default / lr_factor, default × lr_factor]`` around the method's default
  learning rate (``lr_factor`` = 10: two decades, which holds the usual optimum of every method here;
  widen it with ``--lr-factor``);
* at most one option: the method's :attr:`~..methods.Method.tuned_option` (baselines and peers:
  none; FER: ``consistency_threshold`` ∈ {0.0, 0.9}), or ``--space METHOD:NAME=V1,V2,...`` to
  choose another categorical one (``--space METHOD:none`` for the learning rate only). Every other
  option stays at its default or at what ``--opt`` fixes.

With the ``grid`` sampler (:mod:`.sampling`) the space is also laid out as a grid: ``trials / k``
log-spaced learning rates (``k`` = the option's number of values, 3 points for a numeric option).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..._validation import check_choice, check_int
from ..data import DATASETS, VALIDATION_DEFAULTS
from ..device import DEVICES
from ..methods import Method, TuneOption, get_method, resolve_methods
from ..models import ARCHITECTURES
from ..run_record import SCHEDULES

__all__ = [
    "LR_FACTOR",
    "PRUNERS",
    "SAMPLERS",
    "TRAIN_SEED",
    "TuneConfig",
    "method_space",
    "parse_space",
    "study_name",
]

LR_FACTOR = 10.0
TRAIN_SEED = 1000
SAMPLERS = ("tpe", "grid")
PRUNERS = ("median", "none")


@dataclass
class TuneConfig:
    """One tuning study: the workload, the methods, the budget, the sampler."""

    methods: list[str] = field(default_factory=list)
    trials: int = 20
    dataset: str = "mnist"
    arch: str = "mlp"
    width: int | None = None
    depth: int | None = None
    epochs: int = 3
    batch_size: int = 128
    n_train: int | None = None
    validation: int | None = None
    schedule: str = "constant"
    momentum: float = 0.9
    weight_decay: float = 0.0
    sampler: str = "tpe"
    seed: int = 0
    pruner: str = "median"
    lr_factor: float = LR_FACTOR
    train_seed: int = TRAIN_SEED
    study: str | None = None
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    spaces: dict[str, TuneOption | None] = field(default_factory=dict)
    device: str = "auto"

    def __post_init__(self) -> None:
        self.methods = resolve_methods(self.methods)
        check_int("trials", self.trials, 1)
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("arch", self.arch, ARCHITECTURES)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("sampler", self.sampler, SAMPLERS)
        check_choice("pruner", self.pruner, PRUNERS)
        check_choice("device", self.device, DEVICES)
        check_int("seed", self.seed, 0)
        check_int("train_seed", self.train_seed, 0)
        check_int("epochs", self.epochs, 1)
        if self.validation is None:
            self.validation = VALIDATION_DEFAULTS[self.dataset]
        check_int("validation", self.validation, 0)
        if self.validation == 0:
            raise ValueError(
                "advopt tune needs a validation split (--validation > 0): selecting settings on "
                "the test set is what this protocol exists to avoid"
            )
        if not (math.isfinite(self.lr_factor) and self.lr_factor > 1):
            raise ValueError(f"lr_factor must be a finite number > 1, got {self.lr_factor}")
        if self.study is None:
            self.study = f"{self.dataset}-{self.arch}"
        if not self.study or ":" in self.study:
            raise ValueError(f"study must be a non-empty name without ':', got {self.study!r}")
        for key in ("method_options", "spaces"):
            unknown = set(getattr(self, key)) - set(self.methods)
            if unknown:
                raise ValueError(f"{key} name methods not tuned here: {sorted(unknown)}")
        for name in self.methods:  # bad options and spaces fail now, not in the first trial
            method = get_method(name, **self.method_options.get(name, {}))
            method_space(self, method)

    def workload(self) -> dict[str, Any]:
        """The settings every trial of every method shares."""
        keys = (
            "dataset",
            "arch",
            "width",
            "depth",
            "epochs",
            "batch_size",
            "n_train",
            "validation",
            "schedule",
            "momentum",
            "weight_decay",
            "train_seed",
        )
        return {key: getattr(self, key) for key in keys}


def study_name(config: TuneConfig, method: str) -> str:
    """``<workload>:<method>``: one Optuna study per (workload, method)."""
    return f"{config.study}:{method}"


def method_space(config: TuneConfig, method: Method) -> dict[str, Any]:
    """The search space of ``method`` under ``config``: the learning rate and at most one option."""
    option = config.spaces.get(method.name, method.tuned_option)
    if option is not None:
        if option.name not in method.options:
            known = ", ".join(method.options) or "none"
            raise ValueError(
                f"{method.name}: the tuned option {option.name!r} is not one of its options "
                f"({known})"
            )
        if option.name in config.method_options.get(method.name, {}):
            raise ValueError(
                f"{method.name}: option {option.name!r} is both fixed (--opt) and tuned (--space)"
            )
    default = method.default_lr
    space = {
        "lr": {
            "low": default / config.lr_factor,
            "high": default * config.lr_factor,
            "log": True,
            "default": default,
        },
        "option": option.to_dict() if option is not None else None,
    }
    if config.sampler == "grid":
        k = len(_option_grid(option)) if option is not None else 1
        if config.trials % k:
            raise ValueError(
                f"{method.name}: --sampler grid needs --trials to be a multiple of the {k} values "
                f"of its option {option.name!r}, got {config.trials}"  # type: ignore[union-attr]
            )
        space["grid"] = {"lr": _lr_grid(space["lr"], config.trials // k)}
        if option is not None:
            space["grid"][option.name] = _option_grid(option)
    return space


def _lr_grid(lr: dict[str, float], n: int) -> list[float]:
    if n == 1:
        return [lr["default"]]
    points = np.geomspace(lr["low"], lr["high"], n)
    return [float(min(max(p, lr["low"]), lr["high"])) for p in points]


def _option_grid(option: TuneOption) -> list[Any]:
    if option.choices:
        return list(option.choices)
    low, high = float(option.low), float(option.high)  # type: ignore[arg-type]
    points = np.geomspace(low, high, 3) if option.log else np.linspace(low, high, 3)
    if option.integer:
        return sorted({round(p) for p in points})
    return [float(p) for p in points]


def parse_space(text: str) -> tuple[str, TuneOption | None]:
    """``METHOD:NAME=V1,V2,...`` → (method, categorical option); ``METHOD:none`` → (method, None)."""
    import ast

    try:
        method, rest = text.split(":", 1)
    except ValueError:
        raise ValueError(f"--space takes METHOD:NAME=V1,V2 or METHOD:none, got {text!r}") from None
    if rest.strip() == "none":
        return method.strip(), None
    try:
        name, raw = rest.split("=", 1)
    except ValueError:
        raise ValueError(f"--space takes METHOD:NAME=V1,V2 or METHOD:none, got {text!r}") from None
    values: list[Any] = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            values.append(ast.literal_eval(part))
        except (ValueError, SyntaxError):
            values.append(part)
    if len(values) < 2:
        raise ValueError(f"--space {text!r}: give at least two values to choose from")
    return method.strip(), TuneOption(name.strip(), choices=tuple(values))
