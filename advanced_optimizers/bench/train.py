"""One training run: a method, a model, a dataset and a seed, with per-epoch metrics and resume.

The loop only calls the :class:`~advanced_optimizers.bench.methods.Method` hooks, so it is the same
for every algorithm.

**What is measured, and on which split.** With a validation split (``dataset.n_val > 0``, the
protocol of ``advopt compare`` / ``advopt tune``), every epoch records

* ``train_loss``: the method's own objective, sample-weighted over the epoch's batches (FER's
  T²-scaled loss, SigProp's sum of local losses, ... — not comparable across methods);
* ``train_ce`` / ``train_acc``: plain cross-entropy and accuracy of ``method.predict`` in eval mode on a
  fixed training subset (the first ``TRAIN_EVAL_SAMPLES`` = 10 000 training samples, or all if fewer):
  the training loss that *is* comparable across methods;
* ``val_loss`` / ``val_acc`` and the per-sample validation correctness (``RunResult.correct``, the
  table the flip metrics WFS/RFE are computed from);
* ``train_seconds``: wall-clock seconds of the training pass (evaluation excluded).

The **test set** is evaluated exactly once: after the last epoch of a run that did not fail, and only
when ``evaluate_test`` is true (final runs; tuning passes ``False`` and a dataset without a test
split). The last record then holds ``test_loss`` / ``test_acc`` (``None`` in every earlier record)
and ``RunResult.test_correct`` the per-sample test correctness.

Without a validation split (``n_val == 0``: legacy and smoke-test use, labelled "no validation
split" in reports) the loop is the original one: the test set is evaluated after every epoch
(``test_loss``, ``test_acc``, per-epoch test correctness), so any selection made from such a run is
made on the test set.

**Failures.** A run is stopped and returned with ``status = "failed"`` and the reason when

* its epoch's training loss (or, with a validation split, its validation loss) is not finite
  (diverged), or
* with a validation split: its validation accuracy is not above ``CHANCE_FACTOR`` (1.5) × chance
  (``1 / num_classes``) at the end of any epoch from :func:`failure_check_epoch` on
  (``min(epochs, max(2, ceil(epochs / 4)))``: the later of epoch 2 and a quarter of the budget, the
  last epoch for shorter runs). A run still at chance there has not started learning; a run that
  falls back to chance later has collapsed.

Without a validation split only the first rule applies (the second would be a decision made on the
test set). A failed run's test set is not evaluated; its record is final (``advopt compare`` does
not retry it unless asked with ``--retry-failed``).

Reproducibility: the model is initialised right after ``torch.manual_seed(seed)`` and the data order
of each epoch depends on ``(seed, epoch)`` only (:meth:`Dataset.epoch_order`), so methods compared under
one seed start from the same weights and see the same batches. With a ``checkpoint`` path, model,
optimizer, RNG state and history are saved atomically after every epoch; a restarted run resumes from
there and ends with the same result as an uninterrupted one (a failure detected at the epoch of the
last checkpoint is detected again from the restored history).

The model is built on ``torch.manual_seed(seed)`` on the CPU, then moved to ``config.device`` before its
optimizer is built; the dataset stays in CPU memory and every batch (training and evaluation) is
moved to the device as it is used. A config carries the run's full fingerprint — the data
(``dataset``, ``n_train``, ``n_val``, ``n_test``, ``data_id``) and the device as well as the model and
the optimisation settings — so a checkpoint or a finished run is only ever reused by the same
experiment.

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
    "CHANCE_FACTOR",
    "FINGERPRINT_FIELDS",
    "RunConfig",
    "RunResult",
    "config_differences",
    "data_id",
    "detect_failure",
    "evaluate",
    "failure_check_epoch",
    "read_checkpoint",
    "train_run",
]


SCHEDULES = ("constant", "cosine")

# RunConfig fields added to make a run's record identify its experiment completely; a run file or
# checkpoint written before they existed lacks them (they load as ``None``: "unknown").
FINGERPRINT_FIELDS = ("dataset", "n_train", "n_val", "n_test", "data_id", "device")
_RUN_DEVICES = ("cpu", "cuda", "mps")

# A run whose validation accuracy is not above CHANCE_FACTOR / num_classes has failed (see above).
CHANCE_FACTOR = 1.5


def failure_check_epoch(epochs: int) -> int:
    """The first epoch at which a run still at chance counts as failed (see the module docstring)."""
    return min(epochs, max(2, math.ceil(epochs / 4)))


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
    ``n_val`` is the size of the validation split (0: none; ``None``: not recorded).
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
    n_val: int | None = None

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
        if self.n_val is not None:
            check_int("n_val", self.n_val, 0)
        if self.device is not None:
            check_choice("device", self.device, _RUN_DEVICES)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunResult:
    """One run's record.

    ``history``: per-epoch dicts (see the module docstring). ``correct``: bool (epochs × n) per-sample
    correctness on the selection split — validation, or the test set for a run without a validation
    split (``selection_split``). ``test_correct``: the final run's per-sample test correctness
    (``None`` when the test set was not evaluated once at the end). ``status``: ``"ok"`` or
    ``"failed"``, with the reason in ``failure``.
    """

    config: RunConfig
    history: list[dict[str, Any]]
    correct: torch.Tensor
    status: str = "ok"
    failure: str | None = None
    test_correct: torch.Tensor | None = None

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1]

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def selection_split(self) -> str:
        """``"val"`` if the run was measured on a validation split, else ``"test"`` (legacy)."""
        return "val" if self.history and "val_acc" in self.history[0] else "test"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; correctness rows are bit-packed and base64-encoded."""
        out: dict[str, Any] = {
            "config": self.config.to_dict(),
            "status": self.status,
            "failure": self.failure,
            "history": self.history,
            "correct_split": self.selection_split,
            "correct": [_pack_bits(row) for row in self.correct],
            "n_correct": int(self.correct.shape[1]) if self.correct.ndim == 2 else 0,
        }
        if self.test_correct is not None:
            out["test_correct"] = _pack_bits(self.test_correct)
            out["n_test"] = int(self.test_correct.numel())
        elif self.selection_split == "test":
            out["n_test"] = out["n_correct"]  # the field name older readers expect
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        """Read :meth:`to_dict`'s form, and run files written before validation splits existed."""
        width = data["n_correct"] if "n_correct" in data else data["n_test"]
        rows = [_unpack_bits(row, width) for row in data["correct"]]
        correct = torch.stack(rows) if rows else torch.zeros(0, width, dtype=torch.bool)
        test_correct = None
        if data.get("test_correct") is not None:
            test_correct = _unpack_bits(data["test_correct"], data["n_test"])
        status = data.get("status", "ok")
        if status not in ("ok", "failed"):
            raise ValueError(f"status must be 'ok' or 'failed', got {status!r}")
        return cls(
            RunConfig(**data["config"]),
            data["history"],
            correct,
            status=status,
            failure=data.get("failure"),
            test_correct=test_correct,
        )


