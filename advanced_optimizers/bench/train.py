"""One training run: a method, a model, a dataset and a seed, with per-epoch metrics and resume.

The loop only calls the :class:`~advanced_optimizers.bench.methods.Method` hooks, so it is the same
for every algorithm. Per epoch it records the mean training loss, test loss and accuracy, the
wall-clock seconds of training (evaluation excluded) and the per-sample test correctness.

Reproducibility: the model is initialised right after ``torch.manual_seed(seed)`` and the data order
of each epoch depends on ``(seed, epoch)`` only (:meth:`Dataset.epoch_order`), so methods compared under
one seed start from the same weights and see the same batches. With a ``checkpoint`` path, model,
optimizer, RNG state and history are saved atomically after every epoch; a restarted run resumes from
there and ends with the same result as an uninterrupted one.

The model is built on ``torch.manual_seed(seed)`` on the CPU, then moved to ``config.device`` before its
optimizer is built; the dataset stays in CPU memory and every batch (training and evaluation) is
moved to the device as it is used. A config carries the run's full fingerprint — the data
(``dataset``, ``n_train``, ``n_test``, ``data_id``) and the device as well as the model and the
optimisation settings — so a checkpoint or a finished run is only ever reused by the same experiment.

Under ``torchrun`` every rank trains on its shard of each global batch and the gradients are averaged
across ranks (:mod:`.distributed`); the records and checkpoints are those of rank 0.
"""

from __future__ import annotations

import base64
import hashlib
import math
import pickle
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from .._validation import check_choice, check_int, check_nonnegative, check_positive, check_range
from .atomic import write_torch
from .data import Dataset, move_batch
from .device import resolve_device
from .distributed import average_gradients, is_main, mean_over_ranks, shard, world_size
from .methods import EpochInfo, Method, Setup, get_method
from .models import ModelSpec

__all__ = [
    "FINGERPRINT_FIELDS",
    "RunConfig",
    "RunResult",
    "config_differences",
    "data_id",
    "evaluate",
    "read_checkpoint",
    "train_run",
]


SCHEDULES = ("constant", "cosine")

# RunConfig fields added to make a run's record identify its experiment completely; a run file or
# checkpoint written before they existed lacks them (they load as ``None``: "unknown").
FINGERPRINT_FIELDS = ("dataset", "n_train", "n_test", "data_id", "device")
_RUN_DEVICES = ("cpu", "cuda", "mps")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one run. ``lr=None`` takes the method's default learning rate.

    ``schedule``: ``"constant"`` keeps each param group's learning rate; ``"cosine"`` multiplies it by
    ``(1 + cos(π s / S)) / 2`` at step ``s`` of ``S`` (``CosineAnnealingLR`` stepped per batch, so
    per-group ratios — μP's, for instance — are kept).

    The data and device fields are the run's fingerprint (``None`` = not recorded): ``dataset`` the
    dataset's name, ``n_train`` / ``n_test`` the numbers of samples actually used, ``data_id`` a
    digest of the labels used (:func:`data_id`), ``device`` the device type trained on (``None``
    trains on the CPU). When set, :func:`train_run` checks them against the dataset it is given.
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
    dataset: str | None = None
    n_train: int | None = None
    n_test: int | None = None
    data_id: str | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        check_choice("schedule", self.schedule, SCHEDULES)
        check_int("epochs", self.epochs, 1)
        check_int("batch_size", self.batch_size, 1)
        check_int("seed", self.seed, 0)
        if self.lr is not None:
            check_positive("lr", self.lr)
        check_range("momentum", self.momentum, 0.0, 1.0, high_open=True)
        check_nonnegative("weight_decay", self.weight_decay)
        for name in ("n_train", "n_test"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 1)
        if self.device is not None:
            check_choice("device", self.device, _RUN_DEVICES)

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


def data_id(dataset: Dataset) -> str:
    """A short digest of ``dataset``'s labels (train, then test) and sizes.

    It tells one subset, order or source of the data from another. It is computed on the labels
    only: they are exact integers, whereas the normalised images can differ in their last bits from
    one machine or thread count to another; the images of the catalog datasets are pinned by their
    files' SHA-256 sums.
    """
    digest = hashlib.sha256(f"{dataset.name}:{dataset.n_train}:{dataset.n_test}:".encode())
    for labels in (dataset.y_train, dataset.y_test):
        digest.update(labels.to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def config_differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """``"name: saved X, now Y"`` for every field of two config dicts that differs."""
    keys = list(wanted) + [k for k in saved if k not in wanted]
    return [
        f"{key}: saved {saved.get(key, '(not recorded)')!r}, now {wanted.get(key)!r}"
        for key in keys
        if saved.get(key, _MISSING) != wanted.get(key, _MISSING)
    ]


_MISSING = object()
_CHECKPOINT_KEYS = {"config", "model", "optimizer", "rng", "history", "correct"}


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`train_run` (tensors only, onto the CPU).

    A damaged or foreign file is a ``ValueError`` naming it and saying what to do — never a prompt
    to load it with ``weights_only=False``, which would let a planted file run code.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch warns about odd pickles before failing on them
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, KeyError) as exc:
        raise ValueError(
            f"checkpoint {path} is damaged or not an advopt checkpoint "
            f"({type(exc).__name__}); delete it to restart that run from its first epoch"
        ) from None
    missing = _CHECKPOINT_KEYS - set(state) if isinstance(state, dict) else _CHECKPOINT_KEYS
    if missing:
        raise ValueError(
            f"checkpoint {path} is not an advopt checkpoint (it lacks {', '.join(sorted(missing))}); "
            "delete it to restart that run from its first epoch"
        )
    return state


def _check_data(config: RunConfig, dataset: Dataset) -> None:
    """The dataset matches the config's data fingerprint (fields left ``None`` are not checked)."""
    actual = {
        "dataset": dataset.name,
        "n_train": dataset.n_train,
        "n_test": dataset.n_test,
        "data_id": data_id(dataset) if config.data_id is not None else None,
    }
    wrong = [
        f"{key}: config {getattr(config, key)!r}, data {value!r}"
        for key, value in actual.items()
        if getattr(config, key) is not None and getattr(config, key) != value
    ]
    if wrong:
        raise ValueError(f"the dataset given does not match the run's config ({'; '.join(wrong)})")


def _pack_bits(row: torch.Tensor) -> str:
    return base64.b64encode(np.packbits(row.numpy().astype(np.uint8)).tobytes()).decode("ascii")


def _unpack_bits(text: str, n: int) -> torch.Tensor:
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:n]
    return torch.from_numpy(bits.astype(bool))


