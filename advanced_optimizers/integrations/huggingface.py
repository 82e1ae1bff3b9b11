"""Hugging Face ``transformers.Trainer``: one call makes FER and LoCal work inside it.

::

    import advanced_optimizers as ao
    from advanced_optimizers.integrations.huggingface import attach

    optimizer = ao.create_optimizer("fer-adam", model, lr=1e-3, memory_size=len(train), epochs=3)
    trainer = attach(Trainer(model=model, args=args, train_dataset=ao.IndexedDataset(train),
                             optimizers=(optimizer, None)))
    trainer.train()

:func:`attach` changes the trainer it is given (any ``Trainer`` subclass) and returns it:

- the ``"index"`` column (:class:`~advanced_optimizers.IndexedDataset`'s, or a ``datasets``
  column of that name) survives the Trainer's removal of the columns the model's ``forward`` does
  not take, and the data collator keeps it (:func:`~advanced_optimizers.collate_with_index`); it
  never reaches the model (a forward pre-hook drops it, also in evaluation and prediction);
- **FER** (an :class:`~advanced_optimizers.FEROptimizer` in ``optimizers=``, or
  ``attach(trainer, fer=FERLoss(...))`` with any optimizer): during training ``compute_loss`` takes
  the labels out of the inputs, runs the model and computes FER's loss from ``outputs.logits``
  (``(batch, classes)``: sequence/image classification heads), normalised as the Trainer expects
  (``num_items_in_batch`` when it passes one, gradient accumulation); evaluation keeps the model's
  own loss. A ``TrainerCallback`` sets FER's epoch (``set_epoch(epoch, num_train_epochs)``) and
  shares the store rows across ranks before every step under ``torch.distributed``;
- **LoCal** (:class:`~advanced_optimizers.LocalizedOptimizer`): every training batch's loss feeds
  the gate, ``sync_distributed()`` before every step, ``end_epoch(mean training loss)`` after every
  epoch.

Gradient Correction and μP optimizers are plain optimizers: pass them as
``optimizers=(optimizer, scheduler)``; ``attach`` is then a no-op (harmless). The per-epoch numbers
(``fer_flagged``, ``transition``, ...) go to ``trainer.log``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

import torch

from ..data import collate_with_index
from ..fer import FERLoss
from ._common import Algorithms, EpochLoss, find_algorithms

try:
    from transformers import Trainer, TrainerCallback
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "advanced_optimizers.integrations.huggingface needs transformers and accelerate: "
        "pip install 'advanced_optimizers[integrations]'"
    ) from exc

__all__ = ["AdvancedOptimizersTrainerCallback", "attach"]


def attach(trainer: Trainer, *, fer: FERLoss | None = None, index_key: str = "index") -> Trainer:
    """Make ``trainer`` drive FER and LoCal (module docstring); returns the same trainer.

    Call it once, before ``trainer.train()``. ``fer``: a :class:`~advanced_optimizers.FERLoss` to
    apply with a plain optimizer (or the one the Trainer creates); ``index_key``: the indices'
    column (``"index"``, as :class:`~advanced_optimizers.IndexedDataset` names it).
    """
    if not isinstance(trainer, Trainer):
        raise TypeError(f"trainer must be a transformers.Trainer, got {type(trainer).__name__}")
    if getattr(trainer, "_advanced_optimizers_callback", None) is not None:
        raise RuntimeError("attach(trainer) was already called on this trainer")
    if fer is not None and not isinstance(fer, FERLoss):
        raise TypeError(f"fer must be an advanced_optimizers.FERLoss, got {type(fer).__name__}")
    model = trainer.model
    if index_key in inspect.signature(model.forward).parameters:
        raise ValueError(
            f"{type(model).__name__}.forward takes an argument {index_key!r}; name the indices "
            f"otherwise: IndexedDataset(dataset, key=...) and attach(trainer, index_key=...)"
        )
    _keep_column(trainer, index_key)
    trainer.data_collator = collate_with_index(trainer.data_collator, key=index_key)
    callback = AdvancedOptimizersTrainerCallback(trainer, fer=fer, index_key=index_key)
    model.register_forward_pre_hook(_drop_kwarg(index_key), with_kwargs=True)
    trainer.compute_loss = callback.compute_loss  # the instance's, in front of the class's
    trainer.add_callback(callback)
    trainer._advanced_optimizers_callback = callback
    return trainer


def _keep_column(trainer: Trainer, key: str) -> None:
    """Add ``key`` to the columns the Trainer keeps (those of the model's forward, plus labels)."""
    setter = getattr(trainer, "_set_signature_columns_if_needed", None)
    if setter is None or not hasattr(trainer, "_signature_columns"):  # pragma: no cover - old API
        trainer.args.remove_unused_columns = False
        return
    setter()
    if key not in trainer._signature_columns:
        trainer._signature_columns.append(key)


def _drop_kwarg(key: str) -> Any:
    def hook(module: Any, args: Any, kwargs: dict[str, Any]) -> Any:
        if key in kwargs:
            return args, {k: v for k, v in kwargs.items() if k != key}
        return None

    return hook


class AdvancedOptimizersTrainerCallback(TrainerCallback):
    """The per-epoch and per-step part of :func:`attach` (with its ``compute_loss``)."""

    def __init__(self, trainer: Trainer, fer: FERLoss | None = None, index_key: str = "index"):
        self.trainer = trainer
        self.fer = fer
        self.index_key = index_key
        self.last_metrics: dict[str, float] = {}
        self._original_compute_loss = trainer.compute_loss
        self._algorithms: Algorithms | None = None
        self._epoch_loss = EpochLoss()
        self._handle: Any = None
        self._fer_was_deferred = False

    # -- the loss ---------------------------------------------------------------------------------
    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
        **kwargs: Any,
    ) -> Any:
        """The Trainer's ``compute_loss``, with FER's loss in training and the index kept out."""
        inputs = dict(inputs)
        indices = inputs.pop(self.index_key, None)
        algos = self._algorithms
        training = model.training and torch.is_grad_enabled()
        if num_items_in_batch is not None:
            kwargs["num_items_in_batch"] = num_items_in_batch
        if training and algos is not None and algos.fer is not None:
            loss, outputs = self._fer_loss(model, inputs, indices, num_items_in_batch)
            stat = None
        else:
            result = self._original_compute_loss(
                model, inputs, return_outputs=return_outputs, **kwargs
            )
            loss, outputs = result if return_outputs else (result, None)
            stat = loss
        if training and algos is not None and algos.localized:
            size = _batch_size(inputs, indices)
            mean = self._batch_mean(stat if stat is not None else loss, inputs, num_items_in_batch)
            self._epoch_loss.add(mean, size)
            for optimizer in algos.localized:
                optimizer.observe_loss(mean)
        return (loss, outputs) if return_outputs else loss

    def _fer_loss(
        self, model: Any, inputs: dict[str, Any], indices: Any, num_items: Any
    ) -> tuple[torch.Tensor, Any]:
        algos = self._algorithms
        assert algos is not None
        names = list(getattr(self.trainer, "label_names", None) or ["labels"])
        if len(names) != 1:
            raise ValueError(f"FER needs one label column, the Trainer has {names}")
        labels = inputs.pop(names[0], None)
        if labels is None or indices is None:
            raise ValueError(
                "FER needs each training sample's label and index: train on "
                f"advanced_optimizers.IndexedDataset(dataset) (or a {self.index_key!r} column) "
                f"with a {names[0]!r} column"
            )
        outputs = model(**inputs)
        if isinstance(outputs, Mapping):
            logits = outputs["logits"]
        elif isinstance(outputs, (tuple, list)):
            logits = outputs[0]
        else:
            logits = outputs
        loss = algos.fer_batch_loss(logits, labels, indices)
        return self._normalise(loss, len(labels), num_items), outputs

    def _loss_counts_items(self, num_items: Any) -> bool:
        """Whether the Trainer takes the loss as already divided by the accumulated batch's items
        (then it does not divide by the accumulation steps itself)."""
        flag = getattr(self.trainer, "loss_is_scaled_for_ga", None)
        if flag is not None:
            return bool(flag)
        accepts = bool(getattr(self.trainer, "model_accepts_loss_kwargs", False))
        custom = getattr(self.trainer, "compute_loss_func", None) is not None
        return (accepts and num_items is not None) or custom

    def _normalise(self, loss: torch.Tensor, batch: int, num_items: Any) -> torch.Tensor:
        """A batch-mean loss as the Trainer expects it (see ``Trainer.compute_loss``)."""
        if not self._loss_counts_items(num_items):
            return loss
        trainer = self.trainer
        if num_items is None:
            return loss / max(1, int(trainer.args.gradient_accumulation_steps))
        loss = loss * (batch / num_items)
        if getattr(trainer.args, "average_tokens_across_devices", False):
            loss = loss * trainer.accelerator.num_processes
        return loss

    def _batch_mean(self, loss: torch.Tensor, inputs: dict[str, Any], num_items: Any) -> Any:
        """The batch's mean loss from what ``compute_loss`` returned (for LoCal's gate and mean)."""
        loss = loss.detach()
        if num_items is None or not self._loss_counts_items(num_items):
            return loss
        labels = inputs.get("labels")
        if isinstance(labels, torch.Tensor):
            count = labels.ne(-100).sum()
            return loss * num_items / count.clamp_min(1)
        return loss

    # -- the Trainer's events ---------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        optimizer = kwargs.get("optimizer") or self.trainer.optimizer
        algos = find_algorithms([optimizer], self.fer)
        self._algorithms = algos
        if algos.fer is not None:
            algos.fer.to(args.device)
            if algos.fer_optimizer is None and self._handle is None:
                self._fer_was_deferred = algos.fer.deferred
                self._handle = algos.fer.attach(algos.fer_owner)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
            assert self._algorithms is not None and self._algorithms.fer is not None
            self._algorithms.fer.deferred = self._fer_was_deferred

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._epoch_loss.reset()
        algos = self._algorithms
        if algos is None or algos.fer is None:
            return
        total = getattr(state, "num_train_epochs", None) or math.ceil(args.num_train_epochs)
        epoch = math.floor((state.epoch or 0.0) + 1e-6) + 1
        algos.fer.set_epoch(min(epoch, int(total)), int(total))

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._algorithms is not None:
            self._algorithms.sync_distributed(kwargs.get("optimizer") or self.trainer.optimizer)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        algos = self._algorithms
        if algos is None:
            return
        metrics = algos.end_epoch(self._epoch_loss)
        self.last_metrics = metrics
        if metrics:
            self.trainer.log(dict(metrics))


def _batch_size(inputs: Mapping[str, Any], indices: Any) -> int:
    if isinstance(indices, torch.Tensor) and indices.ndim:
        return int(indices.shape[0])
    for value in inputs.values():
        if isinstance(value, torch.Tensor) and value.ndim:
            return int(value.shape[0])
    return 1
