"""The one interface through which a training method plugs into the harness, and its registry.

A method says how to build the model and its optimizer, how to compute the loss of a batch, what to
do at epoch boundaries and how to predict. The training loop (``train.py``) only ever calls these
hooks, so it has no per-algorithm branches. Everything a method must remember between steps lives in
the model's or the optimizer's ``state_dict()`` (that is what makes resume exact); a ``Method``
object holds configuration only.

Adding a method: subclass :class:`Method` in a module of ``advanced_optimizers.bench.plugins``
(every module there is imported on first use of the registry) and decorate it with
:func:`register`::

    @register
    class MyMethod(Method):
        name = "my-method"
        summary = "one line for --help"
        default_lr = 1e-3

        def build_optimizer(self, model, setup):
            return MyOptimizer(model.parameters(), lr=setup.lr)

Tuning (``advopt tune``, :mod:`.tune`): every method gets the same budget of trials over its learning
rate and at most one option of its own, declared by ``tuned_option`` (a :class:`TuneOption`; ``None``,
the default, tunes the learning rate only — the baselines' and peers' case). For example FER's
``tuned_option = TuneOption("consistency_threshold", choices=(0.0, 0.9))``.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .models import ModelSpec
from .options import OptionSource, option_parameters, resolve_options

__all__ = [
    "AlgorithmMethod",
    "Batch",
    "EpochInfo",
    "Method",
    "Setup",
    "TuneOption",
    "available_methods",
    "get_method",
    "method_summaries",
    "register",
    "register_algorithm",
]


@dataclass(frozen=True)
class Batch:
    """One mini-batch: inputs, integer labels and each sample's index in the training set."""

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor


@dataclass(frozen=True)
class EpochInfo:
    """Where training is: ``epoch`` is 1-based, ``epochs`` the total planned."""

    epoch: int
    epochs: int


@dataclass(frozen=True)
class Setup:
    """What a method may need to build its optimizer."""

    lr: float
    epochs: int
    steps_per_epoch: int
    n_train: int
    num_classes: int
    momentum: float = 0.9
    weight_decay: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TuneOption:
    """The one algorithm-specific option ``advopt tune`` searches besides the learning rate.

    Either categorical (``choices``) or numeric (``low``..``high``, log-uniform when ``log``, integers
    when ``integer``). ``name`` must be one of the method's options.
    """

    name: str
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False

    def __post_init__(self) -> None:
        numeric = self.low is not None or self.high is not None
        if bool(self.choices) == numeric:
            raise ValueError(
                f"TuneOption {self.name!r}: give either choices or a low..high range, not both"
            )
        if numeric:
            if self.low is None or self.high is None or not self.low < self.high:
                raise ValueError(f"TuneOption {self.name!r}: needs low < high")
            if self.log and self.low <= 0:
                raise ValueError(f"TuneOption {self.name!r}: a log range needs low > 0")
        elif len(set(map(repr, self.choices))) != len(self.choices):
            raise ValueError(f"TuneOption {self.name!r}: choices must be distinct")

    def to_dict(self) -> dict[str, Any]:
        if self.choices:
            return {"name": self.name, "type": "categorical", "choices": list(self.choices)}
        kind = "int" if self.integer else "float"
        return {
            "name": self.name,
            "type": kind,
            "low": self.low,
            "high": self.high,
            "log": self.log,
        }


