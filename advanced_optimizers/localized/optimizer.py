r"""LoCal+SGD: Hebbian early layers before a moving transition layer, a base optimizer after it.

Krithivasan, Sen, Venkataramani, Raghunathan, "Accelerating DNN Training through Selective Localized
Learning" (ICLR 2021 submission; Frontiers in Neuroscience 2022). Only the abstracts are public and
no code exists: the rule (:mod:`.rule`), the selection policies (:mod:`.selection`) and the gate
(:mod:`.gate`) are our design. Provenance, reasons and measurements: ``docs/algorithms/localized.md``.

:class:`LocalizedOptimizer` is put together from parts: where the transition layer is and how it
moves (:mod:`.transition`), the forward hooks that collect the rule's terms (:mod:`.hooks`) and
its extra checkpoint state (:mod:`.state`); here are its construction, the step template, the
gate and data parallelism, and FreezeOut (:class:`FreezeOutOptimizer`) on the same machinery.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import torch
from torch import nn

from .._distributed import all_reduce_sum, is_distributed
from .._validation import check_choice, check_int, check_nonnegative, check_probability
from .._wrapper import WrappedOptimizer, build_base_optimizer
from .gate import LossGate
from .hooks import HebbianHooks
from .hooks import _autocast_off as _autocast_off
from .layers import (
    _refuse_ddp_without_unused_parameters,
    _unwrap,
    check_owns_parameters,
    find_localizable_layers,
)
from .layers import describe_order as describe_order
from .rule import RULES, apply_direction_step
from .selection import (
    SELECTIONS,
    DynamicSelection,
    FreezeOutSelection,
    SelectionPolicy,
    StaticSelection,
)
from .state import LocalizedState
from .transition import TransitionControl

__all__ = [
    "FreezeOutOptimizer",
    "LocalizedOptimizer",
    "create_freezeout_optimizer",
    "create_localized_optimizer",
]

SELECTION_MODES = tuple(SELECTIONS)
RULE_NAMES = tuple(RULES)

# ``describe_order`` and ``_autocast_off`` are re-exported (``name as name``): this module held
# them before the hooks moved to :mod:`.hooks`.


class LocalizedOptimizer(TransitionControl, HebbianHooks, LocalizedState, WrappedOptimizer):
    r"""LoCal+SGD around a base optimizer.

    The parametrised layers :math:`L_0 \dots L_{n-1}` (execution order) are split by the transition
    layer :math:`T`: layers :math:`i < T` learn in the forward pass by the localized ``rule``
    (:mod:`~advanced_optimizers.localized.rule`: ``"oja_subspace"`` or ``"normalized_hebb"``) at rate
    :math:`\eta_t = \eta\,g_t` (:class:`~advanced_optimizers.localized.gate.LossGate`), with
    ``requires_grad_(False)`` so autograd records nothing for them; layers :math:`i \ge T` learn by
    the base optimizer. After every epoch (:meth:`end_epoch`) the selection policy may move
    :math:`T` forward, never past :math:`\min(\text{max\_transition}, n - \text{min\_sgd\_layers})`
    and never during the ``warmup_epochs``. ``selection_mode="freezeout"`` moves :math:`T` after
    every step instead: layer :math:`i` goes localized once ``steps / total_steps`` reaches its time
    :math:`t_i` (:class:`~advanced_optimizers.localized.selection.FreezeOutSelection`, spaced from
    ``t_0`` for the first layer to 1 for the layer at the cap; no warm-up).

    Per step: the forward hooks accumulate the rule's numerator and energy of the localized layers
    (on the first ``ceil(hebbian_subsample·B)`` samples, every ``hebbian_interval``-th step);
    ``observe_loss`` feeds the gate; ``step()`` applies both and the base step, or, if anything is
    non-finite, skips and discards them. ``param_groups`` and ``state`` are the base optimizer's.
    ``modes`` names each layer's mode ('hebbian', 'frozen' — localized at rate 0 — or 'sgd').
    """

    algorithm = "localized"

    def __init__(
        self,
        model: nn.Module,
        base: torch.optim.Optimizer,
        *,
        hebbian_lr: float = 1e-4,
        selection_mode: str = "dynamic",
        weak_supervision_weight: float = 0.1,
        settle_ratio: float = 0.5,
        static_interval: int = 1,
        static_step: int = 1,
        warmup_epochs: int = 1,
        max_transition: int | None = None,
        min_sgd_layers: int = 1,
        hebbian_subsample: float = 0.25,
        hebbian_interval: int = 1,
        loss_ema_beta: float = 0.98,
        rule: str = "oja_subspace",
        t_0: float = 0.512,
        spacing: str = "cubic",
        total_steps: int | None = None,
        nonfinite: str = "skip",
    ) -> None:
        _refuse_ddp_without_unused_parameters(model)
        layers = find_localizable_layers(_unwrap(model))
        self.hebbian_lr = check_nonnegative("hebbian_lr", hebbian_lr)
        self.selection_mode = check_choice("selection_mode", selection_mode, SELECTION_MODES)
        self.rule = check_choice("rule", rule, RULE_NAMES)
        self._rule_terms = RULES[self.rule]
        self.selection: SelectionPolicy
        if selection_mode == "static":
            self.selection = StaticSelection(static_step, static_interval)
        elif selection_mode == "dynamic":
            self.selection = DynamicSelection(settle_ratio)
        else:
            self.selection = FreezeOutSelection(t_0, spacing)
        if total_steps is not None:
            check_int("total_steps", total_steps, 1)
        elif self.selection.step_based:
            raise ValueError(
                f"selection_mode={selection_mode!r} needs total_steps (the planned number of "
                "optimizer steps: epochs × batches per epoch)"
            )
        self.total_steps = total_steps
        self.gate_rule = LossGate(weak_supervision_weight, loss_ema_beta)
        self.warmup_epochs = check_int("warmup_epochs", warmup_epochs, 0)
        self.min_sgd_layers = check_int("min_sgd_layers", min_sgd_layers, 1)
        if self.min_sgd_layers > len(layers):
            raise ValueError(
                f"min_sgd_layers must be in [1, {len(layers)}] (the model has {len(layers)} "
                f"layers), got {min_sgd_layers}"
            )
        if max_transition is not None:
            check_int("max_transition", max_transition, 0)
        self.max_transition = max_transition
        self.hebbian_subsample = check_probability("hebbian_subsample", hebbian_subsample)
        if self.hebbian_subsample == 0.0:
            raise ValueError("hebbian_subsample must be in (0, 1], got 0.0")
        self.hebbian_interval = check_int("hebbian_interval", hebbian_interval, 1)
        super().__init__(base, nonfinite=nonfinite)
        check_owns_parameters(layers, self.param_groups)
        self.layers = layers
        self.transition = 0
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self._hebbian_count: int | torch.Tensor = 0
        self.steps = 0
        self._pending: dict[int, list[torch.Tensor]] = {}
        self._synced = False
        self._order_seen: list[int] | None = []  # None once the execution order was verified
        self._snapshots = self._take_snapshots()
        self._set_requires_grad()
        self._hook_handles = [
            module.register_forward_hook(partial(self._forward_hook, index))
            for index, (_, module) in enumerate(self.layers)
        ]

    # -- read-only views ------------------------------------------------------------------------
    @property
    def gate(self) -> float:
        """The weak-supervision gate :math:`g_t` (a host read: for logging, not the step)."""
        return float(self.gate_rule.value())

    @property
    def loss_ema(self) -> float | None:
        ema = self.gate_rule.ema
        return None if ema is None else float(ema)

    @property
    def hebbian_steps(self) -> int:
        """Steps that applied a Hebbian update (with a non-zero rate)."""
        return int(self._hebbian_count)

    @property
    def hebbian_rate(self) -> float:
        """The current localized rate ``η_t = hebbian_lr · g_t``."""
        return self.hebbian_lr * self.gate

    # -- weak supervision -----------------------------------------------------------------------
    def observe_loss(self, loss: float | torch.Tensor) -> None:
        """Feed this step's training loss to the weak-supervision gate (before ``step``)."""
        self.gate_rule.observe(loss)

    # -- the step template ----------------------------------------------------------------------
    def _start_step(self, loss: Any) -> None:
        if loss is not None and not self.gate_rule.pending:  # a closure's loss, unless observed
            self.observe_loss(loss)
            self.gate_rule.sync_distributed()  # the ranks' mean, as sync_distributed() gives
        if self._pending and not self._synced and is_distributed():
            self.warn_once(
                "unsynced",
                "LocalizedOptimizer under torch.distributed: call optimizer.sync_distributed() "
                "after backward() and before step(), or each rank applies its own shard's Hebbian "
                "update and the ranks' weights drift apart",
            )

    def _guarded_tensors(self) -> list[torch.Tensor]:
        terms = [t for pair in self._pending.values() for t in pair]
        return super()._guarded_tensors() + terms + self.gate_rule.pending

    @torch.no_grad()
    def _before_step(self) -> None:
        self.gate_rule.commit()
        if self._pending and self.hebbian_lr > 0.0:
            rate = self.hebbian_lr * self.gate_rule.value()
            for index, (numerator, energy) in self._pending.items():
                direction = numerator / energy.clamp_min(torch.finfo(numerator.dtype).tiny)
                apply_direction_step(self.layers[index][1].weight, direction, rate)
            applied = (rate > 0).long() if isinstance(rate, torch.Tensor) else 1
            self._hebbian_count = self._hebbian_count + applied

    def _after_step(self) -> None:
        self._pending.clear()
        self._synced = False
        self.steps += 1
        if self.selection.step_based:
            self._follow_schedule()

    def _discard_step(self) -> None:
        self._pending.clear()
        self._synced = False
        self.gate_rule.discard()

    # -- data parallelism -----------------------------------------------------------------------
    def sync_distributed(self, group: Any = None) -> None:
        """Make this step's Hebbian update and gate those of the global batch (no-op in one process).

        Call after ``backward()`` and before :meth:`step`. The pending Oja terms are sums over rows,
        so summing them over ranks gives the update of the union of the ranks' rows; the pending
        losses are averaged. Transition decisions then agree, since they read only the (identical)
        weights and this history.
        """
        if not is_distributed(group):
            return
        self._synced = True
        all_reduce_sum([term for i in sorted(self._pending) for term in self._pending[i]], group)
        self.gate_rule.sync_distributed(group)

    def _mean_over_ranks(self, train_loss: float | None) -> float | None:
        """``train_loss`` averaged over the ranks (``None``/non-finite on any rank: ``None``)."""
        if not is_distributed():
            return train_loss
        import torch.distributed as dist

        value = math.nan if train_loss is None else float(train_loss)
        device = self.layers[0][1].weight.device  # the collective's backend needs the model's
        total = torch.tensor([value], dtype=torch.float64, device=device)
        all_reduce_sum([total])
        mean = total.item() / dist.get_world_size()
        return mean if math.isfinite(mean) else None

    # -- repr -----------------------------------------------------------------------------------
    def _repr_options(self) -> dict[str, Any]:
        layers = ", ".join(f"{n}:{m}" for n, m in zip(self.layer_names, self.modes, strict=True))
        options = {
            "T": f"{self.transition}/cap {self.cap}",
            "mode": repr(self.selection_mode),
            "hebbian_lr": self.hebbian_lr,
            "rule": repr(self.rule),
            "layers": f"[{layers}]",
        }
        if isinstance(self.selection, FreezeOutSelection):
            options.update(t_0=self.selection.t_0, spacing=repr(self.selection.spacing))
        return options