@torch.no_grad()
def evaluate(
    method: Method, model: nn.Module, dataset: Dataset, batch_size: int = 1000
) -> tuple[float, float, torch.Tensor]:
    """Test loss, test accuracy and the per-sample correctness vector (on the CPU).

    Each test batch is moved to the device of the model's parameters.
    """
    device = _model_device(model)
    was_training = model.training
    model.eval()
    loss_sum = 0.0
    correct = []
    for batch in dataset.test_batches(batch_size, device=device):
        logits = method.predict(model, batch.x)
        loss_sum += F.cross_entropy(logits, batch.y, reduction="sum").item()
        correct.append(logits.argmax(dim=1) == batch.y)
    model.train(was_training)
    hits = torch.cat(correct).cpu()
    return loss_sum / dataset.n_test, hits.sum().item() / dataset.n_test, hits


def cuda_rng(device: torch.device) -> dict[str, torch.Tensor]:
    """The CUDA generator's state to checkpoint when training on a GPU (else nothing)."""
    return {"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}


def _model_device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _build(
    config: RunConfig, dataset: Dataset, device: torch.device
) -> tuple[Method, nn.Module, torch.optim.Optimizer, LRScheduler | None]:
    method = get_method(config.method, **config.options)
    spec = ModelSpec(
        config.arch, dataset.input_shape, dataset.num_classes, config.width, config.depth
    )
    torch.manual_seed(config.seed)
    model = method.build_model(spec).to(device)  # initialised on the CPU: same weights everywhere
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
    method.train_mode(model, optimizer)
    method.start_epoch(model, optimizer, info)
    distributed = world_size() > 1
    device = _model_device(model)
    total = 0.0
    for global_batch in dataset.train_batches(config.batch_size, config.seed, info.epoch):
        batch = move_batch(shard(global_batch), device)
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
    The model trains on ``config.device`` (the CPU when ``None``).
    """
    _check_data(config, dataset)
    device = resolve_device(config.device or "cpu")
    history: list[dict[str, float]] = []
    correct: list[torch.Tensor] = []
    first_epoch = 1
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    state = None
    if checkpoint is not None and checkpoint.exists():
        state = read_checkpoint(checkpoint)
        differences = config_differences(state["config"], config.to_dict())
        if differences:
            raise ValueError(
                f"checkpoint {checkpoint} was written by a different config "
                f"({'; '.join(differences)}); use another output directory or delete the checkpoint"
            )
    method, model, optimizer, scheduler = _build(config, dataset, device)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        history, correct = state["history"], list(state["correct"])
        first_epoch = len(history) + 1

    for epoch in range(first_epoch, config.epochs + 1):
        info = EpochInfo(epoch, config.epochs)
        start = time.perf_counter()
        train_loss = _train_epoch(method, model, optimizer, dataset, config, info, scheduler)
        extras = method.end_epoch(model, optimizer, info, train_loss)
        seconds = time.perf_counter() - start
        method.eval_mode(model, optimizer)  # the checkpoint below is written in this mode
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
                    **cuda_rng(device),
                },
            )
        if on_epoch is not None:
            on_epoch(record)
    return RunResult(config, history, torch.stack(correct))
