"""Where LoCal's transition layer ``T`` is and how it moves: a part of the LocalizedOptimizer.

Layers ``i < T`` are localized (``requires_grad_(False)``), the rest learn by the base optimizer.
``T`` only ever moves forward, up to the cap: after every epoch
(:meth:`~TransitionControl.end_epoch`) as the selection policy (:mod:`.selection`) wishes, or, with
a step-based policy (FreezeOut's schedule), after every step.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .._validation import check_int
from .gate import LossGate
from .selection import DynamicSelection, FreezeOutSelection, SelectionPolicy

__all__ = ["TransitionControl"]


class TransitionControl:
    """The transition layer's state and moves: a mixin of :class:`~.optimizer.LocalizedOptimizer`.

    It reads and writes the optimizer's attributes (set in its ``__init__``) named below, and
    :meth:`end_epoch` reads the gate and the ranks' mean loss (``_mean_over_ranks``) from it.
    """

    layers: list[tuple[str, nn.Module]]
    transition: int
    max_transition: int | None
    min_sgd_layers: int
    hebbian_lr: float
    selection: SelectionPolicy
    total_steps: int | None
    steps: int
    epoch: int
    warmup_epochs: int
    history: list[dict[str, Any]]
    gate_rule: LossGate
    gate: float
    _pending: dict[int, list[torch.Tensor]]
    _snapshots: list[torch.Tensor]

    @property
    def cap(self) -> int:
        """The largest ``T`` ever used: ``min(max_transition, n_layers − min_sgd_layers)``."""
        cap = len(self.layers) - self.min_sgd_layers
        return cap if self.max_transition is None else min(cap, self.max_transition)

    @property
    def modes(self) -> list[str]:
        """Each layer's learning mode this epoch: 'hebbian', 'frozen' (rate 0) or 'sgd'."""
        local = "hebbian" if self.hebbian_lr > 0 else "frozen"
        return [local if i < self.transition else "sgd" for i in range(len(self.layers))]

    @property
    def layer_names(self) -> list[str]:
        return [name for name, _ in self.layers]

    @property
    def layer_times(self) -> list[float] | None:
        """``selection_mode="freezeout"``: each layer's time :math:`t_i` as a fraction of
        ``total_steps`` (spaced up to the cap layer; the layers after it at 1); else ``None``."""
        if not isinstance(self.selection, FreezeOutSelection):
            return None
        spaced = self.selection.times(self.cap + 1)
        return spaced + [1.0] * (len(self.layers) - len(spaced))

    @property
    def progress(self) -> float | None:
        """Fraction of ``total_steps`` taken (``None`` without ``total_steps``)."""
        return None if self.total_steps is None else self.steps / self.total_steps

    # -- transition control ---------------------------------------------------------------------
    def set_transition(self, transition: int) -> None:
        """Put layers ``< transition`` in localized mode and the rest on the base optimizer."""
        check_int("transition", transition, 0)
        if transition > self.cap:
            raise ValueError(f"transition must be in [0, {self.cap}] (the cap), got {transition}")
        self.transition = transition
        self._set_requires_grad()

    def _set_requires_grad(self) -> None:
        for index, (_, module) in enumerate(self.layers):
            sgd = index >= self.transition
            for p in module.parameters(recurse=False):
                p.requires_grad_(sgd)
                if not sgd:
                    p.grad = None
            if sgd:
                self._pending.pop(index, None)

    def _take_snapshots(self) -> list[torch.Tensor]:
        return [module.weight.detach().clone() for _, module in self.layers]

    def _relative_updates(self) -> list[float]:
        changes = []
        for (_, module), before in zip(self.layers, self._snapshots, strict=True):
            weight = module.weight.detach()
            changes.append(torch.stack([before.norm(), (weight - before).norm()]))
        out = []
        for scale, change in torch.stack(changes).tolist():  # one host read per epoch
            out.append(change / scale if scale > 0 else change)
        return out

    def next_transition(self) -> int:
        """``T`` for the next epoch from the recorded history and the selection policy."""
        if self.epoch < self.warmup_epochs or self.transition >= self.cap:
            return self.transition
        wished = self.selection.next_transition(
            self.transition, self.epoch, self.warmup_epochs, self.history[-1]["update"]
        )
        return max(self.transition, min(self.cap, wished))

    def end_epoch(self, train_loss: float | None = None) -> dict[str, float]:
        """Record the finished epoch, move ``T``; returns the numbers worth logging.

        Under ``torch.distributed`` every rank must call it; ``train_loss`` is averaged over the
        ranks (a rank's own shard mean would give each rank another gate, and the weights drift).
        """
        train_loss = self._mean_over_ranks(train_loss)
        self.gate_rule.end_epoch(train_loss)
        self.epoch += 1
        updates = self._relative_updates()
        if isinstance(self.selection, DynamicSelection):
            self.selection.observe(updates)
        record = {
            "epoch": self.epoch,
            "transition": self.transition,
            "train_loss": math.nan if train_loss is None else float(train_loss),
            "gate": self.gate,
            "update": updates,
        }
        self.history.append(record)
        self._snapshots = self._take_snapshots()
        self.set_transition(self.next_transition())
        return {
            "transition": float(record["transition"]),
            "transition_next": float(self.transition),
            "hebbian_gate": record["gate"],
            "transition_update": updates[min(record["transition"], len(self.layers) - 1)],
        }

    def _follow_schedule(self) -> None:
        """Step-based selection: ``T`` = the layers whose time has come (within the cap)."""
        times = self.layer_times
        due = sum(1 for t in times if t <= self.progress + 1e-12)
        wished = max(self.transition, min(self.cap, due))
        if wished != self.transition:
            self.set_transition(wished)
