"""PyTorch Lightning: one callback drives FER and LoCal, so the LightningModule stays ordinary.

::

    import advanced_optimizers as ao
    from advanced_optimizers.integrations.lightning import AdvancedOptimizersCallback

    class Net(L.LightningModule):
        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y, index = batch                      # loader over ao.IndexedDataset(train_set)
            return F.cross_entropy(self(x), y)       # the loss from self(x): FER acts there

        def configure_optimizers(self):
            return ao.create_optimizer("fer-adam", self, lr=1e-3, memory_size=N, epochs=E)

    L.Trainer(max_epochs=E, callbacks=[AdvancedOptimizersCallback()]).fit(Net(), loader)

What the callback does, per optimizer found in ``trainer.optimizers`` (others are left alone, so it
is a no-op with a plain optimizer, Gradient Correction or μP):

- **FER** (an :class:`~advanced_optimizers.FEROptimizer`, or any optimizer with
  ``AdvancedOptimizersCallback(fer=FERLoss(...))``): ``set_epoch(current_epoch + 1, max_epochs)`` at
  every training epoch; the batch's targets and indices are taken in ``on_train_batch_start`` (a
  batch ``(..., y, index)``, or a dict with ``"index"`` and ``"labels"``/``"label"``/``"y"``/...);
  a forward hook on the LightningModule replaces the logits it returns during a training batch by
  ``FERLoss.wrap_logits(logits, y, index)``, values unchanged, so that the mean cross-entropy
  ``training_step`` computes from them back-propagates exactly FER's loss (with
  ``accumulate_grad_batches`` and fp16 loss scaling too). **Requirement:** ``training_step`` must
  compute its loss as the mean cross-entropy of ``self(x)`` (the first call of ``self`` with the
  whole batch), or of the submodule named by ``logits_module=``. Another loss gets FER's extra
  gradient added to its own. The rows of FER's store are written when the step is taken; under
  ``torch.distributed`` they are shared across ranks before that.
- **LoCal** (:class:`~advanced_optimizers.LocalizedOptimizer`): every step's loss feeds the gate
  (``observe_loss`` in ``on_before_backward``), ``sync_distributed()`` before every step,
  ``end_epoch(mean training loss)`` at the end of every training epoch (the transition layer
  moves there).

At the end of every training epoch the numbers worth logging (``fer_flagged``, ``fer_lambda``,
``transition``, ``hebbian_gate``, ...) are logged with ``pl_module.log_dict`` (``log=False`` turns
it off) and kept in :attr:`AdvancedOptimizersCallback.last_metrics`.

Under DDP (``strategy="ddp"``) every rank ends with the FER store and the LoCal state that one
process would hold after the global batch (``tests/test_integrations_lightning.py`` checks it); LoCal
freezes its localized layers, so it needs ``strategy="ddp_find_unused_parameters_true"``.

Works with ``lightning.pytorch`` (the ``lightning`` package) or, if only that is installed, the
standalone ``pytorch_lightning``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..fer import FERLoss
from ._common import (
    Algorithms,
    EpochLoss,
    batch_size_of,
    find_algorithms,
    split_batch,
)

try:
    from lightning.pytorch import Callback
except ImportError:  # pragma: no cover - the standalone package
    try:
        from pytorch_lightning import Callback
    except ImportError as exc:
        raise ImportError(
            "advanced_optimizers.integrations.lightning needs PyTorch Lightning: "
            "pip install 'advanced_optimizers[integrations]' (or pip install lightning)"
        ) from exc

__all__ = ["AdvancedOptimizersCallback"]


class AdvancedOptimizersCallback(Callback):
    """Drives FER and LoCal inside a Lightning ``Trainer`` (module docstring).

    Args:
        fer: a :class:`~advanced_optimizers.FERLoss` to apply with whatever optimizer the module
            returns (``None``: use the FEROptimizer's own store, if the module returns one).
        index_key: the indices' key in dict batches (``"index"``, as
            :class:`~advanced_optimizers.IndexedDataset` names it).
        get_targets, get_indices: ``batch -> tensor``, for batches of another layout.
        logits_module: dotted name of the submodule whose output are the logits (default: the
            LightningModule's own forward).
        log: log the per-epoch numbers with ``pl_module.log_dict``.
    """

    def __init__(
        self,
        fer: FERLoss | None = None,
        *,
        index_key: str = "index",
        get_targets: Callable[[Any], torch.Tensor] | None = None,
        get_indices: Callable[[Any], torch.Tensor] | None = None,
        logits_module: str | None = None,
        log: bool = True,
    ) -> None:
        super().__init__()
        if fer is not None and not isinstance(fer, FERLoss):
            raise TypeError(f"fer must be an advanced_optimizers.FERLoss, got {type(fer).__name__}")
        self.fer = fer
        self.index_key = index_key
        self.get_targets = get_targets
        self.get_indices = get_indices
        self.logits_module = logits_module
        self.log = log
        self.last_metrics: dict[str, float] = {}
        self._algorithms: Algorithms | None = None
        self._handles: list[Any] = []
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self._wrapped = False
        self._loss_scale = 1.0
        self._epoch_loss = EpochLoss()
        self._batch_size: int | None = None
        self._fer_was_deferred = False
        self._warned: set[str] = set()

    # -- set-up and tear-down ---------------------------------------------------------------------
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._remove_hooks()
        algos = find_algorithms(trainer.optimizers, self.fer)
        self._algorithms = algos
        if algos.fer is not None:
            algos.fer.to(pl_module.device)
            if algos.fer_optimizer is None:  # a FERLoss of the user's: steps commit its rows
                self._fer_was_deferred = algos.fer.deferred
                self._handles.append(algos.fer.attach(algos.fer_owner))
            module = (
                pl_module
                if self.logits_module is None
                else pl_module.get_submodule(self.logits_module)
            )
            self._handles.append(module.register_forward_hook(self._forward_hook))

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._remove_hooks()

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._remove_hooks()

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self._algorithms is not None and self._algorithms.fer_optimizer is None:
            if self._algorithms.fer is not None:
                self._algorithms.fer.deferred = self._fer_was_deferred
        self._batch = None

    # -- per epoch --------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._epoch_loss.reset()
        algos = self._algorithms
        if algos is None or algos.fer is None:
            return
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        if total is None and algos.fer.epochs is None:
            raise ValueError(
                "FER needs the number of epochs: set Trainer(max_epochs=...) or pass epochs= to "
                "the optimizer (or the FERLoss)"
            )
        algos.fer.set_epoch(trainer.current_epoch + 1, total)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        algos = self._algorithms
        if algos is None:
            return
        metrics = algos.end_epoch(self._epoch_loss)
        self.last_metrics = metrics
        if self.log and metrics:
            distributed = getattr(trainer, "world_size", 1) > 1  # equal on every rank anyway
            pl_module.log_dict(metrics, on_step=False, on_epoch=True, sync_dist=distributed)

    # -- per batch --------------------------------------------------------------------------------
    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        self._batch_size = batch_size_of(batch)
        algos = self._algorithms
        if algos is None or algos.fer is None:
            return
        targets, indices = split_batch(batch, self.index_key)
        if self.get_targets is not None:
            targets = self.get_targets(batch)
        if self.get_indices is not None:
            indices = self.get_indices(batch)
        if indices is None or targets is None:
            raise ValueError(
                "FER needs each sample's index and target in the training batch: wrap the training "
                "set in advanced_optimizers.IndexedDataset (batches (x, y, index), or dicts with "
                f"{self.index_key!r} and 'labels'), or give get_targets=/get_indices="
            )
        self._batch = (targets, indices)
        self._wrapped = False
        self._loss_scale = self._current_loss_scale(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._batch is not None and not self._wrapped:
            self._warn_once(
                "no-forward",
                "AdvancedOptimizersCallback: FER saw no logits in this training batch, so it did "
                "not act: training_step must compute its loss from self(x) (the LightningModule's "
                "forward, on the whole batch), or name the submodule with logits_module=",
            )
        self._batch = None

    def _forward_hook(self, module: Any, args: Any, output: Any) -> Any:
        if self._batch is None or self._wrapped or not module.training:
            return None
        if not torch.is_grad_enabled():
            return None
        logits = output.get("logits") if isinstance(output, Mapping) else output
        targets, indices = self._batch
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            return None
        if logits.shape[0] != len(indices):
            return None  # a forward on something else than the batch
        algos = self._algorithms
        assert algos is not None and algos.fer is not None
        wrapped = algos.wrap_logits(logits, targets, indices, self._loss_scale)
        self._wrapped = True
        if isinstance(output, torch.Tensor):
            return wrapped
        if isinstance(output, dict) and type(output) is dict:
            return {**output, "logits": wrapped}
        output["logits"] = wrapped  # a ModelOutput-like mapping
        return output

    @staticmethod
    def _current_loss_scale(trainer: Any, pl_module: Any) -> float:
        """What Lightning multiplies the training-step loss by before backward."""
        scale = 1.0
        if getattr(pl_module, "automatic_optimization", True):
            scale /= max(1, int(getattr(trainer, "accumulate_grad_batches", 1) or 1))
        scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
        if scaler is not None and getattr(scaler, "is_enabled", lambda: True)():
            scale *= float(scaler.get_scale())
        return scale

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: torch.Tensor) -> None:
        algos = self._algorithms
        if algos is None or not algos.localized:
            return
        automatic = getattr(pl_module, "automatic_optimization", True)
        factor = (
            max(1, int(getattr(trainer, "accumulate_grad_batches", 1) or 1)) if automatic else 1
        )
        self._epoch_loss.add(loss * factor if factor != 1 else loss, self._batch_size or 1)
        for optimizer in algos.localized:  # before the sync in on_before_optimizer_step
            optimizer.observe_loss(loss)

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        if self._algorithms is not None:
            self._algorithms.sync_distributed(optimizer)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=2)
