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

**Failures.** A run that diverges, or is still at chance (with a validation split) by
:func:`~.failure.failure_check_epoch`, is stopped and returned with ``status = "failed"`` and the
reason: the rule of :mod:`.failure`.

Reproducibility: the model is initialised right after ``torch.manual_seed(seed)`` and the data order
of each epoch depends on ``(seed, epoch)`` only (:meth:`Dataset.epoch_order`), so methods compared under
one seed start from the same weights and see the same batches. With a ``checkpoint`` path, model,
optimizer, RNG state and history are saved atomically after every epoch; a restarted run resumes from
there and ends with the same result as an uninterrupted one (a failure detected at the epoch of the
last checkpoint is detected again from the restored history).

The model is built on ``torch.manual_seed(seed)`` on the CPU, then moved to ``config.device`` before its
optimizer is built; the dataset stays in CPU memory and every batch (training and evaluation) is
moved to the device as it is used. A config carries the run's full fingerprint (:mod:`.run_record`:
the config, the result and the checkpoint), so a checkpoint or a finished run is only ever reused
by the same experiment.

Under ``torchrun`` every rank trains on its shard of each global batch and the gradients are averaged
across ranks (:mod:`.distributed`); the records and checkpoints are those of rank 0.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from .._validation import check_choice as check_choice
from .._validation import check_int as check_int
from .._validation import check_nonnegative as check_nonnegative
from .._validation import check_positive as check_positive
from .._validation import check_range as check_range
from .atomic import write_torch
from .data import Dataset, move_batch
from .device import resolve_device
from .distributed import average_gradients, is_main, mean_over_ranks, shard, world_size
from .failure import CHANCE_FACTOR as CHANCE_FACTOR
from .failure import detect_failure
from .failure import failure_check_epoch as failure_check_epoch
from .methods import EpochInfo, Method, Setup, get_method
from .models import ModelSpec
from .run_record import _CHECKPOINT_KEYS as _CHECKPOINT_KEYS
from .run_record import _MISSING as _MISSING
from .run_record import _RUN_DEVICES as _RUN_DEVICES
from .run_record import FINGERPRINT_FIELDS as FINGERPRINT_FIELDS
from .run_record import SCHEDULES as SCHEDULES
from .run_record import RunConfig, RunResult, _check_data, config_differences, read_checkpoint
from .run_record import _pack_bits as _pack_bits
from .run_record import _unpack_bits as _unpack_bits
from .run_record import data_id as data_id

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
# The names imported above as ``name as name`` are re-exported: this module held them before the
# run's records moved to :mod:`.run_record` and the failure rule to :mod:`.failure`.


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
    (the CPU when ``None``). A run that fails (see :mod:`.failure`) stops early and is
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
