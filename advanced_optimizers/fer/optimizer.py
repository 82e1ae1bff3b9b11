"""The seed API's FER: a base optimizer plus a :class:`~.loss.FERLoss` (``optimizer.fer_loss``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .._validation import check_int, check_positive
from .._wrapper import WrappedOptimizer, build_base_optimizer
from .loss import FERLoss

__all__ = ["FEROptimizer", "create_fer_optimizer"]


class FEROptimizer(WrappedOptimizer):
    r"""A base optimizer plus :class:`FERLoss`: the seed API's FER.

    Compute every batch's loss with :meth:`fer_loss` (it needs each sample's dataset index) and call
    :meth:`set_epoch` at the start of every epoch; the store rows of a batch are written when its
    step is taken (a skipped non-finite step drops them; ``zero_grad`` between the forward and the
    backward, as Lightning does, keeps them; the rows of a step a ``GradScaler`` skipped are written
    with the next step taken). The math
    is :class:`FERLoss`'s; ``memory_size`` is its ``num_samples``. ``criterion`` is the loss
    module, and its store is part of :meth:`state_dict`.
    """

    algorithm = "fer"

    def __init__(
        self,
        params: Any,
        base_optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.Adam,
        base_optimizer_kwargs: dict[str, Any] | None = None,
        fer_weight: float = 0.1,
        consistency_threshold: float = 0.9,
        memory_size: int = 1000,
        *,
        epochs: int | None = None,
        temperature: float = 5.0,
        mu: float = 1.0,
        warmup_epochs: int = 1,
        num_classes: int | None = None,
        nonfinite: str = "skip",
    ) -> None:
        criterion = FERLoss(
            check_int("memory_size", memory_size, 1),
            num_classes,
            epochs,
            fer_weight=fer_weight,
            consistency_threshold=consistency_threshold,
            temperature=temperature,
            mu=mu,
            warmup_epochs=warmup_epochs,
        )
        kwargs = {"lr": 1e-3} if base_optimizer_kwargs is None else base_optimizer_kwargs
        base = build_base_optimizer(params, base_optimizer, kwargs, "FEROptimizer")
        super().__init__(base, nonfinite=nonfinite)
        self.criterion = criterion.to(self.param_groups[0]["params"][0].device)
        self.criterion.deferred = True
        self._loss_since_step = False

    # -- the seed API -----------------------------------------------------------------------------
    @property
    def memory_size(self) -> int:
        return self.criterion.num_samples

    @property
    def soft_targets(self) -> torch.Tensor:
        """The store's ``S`` (``memory_size`` x classes; empty until the classes are known)."""
        return self.criterion.soft_targets

    @property
    def ever_correct(self) -> torch.Tensor:
        """The store's sticky flags ``F``."""
        return self.criterion.ever_correct

    @property
    def epoch(self) -> int | None:
        return self.criterion.epoch

    @property
    def epochs(self) -> int | None:
        return self.criterion.epochs

    @property
    def fer_active(self) -> bool:
        return self.criterion.active

    @property
    def current_lambda(self) -> float:
        return self.criterion.current_lambda

    def set_epoch(self, epoch: int, epochs: int | None = None) -> None:
        """Declare the current (1-based) epoch and optionally the total (see :class:`FERLoss`)."""
        self.criterion.set_epoch(epoch, epochs)

    def fer_loss(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        indices: torch.Tensor,
        epoch: int | None = None,
    ) -> torch.Tensor:
        """FER's batch loss (:class:`FERLoss`); ``epoch`` (1-based) overrides :meth:`set_epoch`."""
        if epoch is not None:
            self.set_epoch(epoch)
        loss = self.criterion(logits, targets, indices)
        self._loss_since_step = True
        return loss

    def wrap_logits(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        indices: torch.Tensor,
        epoch: int | None = None,
        loss_scale: float = 1.0,
    ) -> torch.Tensor:
        """The logits with FER's extra gradient attached (:meth:`FERLoss.wrap_logits`), for
        trainers that compute the cross-entropy themselves; counts as FER's loss for this step."""
        if epoch is not None:
            self.set_epoch(epoch)
        wrapped = self.criterion.wrap_logits(logits, targets, indices, loss_scale=loss_scale)
        self._loss_since_step = True
        return wrapped

    def store_summary(self) -> dict[str, float]:
        """Fraction of flagged samples, mean mass of their targets and the current λ_t."""
        return self.criterion.summary()

    def sync_distributed(self, group: Any = None) -> None:
        """Share the pending store rows across ranks (see :meth:`FERLoss.sync_distributed`)."""
        self.criterion.sync_distributed(group)

    # -- the step template ------------------------------------------------------------------------
    def _start_step(self, loss: Any) -> None:
        if not self._loss_since_step:
            self.warn_once(
                f"inactive-epoch-{self.epoch}",
                "FEROptimizer.step() without fer_loss() since the previous step: FER is inactive "
                f"and this trains plain {type(self.base).__name__}; compute the loss with "
                "optimizer.fer_loss(logits, targets, indices)",
            )
        self._loss_since_step = False

    def _after_step(self) -> None:
        self.criterion.commit()

    def _discard_step(self) -> None:
        self.criterion.discard()

    # -- checkpoints ------------------------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        return {"loss": self.criterion.state_dict(), "loss_since_step": self._loss_since_step}

    def _check_extra_state(self, extra: dict[str, Any]) -> None:
        problem = self.criterion.check_state(extra.get("loss", {}))
        if problem:
            raise ValueError(problem)

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        self.criterion.load_state_dict(extra["loss"])
        self._loss_since_step = bool(extra["loss_since_step"])

    def _repr_options(self) -> dict[str, Any]:
        c = self.criterion
        return {
            "fer_weight": c.fer_weight,
            "consistency_threshold": c.consistency_threshold,
            "memory_size": c.num_samples,
            "temperature": c.temperature,
            "mu": c.mu,
            "warmup_epochs": c.warmup_epochs,
            "epoch": f"{c.epoch}/{c.epochs}",
        }


def create_fer_optimizer(
    params: Any,
    lr: float = 1e-3,
    fer_weight: float = 0.1,
    consistency_threshold: float = 0.9,
    *,
    base_optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.Adam,
    memory_size: int = 1000,
    base_kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> FEROptimizer:
    """FER on ``base_optimizer(params, lr=lr, **base_kwargs)`` (Adam by default).

    ``options`` go to :class:`FEROptimizer` (``epochs``, ``temperature``, ``mu``, ``warmup_epochs``,
    ``num_classes``, ``nonfinite``).
    """
    check_positive("lr", lr)
    if base_kwargs is not None and not isinstance(base_kwargs, dict):
        raise TypeError(
            f"base_kwargs must be a dict of the base optimizer's arguments, got "
            f"{type(base_kwargs).__name__} ({base_kwargs!r:.60})"
        )
    return FEROptimizer(
        params,
        base_optimizer,
        {**(base_kwargs or {}), "lr": lr},
        fer_weight=fer_weight,
        consistency_threshold=consistency_threshold,
        memory_size=memory_size,
        **options,
    )