def data_id(dataset: Dataset) -> str:
    """A short digest of ``dataset``'s labels (train, then test) and sizes.

    It tells one subset, order or source of the data from another. It is computed on the labels
    only: they are exact integers, whereas the normalised images can differ in their last bits from
    one machine or thread count to another; the images of the catalog datasets are pinned by their
    files' SHA-256 sums.
    """
    head = f"{dataset.name}:{dataset.n_train}:{dataset.n_test}:"
    splits = [dataset.y_train, dataset.y_test]
    if dataset.n_val:  # a dataset without a validation split keeps its earlier digest
        head += f"val{dataset.n_val}:"
        splits.append(dataset.y_val)
    digest = hashlib.sha256(head.encode())
    for labels in splits:
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
        "n_val": dataset.n_val,
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
    method: Method, model: nn.Module, dataset: Dataset, batch_size: int = 1000, split: str = "test"
) -> tuple[float, float, torch.Tensor]:
    """Cross-entropy, accuracy and the per-sample correctness vector (on the CPU) of ``split``.

    ``split``: ``"test"``, ``"val"`` or ``"train"`` (the fixed training subset of ``train_ce``), read
    through :meth:`Dataset.eval_batches`; each batch is moved to the device of the model's parameters.
    """
    device = _model_device(model)
    was_training = model.training
    model.eval()
    loss_sum = 0.0
    correct = []
    for batch in dataset.eval_batches(split, batch_size, device=device):
        logits = method.predict(model, batch.x)
        loss_sum += F.cross_entropy(logits, batch.y, reduction="sum").item()
        correct.append(logits.argmax(dim=1) == batch.y)
    model.train(was_training)
    n = dataset.split_size(split)
    if not correct:
        raise ValueError(f"{dataset.name} has no {split} samples to evaluate")
    hits = torch.cat(correct).cpu()
    return loss_sum / n, hits.sum().item() / n, hits


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
    if config.schedule == "cosine" and not method.manages_schedule:
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


