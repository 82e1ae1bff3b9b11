"""One training run: a method, a model, a dataset and a seed, with per-epoch metrics and resume.

The loop only calls the :class:`~advanced_optimizers.bench.methods.Method` hooks, so it is the same
for every algorithm. Per epoch it records the mean training loss, test loss and accuracy, the
wall-clock seconds of training (evaluation excluded) and the per-sample test correctness.

Reproducibility: the model is initialised right after ``torch.manual_seed(seed)`` and the data order
of each epoch depends on ``(seed, epoch)`` only (:meth:`Dataset.epoch_order`), so methods compared under
one seed start from the same weights and see the same batches. With a ``checkpoint`` path, model,
optimizer, RNG state and history are saved atomically after every epoch; a restarted run resumes from
there and ends with the same result as an uninterrupted one.

Under ``torchrun`` every rank trains on its shard of each global batch and the gradients are averaged
across ranks (:mod:`.distributed`); the records and checkpoints are those of rank 0.
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from .._validation import check_choice, check_int, check_nonnegative, check_positive
from .atomic import write_torch
from .data import Dataset
from .distributed import average_gradients, is_main, mean_over_ranks, shard, world_size
from .methods import EpochInfo, Method, Setup, get_method
from .models import ModelSpec

__all__ = ["RunConfig", "RunResult", "evaluate", "train_run"]


SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one run. ``lr=None`` takes the method's default learning rate.

    ``schedule``: ``"constant"`` keeps each param group's learning rate; ``"cosine"`` multiplies it by
    ``(1 + cos(π s / S)) / 2`` at step ``s`` of ``S`` (``CosineAnnealingLR`` stepped per batch, so
    per-group ratios — μP's, for instance — are kept).
    """

    method: str
    options: dict[str, Any] = field(default_factory=dict)
    arch: str = "mlp"
    width: int | None = None
    depth: int | None = None
    epochs: int = 5
    batch_size: int = 128
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0
    schedule: str = "constant"

    def __post_init__(self) -> None:
        check_choice("schedule", self.schedule, SCHEDULES)
        check_int("epochs", self.epochs, 1)
        check_int("batch_size", self.batch_size, 1)
        check_int("seed", self.seed, 0)
        if self.lr is not None:
            check_positive("lr", self.lr)
        check_nonnegative("momentum", self.momentum)
        check_nonnegative("weight_decay", self.weight_decay)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunResult:
    """Per-epoch ``history`` (list of dicts) and ``correct`` (bool, epochs x n_test)."""

    config: RunConfig
    history: list[dict[str, float]]
    correct: torch.Tensor

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; correctness rows are bit-packed and base64-encoded."""
        return {
            "config": self.config.to_dict(),
            "history": self.history,
            "correct": [_pack_bits(row) for row in self.correct],
            "n_test": int(self.correct.shape[1]) if self.correct.numel() else 0,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        rows = [_unpack_bits(row, data["n_test"]) for row in data["correct"]]
        correct = torch.stack(rows) if rows else torch.zeros(0, data["n_test"], dtype=torch.bool)
        return cls(RunConfig(**data["config"]), data["history"], correct)


def _pack_bits(row: torch.Tensor) -> str:
    return base64.b64encode(np.packbits(row.numpy().astype(np.uint8)).tobytes()).decode("ascii")


def _unpack_bits(text: str, n: int) -> torch.Tensor:
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:n]
    return torch.from_numpy(bits.astype(bool))


@torch.no_grad()
def evaluate(
    method: Method, model: nn.Module, dataset: Dataset, batch_size: int = 1000
) -> tuple[float, float, torch.Tensor]:
    """Test loss, test accuracy and the per-sample correctness vector."""
    was_training = model.training
    model.eval()
    loss_sum = 0.0
    correct = []
    for batch in dataset.test_batches(batch_size):
        logits = method.predict(model, batch.x)
        loss_sum += F.cross_entropy(logits, batch.y, reduction="sum").item()
        correct.append(logits.argmax(dim=1) == batch.y)
    model.train(was_training)
    hits = torch.cat(correct)
    return loss_sum / dataset.n_test, hits.sum().item() / dataset.n_test, hits


def _build(
    config: RunConfig, dataset: Dataset
) -> tuple[Method, nn.Module, torch.optim.Optimizer, LRScheduler | None]:
    method = get_method(config.method, **config.options)
    spec = ModelSpec(
        config.arch, dataset.input_shape, dataset.num_classes, config.width, config.depth
    )
    torch.manual_seed(config.seed)
    model = method.build_model(spec)
    setup = Setup(
        lr=method.default_lr if config.lr is None else config.lr,
        epochs=config.epochs,
        steps_per_epoch=math.ceil(dataset.n_train / config.batch_size),
        n_train=dataset.n_train,
        num_classes=dataset.num_classes,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    optimizer = method.build_optimizer(model, setup)
    scheduler = None
    if config.schedule == "cosine":
        total = config.epochs * setup.steps_per_epoch
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    return method, model, optimizer, scheduler


def _train_epoch(
    method: Method,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    dataset: Dataset,
    config: RunConfig,
    info: EpochInfo,
    scheduler: LRScheduler | None = None,
) -> float:
    """One pass over the training set; returns the sample-weighted mean training loss."""
    model.train()
    method.start_epoch(model, optimizer, info)
    distributed = world_size() > 1
    total = 0.0
    for global_batch in dataset.train_batches(config.batch_size, config.seed, info.epoch):
        batch = shard(global_batch)
        optimizer.zero_grad(set_to_none=True)
        loss = method.batch_loss(model, optimizer, batch, info)
        loss.backward()
        if distributed:
            average_gradients(model)
            method.sync_distributed(model, optimizer)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item() * len(global_batch.y)  # a CPU scalar read: cheaper than tensor math
    return mean_over_ranks(total / dataset.n_train)


def train_run(
    config: RunConfig,
    dataset: Dataset,
    checkpoint: str | Path | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> RunResult:
    """Train ``config.method`` on ``dataset`` for ``config.epochs`` epochs and return its metrics.

    ``checkpoint``: a file to save the state to after every epoch and to resume from if it exists
    (it must come from the same config). ``on_epoch`` is called with each epoch's record.
    """
    method, model, optimizer, scheduler = _build(config, dataset)
    history: list[dict[str, float]] = []
    correct: list[torch.Tensor] = []
    first_epoch = 1
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=True)
        if state["config"] != config.to_dict():
            raise ValueError(
                f"checkpoint {checkpoint} was written by a different config:\n"
                f"  saved:     {state['config']}\n  requested: {config.to_dict()}\n"
                "use another output directory or delete the checkpoint"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        history, correct = state["history"], list(state["correct"])
        first_epoch = len(history) + 1

    for epoch in range(first_epoch, config.epochs + 1):
        info = EpochInfo(epoch, config.epochs)
        start = time.perf_counter()
        train_loss = _train_epoch(method, model, optimizer, dataset, config, info, scheduler)
        extras = method.end_epoch(model, optimizer, info, train_loss)
        seconds = time.perf_counter() - start
        test_loss, test_acc, hits = evaluate(method, model, dataset)
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "train_seconds": seconds,
            **{k: float(v) for k, v in extras.items()},
        }
        history.append(record)
        correct.append(hits)
        if checkpoint is not None and is_main():
            write_torch(
                checkpoint,
                {
                    "config": config.to_dict(),
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else {},
                    "rng": torch.get_rng_state(),
                    "history": history,
                    "correct": torch.stack(correct),
                },
            )
        if on_epoch is not None:
            on_epoch(record)
    return RunResult(config, history, torch.stack(correct))