def create_localized_optimizer(
    model: nn.Module,
    lr: float = 1e-3,
    hebbian_lr: float = 1e-4,
    selection_mode: str = "dynamic",
    weak_supervision_weight: float = 0.1,
    base_optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.SGD,
    *,
    base_kwargs: dict[str, Any] | None = None,
    params: Iterable[nn.Parameter] | None = None,
    **options: Any,
) -> LocalizedOptimizer:
    """LoCal+SGD for ``model``: ``base_optimizer(params, lr=lr, **base_kwargs)`` on the SGD part.

    ``options`` go to :class:`LocalizedOptimizer` (``settle_ratio``, ``static_interval``,
    ``static_step``, ``warmup_epochs``, ``max_transition``, ``min_sgd_layers``,
    ``hebbian_subsample``, ``hebbian_interval``, ``loss_ema_beta``, ``rule``, ``t_0``, ``spacing``,
    ``total_steps``, ``nonfinite``). Call ``optimizer.end_epoch(loss)`` after every epoch.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    check_nonnegative("lr", lr)
    params = list(model.parameters()) if params is None else list(params)
    base = build_base_optimizer(
        params, base_optimizer, {**(base_kwargs or {}), "lr": lr}, "LocalizedOptimizer"
    )
    return LocalizedOptimizer(
        model,
        base,
        hebbian_lr=hebbian_lr,
        selection_mode=selection_mode,
        weak_supervision_weight=weak_supervision_weight,
        **options,
    )


class FreezeOutOptimizer(LocalizedOptimizer):
    r"""FreezeOut (Brock, Lim, Ritchie, Weston 2017) around a base optimizer: anneal, then freeze.

    LoCal's machinery with the localized rate at zero and the step-based schedule
    (``selection_mode="freezeout"``): layer :math:`i` has a time :math:`t_i` (from ``t_0`` for the
    first layer to 1, ``spacing`` linear or cubic), and at progress :math:`\tau = s/S` (``steps /
    total_steps``) its learning rate is the base rate times

    .. math::
        m_i(\tau) = \sigma_i \cdot \tfrac12\big(1 + \cos(\pi\,\tau / t_i)\big) \ (\tau < t_i),
        \qquad \sigma_i = 1/t_i \text{ if scale\_lr else } 1

    after which the layer is frozen (``requires_grad_(False)``: no backward through it, exactly as
    LoCal's localized layers). The layers at or after the cap share :math:`t = 1` (plain cosine
    annealing over the run). The base optimizer needs one parameter group per layer
    (:func:`create_freezeout_optimizer` builds them); group learning rates set by the user or a
    scheduler are the base rates the factors multiply, for the step only.
    """

    algorithm = "freezeout"

    def __init__(
        self,
        model: nn.Module,
        base: torch.optim.Optimizer,
        *,
        total_steps: int,
        t_0: float = 0.512,
        spacing: str = "cubic",
        scale_lr: bool = True,
        max_transition: int | None = None,
        min_sgd_layers: int = 1,
        nonfinite: str = "skip",
    ) -> None:
        if not isinstance(scale_lr, bool):
            raise TypeError(f"scale_lr must be a bool, got {type(scale_lr).__name__}")
        self.scale_lr = scale_lr
        super().__init__(
            model,
            base,
            hebbian_lr=0.0,
            selection_mode="freezeout",
            weak_supervision_weight=0.0,
            warmup_epochs=0,
            max_transition=max_transition,
            min_sgd_layers=min_sgd_layers,
            t_0=t_0,
            spacing=spacing,
            total_steps=total_steps,
            nonfinite=nonfinite,
        )
        self._group_layer = [self._layer_of_group(g) for g in self.param_groups]

    def _layer_of_group(self, group: dict[str, Any]) -> int | None:
        owner = {id(p): i for i, (_, m) in enumerate(self.layers) for p in m.parameters()}
        found = {owner[id(p)] for p in group["params"] if id(p) in owner}
        if len(found) > 1:
            names = ", ".join(self.layer_names[i] for i in sorted(found))
            raise ValueError(
                f"FreezeOutOptimizer anneals each layer's learning rate separately, but one "
                f"parameter group holds the parameters of layers {names}: give every layer its "
                "own parameter group (create_freezeout_optimizer does)"
            )
        return found.pop() if found else None

    def _on_param_group_added(self, group: dict[str, Any]) -> None:
        self._group_layer.append(self._layer_of_group(group))

    def lr_factors(self) -> list[float]:
        r"""Each layer's factor :math:`m_i(\tau)` for the next step (0 for frozen layers)."""
        progress = self.progress
        out = []
        for index, t in enumerate(self.layer_times):
            if index < self.transition or progress >= t:
                out.append(0.0)
                continue
            factor = 0.5 * (1.0 + math.cos(math.pi * progress / t))
            out.append(factor / t if self.scale_lr else factor)
        return out

    def _base_step(self) -> None:
        factors = self.lr_factors()
        last = len(self.layers) - 1  # a group of no layer follows the last layer (t = 1)
        saved = [group["lr"] for group in self.param_groups]
        for group, layer in zip(self.param_groups, self._group_layer, strict=True):
            group["lr"] = group["lr"] * factors[last if layer is None else layer]
        try:
            super()._base_step()
        finally:
            for group, lr in zip(self.param_groups, saved, strict=True):
                group["lr"] = lr

    def _repr_options(self) -> dict[str, Any]:
        options = super()._repr_options()
        for key in ("hebbian_lr", "rule", "mode"):
            options.pop(key)
        options["scale_lr"] = self.scale_lr
        return options


