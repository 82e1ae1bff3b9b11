"""What LoCal adds to its optimizer's ``state_dict``, and the checks before loading it.

The extra state (a part of :class:`~.optimizer.LocalizedOptimizer`) holds the transition, the
epoch history, the gate and the selection policy, the step counters and the weight snapshots of
the epoch; it is refused for a model with other layers or layer shapes, or a transition beyond the
cap.
"""

from __future__ import annotations

from typing import Any

import torch

from .gate import LossGate
from .selection import SelectionPolicy

__all__ = ["LocalizedState"]


class LocalizedState:
    """The extra state's save, check and load: a mixin of :class:`~.optimizer.LocalizedOptimizer`.

    It reads and writes the optimizer's attributes (set in its ``__init__``) named below.
    """

    transition: int
    epoch: int
    history: list[dict[str, Any]]
    gate_rule: LossGate
    selection: SelectionPolicy
    steps: int
    cap: int
    hebbian_steps: int
    layer_names: list[str]
    _hebbian_count: int | torch.Tensor
    _snapshots: list[torch.Tensor]
    _pending: dict[int, list[torch.Tensor]]

    def _extra_state(self) -> dict[str, Any]:
        return {
            "transition": self.transition,
            "epoch": self.epoch,
            "history": [dict(h, update=list(h["update"])) for h in self.history],
            "gate": self.gate_rule.state_dict(),
            "selection": self.selection.state_dict(),
            "hebbian_steps": self.hebbian_steps,  # a host read, at checkpoint time only
            "steps": self.steps,
            "snapshots": [s.clone() for s in self._snapshots],
            "layer_names": self.layer_names,
        }

    def _check_extra_state(self, extra: dict[str, Any]) -> None:
        if list(extra["layer_names"]) != self.layer_names:
            raise ValueError(
                f"state_dict was saved for layers {extra['layer_names']}, this optimizer has "
                f"{self.layer_names}"
            )
        saved = [tuple(s.shape) for s in extra["snapshots"]]
        mine = [tuple(s.shape) for s in self._snapshots]
        if saved != mine:
            raise ValueError(
                f"state_dict was saved for layer weights of shapes {saved}, this model's are {mine}"
            )
        if int(extra["transition"]) > self.cap:
            raise ValueError(
                f"state_dict has transition {extra['transition']} beyond this optimizer's cap "
                f"{self.cap}"
            )

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        self.epoch = int(extra["epoch"])
        self.history = [dict(h, update=list(h["update"])) for h in extra["history"]]
        self.gate_rule.load_state_dict(extra["gate"])
        self.selection.load_state_dict(extra["selection"])
        self._hebbian_count = int(extra["hebbian_steps"])
        self.steps = int(extra["steps"])
        device = self._snapshots[0].device
        self._snapshots = [s.detach().to(device).clone() for s in extra["snapshots"]]
        self._pending.clear()
        self.transition = int(extra["transition"])
        self._set_requires_grad()
