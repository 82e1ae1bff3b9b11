r"""LoCal's weak supervision: the training loss sets the localized learning rate (our design).

Per-step losses enter an exponential moving average :math:`\bar\ell_t = \beta\bar\ell_{t-1} +
(1-\beta)\ell_t`; :math:`L^*` is the best mean training loss of a completed epoch. The gate is

.. math::
    g_t = \mathrm{clip}\Big(1 - \frac{\bar\ell_t - L^*}{\lambda L^*},\ 0,\ 1\Big),
    \qquad \eta_t = \eta \, g_t

so the Hebbian rate shrinks as the smoothed loss climbs above the best epoch mean and stops at
:math:`+\lambda` (``weak_supervision_weight``; 0 disables the gate). Before the first epoch ends,
:math:`g = 1`. Reasons and measurements: ``docs/algorithms/localized.md``.

Losses observed during a step are *pending* until the step is taken (:meth:`LossGate.commit`); a
skipped step discards them. The average lives on the loss's device, so observing a loss costs no
host synchronisation.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .._distributed import all_reduce_sum, is_distributed
from .._validation import check_nonnegative, check_probability

__all__ = ["LossGate"]


class LossGate:
    """The weak-supervision gate: a loss EMA against the best epoch mean (module docstring)."""

    def __init__(self, weight: float = 0.1, beta: float = 0.98) -> None:
        self.weight = check_nonnegative("weak_supervision_weight", weight)
        self.beta = check_probability("loss_ema_beta", beta, open_high=True)
        self.ema: torch.Tensor | None = None
        self.best: float | None = None
        self.epoch_losses_seen = 0
        self._pending: list[torch.Tensor] = []

    # -- per step -------------------------------------------------------------------------------
    def observe(self, loss: torch.Tensor | float) -> None:
        """A training loss of the current step (pending until :meth:`commit`)."""
        if isinstance(loss, torch.Tensor):
            value = loss.detach().reshape(())
        else:
            value = torch.tensor(float(loss))
        self._pending.append(value)

    @property
    def pending(self) -> list[torch.Tensor]:
        """The losses observed since the last commit (the step's guard checks them)."""
        return self._pending

    def commit(self) -> None:
        """Enter the pending losses into the average (the step was taken)."""
        for value in self._pending:
            value = value.to(torch.float64 if value.device.type != "mps" else torch.float32)
            if self.ema is None:
                self.ema = value.clone()
            else:  # the average stays on the accelerator: a host float (or a CPU EMA) moves there
                if self.ema.device.type == "cpu":
                    self.ema = self.ema.to(value.device, value.dtype)
                else:
                    value = value.to(self.ema.device, self.ema.dtype)
                self.ema = self.ema * self.beta + (1 - self.beta) * value
            self.epoch_losses_seen += 1
        self._pending = []

    def discard(self) -> None:
        """Forget the pending losses (the step was skipped)."""
        self._pending = []

    def value(self) -> torch.Tensor | float:
        """:math:`g_t` now: a 0-dim tensor on the loss's device, or 1.0 when no reference exists."""
        lam, best = self.weight, self.best
        if lam == 0.0 or best is None or best <= 0.0 or self.ema is None:
            return 1.0
        return (1.0 - (self.ema - best) / (lam * best)).clamp(0.0, 1.0)

    # -- per epoch ------------------------------------------------------------------------------
    def end_epoch(self, train_loss: float | None) -> None:
        """The finished epoch's mean training loss updates :math:`L^*` (non-finite ones are ignored).

        Without per-step losses, the epoch mean also becomes the average.
        """
        if train_loss is None or not math.isfinite(float(train_loss)):
            return
        train_loss = float(train_loss)
        self.best = train_loss if self.best is None else min(self.best, train_loss)
        if self.epoch_losses_seen == 0:
            self.ema = torch.tensor(train_loss, dtype=torch.float64)
        self.epoch_losses_seen = 0

    # -- data parallelism -----------------------------------------------------------------------
    def sync_distributed(self, group: Any = None) -> None:
        """Average the pending losses over ranks (the global batch's mean loss, for equal shards).

        A non-finite loss on any rank makes the average non-finite everywhere, so every rank skips
        the step together.
        """
        if not self._pending or not is_distributed(group):
            return
        import torch.distributed as dist

        stacked = torch.stack(self._pending).to(torch.float64)
        all_reduce_sum([stacked], group)
        self._pending = list((stacked / dist.get_world_size(group)).unbind())

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "ema": None if self.ema is None else self.ema.detach().clone(),
            "best": self.best,
            "epoch_losses_seen": self.epoch_losses_seen,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ema = state["ema"]
        if ema is not None and not isinstance(ema, torch.Tensor):
            ema = torch.tensor(float(ema), dtype=torch.float64)
        self.ema = ema
        self.best = None if state["best"] is None else float(state["best"])
        self.epoch_losses_seen = int(state["epoch_losses_seen"])
        self._pending = []