def create_freezeout_optimizer(
    model: nn.Module,
    lr: float = 0.05,
    total_steps: int | None = None,
    t_0: float = 0.512,
    spacing: str = "cubic",
    scale_lr: bool = True,
    base_optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.SGD,
    *,
    base_kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> FreezeOutOptimizer:
    """FreezeOut for ``model``: ``base_optimizer`` with one parameter group per layer, at ``lr``.

    ``total_steps`` (required): the planned optimizer steps (epochs × batches per epoch).
    ``options`` go to :class:`FreezeOutOptimizer` (``max_transition``, ``min_sgd_layers``,
    ``nonfinite``). Use a constant learning rate: FreezeOut anneals every layer itself.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    check_nonnegative("lr", lr)
    if total_steps is None:
        raise ValueError("total_steps is required (the planned optimizer steps: epochs × batches)")
    layers = find_localizable_layers(_unwrap(model))
    groups = [{"params": list(module.parameters(recurse=False))} for _, module in layers]
    base = build_base_optimizer(
        groups, base_optimizer, {**(base_kwargs or {}), "lr": lr}, "FreezeOutOptimizer"
    )
    return FreezeOutOptimizer(
        model,
        base,
        total_steps=total_steps,
        t_0=t_0,
        spacing=spacing,
        scale_lr=scale_lr,
        **options,
    )