def detect_failure(
    record: dict[str, Any], epochs: int, num_classes: int, split: str | None = None
) -> str | None:
    """Why a run whose latest epoch is ``record`` has failed (see the module docstring), or ``None``.

    ``split``: the accuracy the chance rule reads — ``"val"`` (default when the record has
    ``val_acc``); ``"test"`` applies it to a run without a validation split, which only reports do
    (after the fact, and labelled: it is a judgement made on the test set); ``None`` otherwise
    checks the losses only.
    """
    epoch = int(record["epoch"])
    if split is None and "val_acc" in record:
        split = "val"
    losses = ("train_loss", "val_loss") if "val_loss" in record else ("train_loss",)
    for key in losses:
        value = record[key]
        if value is None or not math.isfinite(value):  # a run file stores NaN/inf as null
            what = "training loss" if key == "train_loss" else "validation loss"
            return f"diverged: {what} is {value} at epoch {epoch}"
    if split is not None and epoch >= failure_check_epoch(epochs):
        acc = record[f"{split}_acc"]
        floor = CHANCE_FACTOR / num_classes
        name = "validation" if split == "val" else "test"
        if acc is None or not acc > floor:
            return (
                f"at chance: {name} accuracy {acc:.4f} <= {floor:.4f} "
                f"({CHANCE_FACTOR:g} x chance) at epoch {epoch}"
            )
    return None


def _failure(record: dict[str, Any], config: RunConfig, num_classes: int) -> str | None:
    return detect_failure(record, config.epochs, num_classes)


def train_run(
    config: RunConfig,
    dataset: Dataset,
    checkpoint: str | Path | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    *,
    evaluate_test: bool = True,
) -> RunResult:
    """Train ``config.method`` on ``dataset`` for ``config.epochs`` epochs and return its metrics.

    ``checkpoint``: a file to save the state to after every epoch and to resume from if it exists
    (it must come from the same config). ``on_epoch`` is called with each epoch's record.
    ``evaluate_test``: with a validation split, evaluate the test set once after the last epoch
    (a final run); ``False`` never touches it (tuning). Without a validation split the test set is
    evaluated every epoch regardless (the legacy loop). The model trains on ``config.device``
    (the CPU when ``None``). A run that fails (see the module docstring) stops early and is
    returned with ``status="failed"``.
    """
    _check_data(config, dataset)
    validation = dataset.n_val > 0
    device = resolve_device(config.device or "cpu")
    history: list[dict[str, Any]] = []
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
        failure = _failure(history[-1], config, dataset.num_classes) if history else None
        if failure is not None:  # detected, then killed before the run's file was written
            return RunResult(config, history, torch.stack(correct), "failed", failure)

    for epoch in range(first_epoch, config.epochs + 1):
        info = EpochInfo(epoch, config.epochs)
        start = time.perf_counter()
        train_loss = _train_epoch(method, model, optimizer, dataset, config, info, scheduler)
        extras = method.end_epoch(model, optimizer, info, train_loss)
        seconds = time.perf_counter() - start
        method.eval_mode(model, optimizer)  # the checkpoint below is written in this mode
        record: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss}
        if validation:
            train_ce, train_acc, _ = evaluate(method, model, dataset, split="train")
            val_loss, val_acc, hits = evaluate(method, model, dataset, split="val")
            record.update(
                train_ce=train_ce,
                train_acc=train_acc,
                val_loss=val_loss,
                val_acc=val_acc,
                test_loss=None,  # read once, after the last epoch
                test_acc=None,
            )
        else:
            test_loss, test_acc, hits = evaluate(method, model, dataset, split="test")
            record.update(test_loss=test_loss, test_acc=test_acc)
        record["train_seconds"] = seconds
        record.update({k: float(v) for k, v in extras.items()})
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
        failure = _failure(record, config, dataset.num_classes)
        if failure is not None:
            return RunResult(config, history, torch.stack(correct), "failed", failure)

    test_correct = None
    if validation and evaluate_test:
        # the model is in eval mode: eval_mode ran after the last epoch (or, resumed, the checkpoint
        # written after it was restored)
        test_loss, test_acc, test_correct = evaluate(method, model, dataset, split="test")
        history[-1] = {**history[-1], "test_loss": test_loss, "test_acc": test_acc}
    return RunResult(config, history, torch.stack(correct), test_correct=test_correct)
