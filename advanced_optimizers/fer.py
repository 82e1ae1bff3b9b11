"""FER — reducing flipping errors (Deng, Xiao, Long, Zhang; AAAI 2022), after the official code.

FER is per-sample self-distillation toward the model's *own earlier correct* predictions, not a
gradient transformation. For every training sample ``i`` (identified by its dataset index) it keeps

* ``S[i]`` (C floats, starts at 0): a confidence-weighted running average of the softened outputs
  ``softmax(z_i / T)`` of the past *correct* predictions of sample ``i``;
* ``F[i]`` (bool, sticky): "sample ``i`` has been learned (predicted correctly) at least once".

Per mini-batch ``(z, y, idx)`` at epoch ``t`` of ``E`` (1-based), after ``warmup_epochs`` epochs of
plain cross-entropy, with ``s = S[idx]`` and ``f = F[idx]`` read *before* the update::

    λ_t     = (t / E) · (1 − γ)
    loss_i  = (1 − λ_t) · CE(z_i, y_i) + λ_t · T² · H(s_i, softmax(z_i / T))   if f_i
            = CE(z_i, y_i)                                                     otherwise
    loss    = Σ_i loss_i / B,          H(s, q) = −Σ_k s_k log q_k

Then, from the same detached logits: ``ok_i = [argmax z_i = y_i] ∧ [p_i ≥ τ]`` with
``p_i = softmax(z_i)[y_i]`` (temperature 1); ``F[idx] |= ok``; for ``ok`` rows
``α_i = 1 − exp(−μ p_i)`` and ``S[i] ← (1 − α_i) S[i] + α_i softmax(z_i / T)``. Wrong predictions
leave ``S`` untouched, so an earlier good target keeps pulling a forgotten sample back. During the
last warm-up epoch the loss is plain cross-entropy but the store is already filled (as in the official
``train_vanilla`` at ``epoch == opt.init``). No extra parameters and no extra forward pass.

Seed parameters and their meaning (the seed API ``FEROptimizer(params, base_optimizer,
base_optimizer_kwargs, fer_weight=0.1, consistency_threshold=0.9, memory_size=1000)``):

* ``fer_weight`` = the paper's ``γ`` (official default 0.1): the weight cross-entropy keeps at the final
  epoch, i.e. the schedule ``λ_t = (t/E)(1 − fer_weight)``. ``fer_weight = 1`` is plain cross-entropy;
  smaller values distil more. The seed default equals the official default, so this mapping changes
  nothing at the defaults.
* ``consistency_threshold`` = ``τ``, a confidence gate on what counts as a learned prediction: a
  sample enters ``F``/``S`` only when it is correct *and* its true-class probability is at least ``τ``.
  This is our addition (the paper is silent: it uses every correct prediction, i.e. ``τ = 0``). Reason:
  a barely-correct prediction is the least stable one and its soft output is close to uniform at
  ``T = 5``; gating keeps the distillation targets to predictions the model was confident about. For
  ``τ ≥ 0.5`` the argmax test is implied. ``τ = 0`` reproduces the official code exactly. The gate is
  applied to ``F`` and ``S`` together, so a flagged sample always has a non-empty target. The benchmark's
  ``--ablation`` mode compares ``τ = 0.9`` (seed default) with ``τ = 0`` (official).
* ``memory_size`` = the number of samples the store holds: indices must lie in ``[0, memory_size)``,
  anything else raises ``ValueError`` (never a silent wrap-around). Set it to the training-set size.

Further options (official defaults): ``temperature`` T = 5, ``mu`` μ = 1.0 (the official ResNet-18
value; 0.3/0.5 for the smaller CIFAR-100 nets), ``warmup_epochs`` = 1.

Design choices where the paper is silent:

* ``S`` is *not* renormalised (its mass ``Σ_k S[i, k] < 1`` after few updates), as in the official
  code: a sample seen correct only once with low confidence gets a weak distillation pull.
* The store is updated inside :meth:`FEROptimizer.fer_loss` (same place as the official code, before
  ``backward``), from detached logits; rows whose logits are not finite never update the store.
* The epoch comes from :meth:`FEROptimizer.set_epoch` (call it at the start of every epoch, 1-based)
  or from the ``epoch=`` argument of :meth:`fer_loss`; the total ``E`` from the constructor's
  ``epochs`` or from ``set_epoch(t, epochs)``.
* Misuse is loud: a step taken without ``fer_loss`` since the previous step warns once per epoch that
  FER is inactive (the base optimizer would silently train plain cross-entropy); out-of-range or
  non-integer indices, non-integer targets and shape mismatches raise ``ValueError`` naming the
  argument. Indices are not checked for duplicates (a sort per batch); a repeated index gets the
  last row's update, as in the official code.
* Data parallelism: each rank updates the rows of its own shard; :meth:`FEROptimizer.sync_distributed`
  (once per step, before ``step``) all-gathers the written rows so every rank holds the store a
  single process would (the harness calls it; ``tests/test_distributed.py`` checks the match).
* Non-finite gradients: the step is skipped with a warning (no parameter or base-optimizer state
  change). The store holds only finite values by construction.

Measured (``benchmarks/fer.py``, MNIST, 5 seeds; numbers in ``docs/algorithms/fer.md``): WFS falls
by 31–64% against Adam and SGD with accuracy not worse (+0.04 to +0.17 pp, not significant; a
shorter, still-underfitting CNN run was 0.83 pp worse); the time overhead is within noise on the CNN
but 12–21% on the small MLP (per-operation cost of ~40 small tensor ops per batch on CPU).
``τ = 0.9`` beat the official ``τ = 0`` by 0.48 pp accuracy on the MLP.

Usage::

    model = ...
    opt = FEROptimizer(model.parameters(), torch.optim.Adam, {"lr": 1e-3},
                       memory_size=len(train_set), epochs=E)
    for epoch in range(1, E + 1):
        opt.set_epoch(epoch)
        for x, y, idx in loader:              # the loader yields each sample's dataset index
            opt.zero_grad()
            loss = opt.fer_loss(model(x), y, idx)
            loss.backward()
            opt.step()
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ._distributed import all_gather_rows, is_distributed
from ._finite import all_finite, grads_of
from ._validation import check_int, check_nonnegative, check_positive, check_probability

__all__ = ["FEROptimizer", "create_fer_optimizer", "fer_lambda"]


def fer_lambda(epoch: int, epochs: int, gamma: float) -> float:
    """The distillation weight ``λ_t = (t / E) · (1 − γ)`` of epoch ``t`` of ``E``."""
    return epoch / epochs * (1.0 - gamma)


class FEROptimizer(torch.optim.Optimizer):
    """A base optimizer plus FER's per-sample store and loss; see the module docstring for the math.

    ``param_groups`` and ``state`` *are* the base optimizer's, so LR schedulers drive it directly.
    The store (``soft_targets`` S, ``ever_correct`` F) is part of :meth:`state_dict`.
    """

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
    ) -> None:
        if not callable(base_optimizer):
            raise TypeError(
                f"base_optimizer must be an optimizer class, got {type(base_optimizer).__name__}"
            )
        if base_optimizer_kwargs is None:
            base_optimizer_kwargs = {"lr": 1e-3}
        if not isinstance(base_optimizer_kwargs, dict):
            raise TypeError(
                f"base_optimizer_kwargs must be a dict, got {type(base_optimizer_kwargs).__name__}"
            )
        self.fer_weight = check_probability("fer_weight", fer_weight)
        self.consistency_threshold = check_probability(
            "consistency_threshold", consistency_threshold
        )
        self.memory_size = check_int("memory_size", memory_size, 1)
        self.epochs = None if epochs is None else check_int("epochs", epochs, 1)
        self.temperature = check_positive("temperature", temperature)
        self.mu = check_nonnegative("mu", mu)
        self.warmup_epochs = check_int("warmup_epochs", warmup_epochs, 0)
        if num_classes is not None:
            check_int("num_classes", num_classes, 2)

        base = base_optimizer(params, **base_optimizer_kwargs)
        if not isinstance(base, torch.optim.Optimizer):
            raise TypeError(
                f"base_optimizer must build a torch.optim.Optimizer, got {type(base).__name__}"
            )
        self.base = base
        super().__init__([p for g in base.param_groups for p in g["params"]], dict(base.defaults))
        self.param_groups = base.param_groups
        self.state = base.state
        self.defaults = base.defaults
        self._ready = True

        self.soft_targets = torch.zeros(0)  # (memory_size, C) once C is known
        self.ever_correct = torch.zeros(self.memory_size, dtype=torch.bool)
        if num_classes is not None:
            self._allocate(num_classes)
        self.epoch: int | None = None
        self.skipped_steps = 0
        self._loss_since_step = False
        self._warned_epoch: int | None = -1
        self._touched: list[torch.Tensor] = []  # store rows written since sync_distributed
        self._warned_unsynced = False

    # -- epoch schedule ---------------------------------------------------------------------------
    def set_epoch(self, epoch: int, epochs: int | None = None) -> None:
        """Declare the current (1-based) epoch ``t`` and optionally the total ``E``."""
        if epochs is not None:
            self.epochs = check_int("epochs", epochs, 1)
        check_int("epoch", epoch, 1)
        if self.epochs is not None and epoch > self.epochs:
            raise ValueError(f"epoch must be in [1, epochs={self.epochs}], got {epoch}")
        self.epoch = epoch

    @property
    def fer_active(self) -> bool:
        """True once warm-up is over: the loss includes the distillation term."""
        return self.epoch is not None and self.epoch > self.warmup_epochs

    @property
    def current_lambda(self) -> float:
        """``λ_t`` of the current epoch (0 during warm-up)."""
        if not self.fer_active or self.epochs is None:
            return 0.0
        return fer_lambda(self.epoch, self.epochs, self.fer_weight)

    # -- the loss ---------------------------------------------------------------------------------
    def fer_loss(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        indices: torch.Tensor,
        epoch: int | None = None,
    ) -> torch.Tensor:
        """FER's batch loss (see module docstring); also updates the store from ``logits``.

        ``logits`` (B, C) float, ``targets`` (B,) integer labels, ``indices`` (B,) integer dataset
        indices in ``[0, memory_size)``. ``epoch`` (1-based) overrides :meth:`set_epoch`.
        """
        if epoch is not None:
            self.set_epoch(epoch)
        if self.epoch is None:
            raise RuntimeError(
                "FEROptimizer: the epoch is unknown; call optimizer.set_epoch(epoch) at the start "
                "of every epoch (1-based) or pass epoch= to fer_loss"
            )
        if self.epochs is None:
            raise RuntimeError(
                "FEROptimizer: the total number of epochs is unknown; pass epochs= to the "
                "constructor or call set_epoch(epoch, epochs)"
            )
        self._check_batch(logits, targets, indices)
        if self.soft_targets.numel() == 0:
            self._allocate(logits.shape[1])
        z = logits.float()
        idx = indices.to(torch.long)
        loss, parts = self._loss(z, targets, idx)
        if self.epoch >= self.warmup_epochs:  # last warm-up epoch and after: fill the store
            self._update_store(z, targets, idx, *parts)
            if is_distributed():
                self._touched.append(idx.detach())
        self._loss_since_step = True
        return loss

    def _loss(
        self, z: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The batch loss and the pieces the store update reuses (CE, log q_T, s, f)."""
        ce = -F.log_softmax(z, dim=1).gather(1, y.unsqueeze(1)).squeeze(1)
        if not self.fer_active:
            return ce.mean(), (ce,)
        t = self.temperature
        log_q = F.log_softmax(z / t, dim=1)
        s = self.soft_targets[idx]
        f = self.ever_correct[idx]
        w = f.to(z.dtype) * self.current_lambda  # λ_t on remembered samples, 0 elsewhere
        # Σ_i [(1 − w_i)·CE_i + w_i·T²·H(s_i, q_i)] / B, with the soft term folded into one product
        soft_term = (s * (w * (t * t)).unsqueeze(1) * log_q).sum()
        loss = (ce.sum() - torch.dot(w, ce) - soft_term) / z.shape[0]
        return loss, (ce, log_q, s, f)

    @torch.no_grad()
    def _update_store(
        self,
        z: torch.Tensor,
        y: torch.Tensor,
        idx: torch.Tensor,
        ce: torch.Tensor,
        log_q: torch.Tensor | None = None,
        old: torch.Tensor | None = None,
        flags: torch.Tensor | None = None,
    ) -> None:
        """S ← (1−α)S + α softmax(z/T), F ← F ∨ ok on rows predicted correctly with p_y ≥ τ.

        Non-finite logits give a NaN ``p_y``, which fails ``p_y ≥ τ``: such rows never update.
        """
        z = z.detach()
        p_true = torch.exp(-ce.detach())  # softmax(z)[y] at temperature 1
        ok = (z.argmax(dim=1) == y) & (p_true >= self.consistency_threshold)
        alpha = 1.0 - torch.exp(p_true * -self.mu)
        if log_q is None:
            soft = torch.softmax(z / self.temperature, dim=1)
            old, flags = self.soft_targets[idx], self.ever_correct[idx]
        else:
            soft = log_q.detach().exp()
        new = torch.lerp(old, soft, alpha.unsqueeze(1))
        self.soft_targets[idx] = torch.where(ok.unsqueeze(1), new, old)
        self.ever_correct[idx] = flags | ok

    def _allocate(self, num_classes: int) -> None:
        self.soft_targets = torch.zeros(self.memory_size, num_classes)

    def _check_batch(self, logits: torch.Tensor, targets: torch.Tensor, idx: torch.Tensor) -> None:
        for name, value in (("logits", logits), ("targets", targets), ("indices", idx)):
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if logits.ndim != 2 or not logits.is_floating_point():
            raise ValueError(
                f"logits must be a float tensor of shape (batch, classes), got {logits.dtype} "
                f"{tuple(logits.shape)}"
            )
        batch, classes = logits.shape
        if self.soft_targets.numel() and classes != self.soft_targets.shape[1]:
            raise ValueError(
                f"logits must have {self.soft_targets.shape[1]} classes (the store's), got {classes}"
            )
        for name, value in (("targets", targets), ("indices", idx)):
            if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
                raise ValueError(f"{name} must be an integer tensor, got dtype {value.dtype}")
            if value.shape != (batch,):
                raise ValueError(
                    f"{name} must have shape ({batch},) to match logits, got {tuple(value.shape)}"
                )
        if batch == 0:
            raise ValueError("logits must hold at least one sample, got an empty batch")
        lo, hi = torch.aminmax(idx)
        lo, hi = int(lo), int(hi)
        if lo < 0 or hi >= self.memory_size:
            raise ValueError(
                f"indices must lie in [0, memory_size={self.memory_size}), got values in "
                f"[{lo}, {hi}]; set memory_size to the training-set size"
            )

    # -- Optimizer contract -----------------------------------------------------------------------
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One base-optimizer step (skipped with a warning if a gradient is not finite)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if not self._loss_since_step and self._warned_epoch != self.epoch:
            self._warned_epoch = self.epoch
            warnings.warn(
                "FEROptimizer.step() without fer_loss() since the previous step: FER is inactive "
                f"and this trains plain {type(self.base).__name__}; compute the loss with "
                "optimizer.fer_loss(logits, targets, indices)",
                RuntimeWarning,
                stacklevel=2,
            )
        self._loss_since_step = False
        if self._touched:  # rows written under torch.distributed but never shared
            self._touched = []
            if not self._warned_unsynced:
                self._warned_unsynced = True
                warnings.warn(
                    "FEROptimizer under torch.distributed: call optimizer.sync_distributed() after "
                    "backward() and before step(), or each rank keeps only its own samples' store",
                    RuntimeWarning,
                    stacklevel=2,
                )
        if self._grads_finite():
            self.base.step()
        else:
            self.skipped_steps += 1
            warnings.warn(
                "FEROptimizer: non-finite gradient, step skipped (parameters and state unchanged)",
                RuntimeWarning,
                stacklevel=2,
            )
        return loss

    # -- data parallelism -----------------------------------------------------------------------
    def sync_distributed(self, group: Any = None) -> None:
        """Give every rank the store rows the others wrote since the last call (no-op in one process).

        Under data parallelism each rank computes ``fer_loss`` on its own shard and so updates only
        its samples' rows of ``S`` and ``F``. Call this once per step (after ``backward``, before
        :meth:`step`): the rows are all-gathered and written on every rank, so the store is the one a
        single process would hold after the global batch (samples of different ranks are distinct).
        """
        touched = torch.cat(self._touched) if self._touched else torch.zeros(0, dtype=torch.long)
        self._touched = []
        if not is_distributed(group):
            return
        store = (
            self.soft_targets[touched].to(torch.float64)
            if self.soft_targets.numel()
            else torch.zeros(touched.numel(), 0, dtype=torch.float64)
        )
        flags = self.ever_correct[touched].to(torch.float64).unsqueeze(1)
        rows = torch.cat([touched.to(torch.float64).unsqueeze(1), flags, store], dim=1)
        for block in all_gather_rows(rows, group):
            idx = block[:, 0].to(torch.long)
            self.ever_correct[idx] = block[:, 1] > 0.5
            self.soft_targets[idx] = block[:, 2:].to(self.soft_targets.dtype)

    def _grads_finite(self) -> bool:
        return all_finite(grads_of(self))

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not getattr(self, "_ready", False):
            super().add_param_group(param_group)  # Optimizer.__init__ on a scratch list
        else:
            self.base.add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:
        return {
            "base": self.base.state_dict(),
            "fer": {
                "soft_targets": self.soft_targets.clone(),
                "ever_correct": self.ever_correct.clone(),
                "memory_size": self.memory_size,
                "epoch": self.epoch,
                "epochs": self.epochs,
                "skipped_steps": self.skipped_steps,
                "loss_since_step": self._loss_since_step,
                "warned_epoch": self._warned_epoch,
            },
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        fer = state_dict["fer"]
        if int(fer["memory_size"]) != self.memory_size:
            raise ValueError(
                f"state_dict has memory_size={fer['memory_size']}, this optimizer "
                f"{self.memory_size}"
            )
        self.base.load_state_dict(state_dict["base"])
        self.param_groups = self.base.param_groups
        self.state = self.base.state
        self.soft_targets = fer["soft_targets"].detach().clone().float()
        self.ever_correct = fer["ever_correct"].detach().clone().bool()
        self.epoch = fer["epoch"]
        self.epochs = fer["epochs"]
        self.skipped_steps = int(fer["skipped_steps"])
        self._loss_since_step = bool(fer["loss_since_step"])
        self._warned_epoch = fer["warned_epoch"]

    def store_summary(self) -> dict[str, float]:
        """Fraction of flagged samples, mean mass of their targets and the current λ_t."""
        flagged = self.ever_correct
        n_flag = int(flagged.sum())
        mass = float(self.soft_targets[flagged].sum(dim=1).mean()) if n_flag else 0.0
        return {
            "fer_flagged": n_flag / self.memory_size,
            "fer_target_mass": mass if math.isfinite(mass) else 0.0,
            "fer_lambda": self.current_lambda,
        }

    def __repr__(self) -> str:
        return (
            f"FEROptimizer(base={type(self.base).__name__}(lr={self.param_groups[0]['lr']}), "
            f"fer_weight={self.fer_weight}, consistency_threshold={self.consistency_threshold}, "
            f"memory_size={self.memory_size}, temperature={self.temperature}, mu={self.mu}, "
            f"warmup_epochs={self.warmup_epochs}, epoch={self.epoch}/{self.epochs})"
        )

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def create_fer_optimizer(
    params: Any,
    lr: float = 1e-3,
    fer_weight: float = 0.1,
    consistency_threshold: float = 0.9,
    *,
    base_optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.Adam,
    memory_size: int = 1000,
    **options: Any,
) -> FEROptimizer:
    """FER on ``base_optimizer(params, lr=lr)`` (Adam by default).

    ``options`` go to :class:`FEROptimizer` (``epochs``, ``temperature``, ``mu``, ``warmup_epochs``,
    ``num_classes``); ``base_kwargs`` (a dict), if given, adds base-optimizer arguments.
    """
    check_positive("lr", lr)
    base_kwargs = dict(options.pop("base_kwargs", None) or {})
    base_kwargs["lr"] = lr
    return FEROptimizer(
        params,
        base_optimizer,
        base_kwargs,
        fer_weight=fer_weight,
        consistency_threshold=consistency_threshold,
        memory_size=memory_size,
        **options,
    )
