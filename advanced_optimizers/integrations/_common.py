"""What the Lightning and Hugging Face integrations share: finding the algorithm behind a trainer's
optimizer, the epoch's mean training loss across ranks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from .._distributed import all_reduce_sum, is_distributed
from .._wrapper import WrappedOptimizer
from ..fer import FERLoss, FEROptimizer
from ..localized import LocalizedOptimizer

__all__ = [
    "Algorithms",
    "EpochLoss",
    "find_algorithms",
    "unwrap_optimizer",
]

_TARGET_KEYS = ("labels", "label", "targets", "target", "y")


def unwrap_optimizer(optimizer: Any) -> Any:
    """The optimizer a trainer's wrapper holds (Lightning's ``LightningOptimizer``, accelerate's
    ``AcceleratedOptimizer``); the library's own optimizers are returned as they are."""
    for _ in range(8):
        if isinstance(optimizer, WrappedOptimizer):
            return optimizer
        inner = getattr(optimizer, "optimizer", None)
        if inner is None:
            inner = getattr(optimizer, "_optimizer", None)
        if inner is None or inner is optimizer or not isinstance(inner, torch.optim.Optimizer):
            return optimizer
        optimizer = inner
    return optimizer


class Algorithms:
    """The FER store and the LoCal optimizers a trainer's optimizers need driven."""

    def __init__(
        self,
        fer: FERLoss | None,
        fer_optimizer: FEROptimizer | None,
        fer_owner: Any,
        localized: list[LocalizedOptimizer],
    ) -> None:
        self.fer = fer
        self.fer_optimizer = fer_optimizer
        self.fer_owner = fer_owner  # the optimizer whose step commits FER's store rows
        self.localized = localized

    def fer_batch_loss(self, logits: Any, targets: Any, indices: Any) -> torch.Tensor:
        """FER's loss of a batch, through the optimizer when it is an FEROptimizer."""
        if self.fer_optimizer is not None:
            return self.fer_optimizer.fer_loss(logits, targets, indices)
        assert self.fer is not None
        return self.fer(logits, targets, indices)

    def wrap_logits(
        self, logits: torch.Tensor, targets: Any, indices: Any, loss_scale: float = 1.0
    ) -> torch.Tensor:
        """FER's extra gradient on the logits, through the optimizer when it is an FEROptimizer."""
        owner = self.fer_optimizer if self.fer_optimizer is not None else self.fer
        assert owner is not None
        return owner.wrap_logits(logits, targets, indices, loss_scale=loss_scale)

    def end_epoch(self, epoch_loss: EpochLoss) -> dict[str, float]:
        """LoCal's epoch hook (the transition may move) and the numbers worth logging."""
        metrics: dict[str, float] = {}
        if self.localized:
            mean = epoch_loss.mean()
            for optimizer in self.localized:
                metrics.update(optimizer.end_epoch(mean))
        if self.fer is not None:
            metrics.update(self.fer.summary())
        return metrics

    def sync_distributed(self, optimizer: Any) -> None:
        """The per-step syncs of the algorithms stepping with ``optimizer`` (no-op in one process)."""
        inner = unwrap_optimizer(optimizer)
        if self.fer is not None and inner is self.fer_owner:
            self.fer.sync_distributed()
        if inner in self.localized:
            inner.sync_distributed()


def find_algorithms(optimizers: Iterable[Any], fer: FERLoss | None = None) -> Algorithms:
    """The FER store (``fer``, or an FEROptimizer's) and the LoCal optimizers among ``optimizers``."""
    found = [unwrap_optimizer(o) for o in optimizers if o is not None]
    fer_optimizers = [o for o in found if isinstance(o, FEROptimizer)]
    if fer is not None and not isinstance(fer, FERLoss):
        raise TypeError(f"fer must be an advanced_optimizers.FERLoss, got {type(fer).__name__}")
    if len(fer_optimizers) + (fer is not None) > 1:
        raise ValueError(
            "one FER store per training run: got "
            + ("a FERLoss and " if fer is not None else "")
            + f"{len(fer_optimizers)} FEROptimizer(s); use either fer= with a plain optimizer "
            "or an FEROptimizer"
        )
    fer_optimizer = fer_optimizers[0] if fer_optimizers else None
    criterion = fer if fer is not None else getattr(fer_optimizer, "criterion", None)
    owner = fer_optimizer if fer_optimizer is not None else (found[0] if found else None)
    if criterion is not None and owner is None:
        raise ValueError("FER needs an optimizer to step with: the trainer has none")
    localized = [o for o in found if isinstance(o, LocalizedOptimizer)]
    return Algorithms(criterion, fer_optimizer, owner, localized)


def batch_size_of(batch: Any) -> int | None:
    """The number of samples of a batch (tuple/list or mapping of tensors), if it can be told."""
    values = batch.values() if isinstance(batch, Mapping) else batch
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else None
    if isinstance(values, Iterable) and not isinstance(values, (str, bytes)):
        for value in values:
            if isinstance(value, torch.Tensor) and value.ndim:
                return int(value.shape[0])
    return None


def split_batch(batch: Any, index_key: str) -> tuple[Any, Any]:
    """``(targets, indices)`` of an indexed batch: ``(..., y, index)`` or a mapping with
    ``index_key`` and one of ``labels``/``label``/``targets``/``target``/``y``; ``None`` if absent."""
    if isinstance(batch, Mapping):
        indices = batch.get(index_key)
        targets = next((batch[k] for k in _TARGET_KEYS if k in batch), None)
        return targets, indices
    if isinstance(batch, (tuple, list)) and len(batch) >= 3:
        last = batch[-1]
        if isinstance(last, torch.Tensor) and not last.is_floating_point() and last.ndim == 1:
            return batch[-2], last
    return None, None


class EpochLoss:
    """The mean training loss of an epoch, weighted by batch size, over every rank."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.total: torch.Tensor | float = 0.0
        self.count = 0

    def add(self, loss: torch.Tensor | float, size: int) -> None:
        value = loss.detach().double() if isinstance(loss, torch.Tensor) else float(loss)
        self.total = self.total + value * size
        self.count += size

    def mean(self) -> float | None:
        """The epoch's mean (a host read); ``None`` if no loss was seen."""
        total = torch.as_tensor(self.total, dtype=torch.float64).reshape(1)
        count = torch.tensor([float(self.count)], dtype=torch.float64, device=total.device)
        if is_distributed():
            both = torch.cat([total, count])
            if torch.distributed.get_backend() == "nccl" and not both.is_cuda:
                both = both.cuda()
            all_reduce_sum([both])
            total, count = both[:1], both[1:]
        if float(count) == 0:
            return None
        return float(total / count)
