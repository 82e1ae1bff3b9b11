"""SigProp's optimizer: Adam over the layers and the signal projection, with the shared guard."""

from __future__ import annotations

from typing import Any

import torch

from .._guard import GuardedTorchOptimizer
from .._validation import check_nonnegative, check_positive
from .networks import SigPropBase

__all__ = ["SigPropAdam", "create_sigprop_optimizer"]


class SigPropAdam(GuardedTorchOptimizer, torch.optim.Adam):
    """``torch.optim.Adam`` with the library's step template and non-finite guard.

    Every layer's input is detached, so one Adam over all local parameters is the official
    per-layer optimizers (Adam is per-parameter). ``nonfinite``: ``"skip"`` (default), ``"raise"``
    or ``"ignore"``; the skip count is ``skipped_steps`` (saved in ``state_dict``).
    """

    torch_class = torch.optim.Adam

    def __init__(self, params: Any, nonfinite: str = "skip", **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._init_guard(nonfinite)


def create_sigprop_optimizer(
    model: SigPropBase,
    lr: float = 1e-3,
    signal_lr: float | None = 1e-4,
    *,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    nonfinite: str = "skip",
) -> SigPropAdam:
    """One Adam over two groups: ``"layers"`` (blocks + output) at ``lr``, ``"signal"`` at ``signal_lr``.

    ``signal_lr=None``: the projection at ``lr`` too, as the official code (one learning rate for
    every module); the default 1e-4 is the seed API's (a tenth of the default ``lr``).
    """
    if not isinstance(model, SigPropBase):
        raise TypeError(f"model must be a SigPropNet or SigPropCNN, got {type(model).__name__}")
    check_positive("lr", lr)
    if signal_lr is None:
        signal_lr = lr
    check_positive("signal_lr", signal_lr)
    check_nonnegative("weight_decay", weight_decay)
    groups = [
        {"params": model.layer_parameters(), "lr": lr, "name": "layers"},
        {"params": model.signal_parameters(), "lr": signal_lr, "name": "signal"},
    ]
    return SigPropAdam(
        groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, nonfinite=nonfinite
    )