class Method:
    """Base class of a training method. The defaults describe plain cross-entropy training.

    Subclasses set ``name``, ``summary`` and ``default_lr`` and override what they change. Keyword
    options (``advopt compare --opt key=value``) go to ``__init__``. A method's options are the
    keyword parameters of the library callables it builds with (``option_sources``: pairs of a
    callable and the names the harness supplies itself), so their defaults live in the library
    only; an unknown option is a ``TypeError`` that lists the known ones. ``options`` holds every
    option with its value (the defaults filled in), so a run records its whole configuration.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    default_lr: ClassVar[float] = 1e-3
    option_sources: ClassVar[tuple[OptionSource, ...]] = ()
    # True for an optimizer that schedules itself (schedule-free): the run's --schedule is not
    # applied to it, as its authors run it
    manages_schedule: ClassVar[bool] = False
    tuned_option: ClassVar[TuneOption | None] = None  # advopt tune: at most one option besides lr

    def __init__(self, **options: Any) -> None:
        parameters = option_parameters(self.option_sources)
        self.options: dict[str, Any] = resolve_options(self.name, parameters, options)
        if options:
            self.check_options()

    def check_options(self) -> None:
        """Build a tiny model and its optimizer on the ``meta`` device, so a bad option value fails
        now, with the library's message, rather than when its run starts."""
        spec = ModelSpec("mlp", (1, 4, 4), 3, width=4, depth=2)
        setup = Setup(lr=self.default_lr, epochs=1000, steps_per_epoch=1, n_train=8, num_classes=3)
        with torch.device("meta"):
            model = self.build_model(spec)
            self.build_optimizer(model, setup)

    # -- construction -------------------------------------------------------------------------
    def build_model(self, spec: ModelSpec) -> nn.Module:
        """The model this method trains for ``spec`` (default: the harness model itself)."""
        return spec.build()

    def build_optimizer(self, model: nn.Module, setup: Setup) -> torch.optim.Optimizer:
        raise NotImplementedError

    # -- training -----------------------------------------------------------------------------
    def train_mode(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Called where the loop switches to training: before each epoch, right after
        ``model.train()`` and before :meth:`start_epoch` (default: nothing).

        For an optimizer whose weights to evaluate differ from those it takes gradients at
        (schedule-free's ``optimizer.train()``), switch back to the training point here.
        """

    def eval_mode(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Called after each epoch's :meth:`end_epoch`, before evaluation (default: nothing).

        Switch in the weights to evaluate here (schedule-free's ``optimizer.eval()``). The
        checkpoint is written after evaluation, so it holds this mode; a resumed run calls
        :meth:`train_mode` before its next epoch just as an uninterrupted one does.
        """

    def start_epoch(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, info: EpochInfo
    ) -> None:
        """Called before the first batch of each epoch."""

    def batch_loss(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, info: EpochInfo
    ) -> torch.Tensor:
        """The scalar to ``backward()`` for one batch (default: cross-entropy of ``model(x)``)."""
        return F.cross_entropy(model(batch.x), batch.y)

    def sync_distributed(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Under data parallelism, make extra algorithm state agree across ranks.

        Called after every backward, once the gradients are averaged over ranks and before
        ``optimizer.step()``; never called in a single process. The default has nothing to sync.
        """

    def end_epoch(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        info: EpochInfo,
        train_loss: float,
    ) -> dict[str, float]:
        """Called after the last batch of each epoch; returns extra metrics to record."""
        return {}

    # -- evaluation ---------------------------------------------------------------------------
    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Logits for ``x`` (called under ``torch.no_grad()`` in eval mode)."""
        return model(x)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "options": dict(self.options)}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"


_REGISTRY: dict[str, type[Method]] = {}
_PLUGINS_LOADED = False


def register(cls: type[Method]) -> type[Method]:
    """Class decorator adding a :class:`Method` subclass to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} must set a non-empty class attribute 'name'")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"method name {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def _load_plugins() -> None:
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    from . import plugins

    first = {"baselines": 0, "peers": 1}  # then the library's algorithms, by module name
    for module in sorted(
        pkgutil.iter_modules(plugins.__path__), key=lambda m: (first.get(m.name, 2), m.name)
    ):
        importlib.import_module(f"{plugins.__name__}.{module.name}")
    _PLUGINS_LOADED = True


def available_methods() -> list[str]:
    """Names of all registered methods: baselines, peers, then the library's algorithms."""
    _load_plugins()
    return list(_REGISTRY)


def resolve_methods(methods: list[str]) -> list[str]:
    """``methods`` checked against the registry (a ``ValueError`` names the registered ones); an
    empty list means every registered method."""
    registered = available_methods()
    for name in methods:
        if name not in registered:
            raise ValueError(f"methods must be among {', '.join(registered)}; got {name!r}")
    return list(methods) or registered


def method_summaries() -> dict[str, str]:
    _load_plugins()
    return {name: cls.summary for name, cls in _REGISTRY.items()}


def get_method(name: str, **options: Any) -> Method:
    """Instantiate the registered method ``name`` with its keyword ``options``."""
    _load_plugins()
    if name not in _REGISTRY:
        raise ValueError(f"method must be one of {', '.join(_REGISTRY)}; got {name!r}")
    return _REGISTRY[name](**options)


class AlgorithmMethod(Method):
    """A method for an optimizer of the library's registry (``advanced_optimizers.registry``).

    Subclass it once per algorithm (``algorithm = "fer"``) and decorate with
    :func:`register_algorithm`: one method is registered per registry name of that algorithm, so
    the harness's method table and the library's ``list_optimizers()`` are one list. The optimizer
    is ``create_optimizer(name, model, lr=..., weight_decay=..., [momentum=...], **options)``;
    ``harness_supplied`` names the options the harness fills in from the run (:meth:`run_options`).
    """

    algorithm: ClassVar[str] = ""
    entry: ClassVar[Any] = None
    harness_supplied: ClassVar[frozenset[str]] = frozenset()

    def run_options(self, setup: Setup) -> dict[str, Any]:
        """Options the harness derives from the run (FER: the training-set size, the epochs)."""
        return {}

    def base_hyperparameters(self, setup: Setup) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"lr": setup.lr, "weight_decay": setup.weight_decay}
        if self.entry.base == "sgd":
            kwargs["momentum"] = setup.momentum
        return kwargs

    def build_optimizer(self, model: nn.Module, setup: Setup) -> torch.optim.Optimizer:
        from ..registry import create_optimizer

        return create_optimizer(
            self.name,
            model,
            **self.base_hyperparameters(setup),
            **self.run_options(setup),
            **self.options,
        )


def register_algorithm(adapter: type[AlgorithmMethod]) -> type[AlgorithmMethod]:
    """Register one method per registry name of ``adapter.algorithm`` (see :class:`AlgorithmMethod`)."""
    from ..registry import get_entry, list_optimizers

    names = list_optimizers(adapter.algorithm)
    if not names:
        raise ValueError(f"no optimizer of algorithm {adapter.algorithm!r} is registered")
    for name in names:
        entry = get_entry(name)
        supplied = adapter.harness_supplied
        sources = tuple((fn, names_ | supplied) for fn, names_ in entry.options)
        namespace = {
            "name": name,
            "summary": entry.summary,
            "default_lr": entry.default_lr,
            "entry": entry,
            "option_sources": sources + adapter.option_sources,
            "__module__": adapter.__module__,
            "__doc__": adapter.__doc__,
        }
        register(type(f"{adapter.__name__}[{name}]", (adapter,), namespace))
    return adapter
