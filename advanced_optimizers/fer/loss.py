"""FER's loss: self-distillation toward each sample's own earlier correct predictions.

Deng, Xiao, Long, Zhang, "Reducing Flipping Errors in Deep Neural Networks" (AAAI 2022), after the
official code (github.com/Xiang-Deng-DL/FER). :class:`FERLoss` works with any optimizer; provenance,
design choices and measurements: ``docs/algorithms/fer.md``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._distributed import all_gather_rows, is_distributed
from .._validation import (
    check_index_tensor,
    check_int,
    check_nonnegative,
    check_positive,
    check_probability,
)

__all__ = ["FERLoss", "fer_lambda"]


def fer_lambda(epoch: int, epochs: int, gamma: float) -> float:
    """The distillation weight ``λ_t = (t / E) · (1 − γ)`` of epoch ``t`` of ``E``."""
    return epoch / epochs * (1.0 - gamma)


class FERLoss(nn.Module):
    r"""FER's training loss, with the per-sample store it distils from.

    For every training sample :math:`i` (its dataset index) the store keeps :math:`S_i \in
    \mathbb{R}^C` (starts at 0) and a sticky flag :math:`F_i`. For a batch :math:`(z, y,
    \mathrm{idx})` at epoch :math:`t` of :math:`E` (1-based), with :math:`s, f` read before the
    update:

    .. math::
        \begin{aligned}
        &\lambda_t = \tfrac{t}{E}\,(1-\gamma), \qquad w_i = \lambda_t f_i
            \quad (w = 0 \text{ during the warm-up epochs}) \\
        &\mathcal{L} = \tfrac{1}{B}\textstyle\sum_i (1-w_i)\,\mathrm{CE}(z_i, y_i)
            + w_i\,T^2 H\big(s_i, \mathrm{softmax}(z_i/T)\big),
            \qquad H(s, q) = -\textstyle\sum_k s_k \log q_k \\
        &\text{then, from the detached logits, with } p_i = \mathrm{softmax}(z_i)_{y_i}: \\
        &\quad ok_i = [\arg\max z_i = y_i] \wedge [p_i \ge \tau], \qquad F_i \leftarrow F_i \vee ok_i \\
        &\quad S_i \leftarrow S_i + ok_i\,\alpha_i\,\big(\mathrm{softmax}(z_i/T) - S_i\big),
            \qquad \alpha_i = 1 - e^{-\mu p_i}
        \end{aligned}

    The store is filled from the last warm-up epoch on. Wrong predictions leave :math:`S_i` as it
    is, so an earlier good target keeps pulling a forgotten sample back.

    **When the store changes.** ``forward`` computes the store rows of its batch but does not write
    them: they are *pending* until :meth:`commit`. In a plain loop nothing needs doing: the next
    ``forward`` commits them first (the store then changes exactly as in the official code). With
    :meth:`attach` the optimizer's step commits them (and a skipped non-finite step discards them),
    so the store changes only for steps that were taken. Under ``torch.no_grad()`` (evaluation) the
    loss is computed but no row is pending.

    Args:
        num_samples: rows of the store; every index must lie in ``[0, num_samples)``.
        num_classes: columns; ``None`` allocates the store at the first batch, on its device.
        epochs: the total ``E`` (or give it to :meth:`set_epoch`).
        fer_weight: the paper's :math:`\gamma`, the weight cross-entropy keeps at the last epoch
            (1 = plain cross-entropy). Official default 0.1.
        consistency_threshold: :math:`\tau`, the confidence a correct prediction needs to enter
            the store; 0 is the official rule.
        temperature: :math:`T` (5). mu: :math:`\mu` (1.0). warmup_epochs: epochs of plain
            cross-entropy (1).
        device: where the store lives (it follows ``.to()`` like any buffer).
    """

    def __init__(
        self,
        num_samples: int,
        num_classes: int | None = None,
        epochs: int | None = None,
        *,
        fer_weight: float = 0.1,
        consistency_threshold: float = 0.9,
        temperature: float = 5.0,
        mu: float = 1.0,
        warmup_epochs: int = 1,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.num_samples = check_int("num_samples", num_samples, 1)
        if num_classes is not None:
            check_int("num_classes", num_classes, 2)
        self.fer_weight = check_probability("fer_weight", fer_weight)
        self.consistency_threshold = check_probability(
            "consistency_threshold", consistency_threshold
        )
        self.temperature = check_positive("temperature", temperature)
        self.mu = check_nonnegative("mu", mu)
        self.warmup_epochs = check_int("warmup_epochs", warmup_epochs, 0)
        self.epochs: int | None = None
        if epochs is not None:
            self.epochs = self._checked_epochs(epochs)
        self.epoch: int | None = None
        self.register_buffer(
            "soft_targets", torch.zeros(num_samples, num_classes or 0, device=device)
        )
        self.register_buffer(
            "ever_correct", torch.zeros(num_samples, dtype=torch.bool, device=device)
        )
        self.deferred = False  # True once attached: the optimizer's step commits
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._synced = True

    # -- schedule ---------------------------------------------------------------------------------
    def _checked_epochs(self, epochs: int) -> int:
        check_int("epochs", epochs, 1)
        if self.warmup_epochs >= epochs:
            raise ValueError(
                f"warmup_epochs={self.warmup_epochs} must be smaller than epochs={epochs}: FER "
                "would never switch on (it starts after the warm-up epochs)"
            )
        return epochs

    def set_epoch(self, epoch: int, epochs: int | None = None) -> None:
        """Declare the current (1-based) epoch ``t`` and optionally the total ``E``.

        Both are checked before either is set, so a refused call changes nothing.
        """
        total = self.epochs if epochs is None else self._checked_epochs(epochs)
        check_int("epoch", epoch, 1)
        if total is not None and epoch > total:
            raise ValueError(f"epoch must be in [1, epochs={total}], got {epoch}")
        self.epochs, self.epoch = total, epoch

    @property
    def active(self) -> bool:
        """True once warm-up is over: the loss includes the distillation term."""
        return self.epoch is not None and self.epoch > self.warmup_epochs

    @property
    def current_lambda(self) -> float:
        """``λ_t`` of the current epoch (0 during warm-up)."""
        if not self.active or self.epochs is None:
            return 0.0
        return fer_lambda(self.epoch, self.epochs, self.fer_weight)

    # -- the loss ---------------------------------------------------------------------------------
    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor
    ) -> torch.Tensor:
        """FER's batch loss; the batch's store rows become pending (see the class docstring).

        ``logits`` (B, C) float, ``targets`` (B,) class indices, ``indices`` (B,) dataset indices.
        """
        z, y, idx = self._prepare(logits, targets, indices)
        if not self.active:
            ce = -F.log_softmax(z, dim=1).gather(1, y.unsqueeze(1)).squeeze(1)
            self._remember(z, y, idx, ce, None, None, None)
            return ce.mean()
        s, f = self.soft_targets[idx], self.ever_correct[idx]
        w = f.to(z.dtype) * self.current_lambda
        loss, ce, q = _FERObjective.apply(z, y, s, w, self.temperature)
        self._remember(z, y, idx, ce, q, s, f)
        return loss

    def wrap_logits(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        indices: torch.Tensor,
        loss_scale: float = 1.0,
    ) -> torch.Tensor:
        r"""``logits`` unchanged in value, whose backward adds the gradient of FER's extra term.

        For trainers that own the loss (Lightning, Hugging Face): FER's loss is the batch's mean
        cross-entropy plus :math:`\tfrac1B\sum_i w_i\,(T^2 H(s_i, q_i) - \mathrm{CE}_i)`, whose
        gradient in the logits is closed-form,
        :math:`\tfrac{w_i}{B}\big(T(m_i q_i - s_i) - (p_i - e_{y_i})\big)` with
        :math:`m_i = \sum_k s_{ik}`. A mean cross-entropy computed on the returned logits therefore
        back-propagates exactly :class:`FERLoss`'s gradient; another loss gets FER's extra term
        added to it. ``loss_scale``: the factor the trainer applies to the loss before ``backward``
        (``1/accumulation_steps``, a ``GradScaler``'s scale), applied to the extra gradient too. The
        store rows become pending, as with :meth:`forward`.
        """
        z, y, idx = self._prepare(logits, targets, indices)
        training = torch.is_grad_enabled()
        with torch.no_grad():
            ce, log_q, s, f, w = self._terms(z, y, idx)
            q = None if log_q is None else log_q.exp()
            self._remember(z, y, idx, ce, q, s, f, training)
            if w is None or not logits.requires_grad:
                return logits
            t = self.temperature
            p = torch.softmax(z, dim=1)
            p.scatter_add_(1, y.unsqueeze(1), -torch.ones_like(ce).unsqueeze(1))  # p − e_y
            extra = t * (s.sum(dim=1, keepdim=True) * q - s) - p
            extra.mul_((w * (loss_scale / z.shape[0])).unsqueeze(1))
        return _AddGradient.apply(logits, extra)

    def _prepare(self, logits: Any, targets: Any, indices: Any) -> tuple[torch.Tensor, ...]:
        self._check_ready()
        self._check_batch(logits, targets, indices)
        if not self.deferred:
            self.commit()
        z = logits.float()
        self._allocate(z.shape[1], z.device)
        y, idx = targets.to(device=z.device, dtype=torch.long), indices.to(z.device, torch.long)
        return z, y, idx

    def _terms(self, z: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> tuple[Any, ...]:
        """Per-row CE, and once active log q_T, the store rows s, f and the weights w = λ_t f."""
        ce = -F.log_softmax(z, dim=1).gather(1, y.unsqueeze(1)).squeeze(1)
        if not self.active:
            return ce, None, None, None, None
        log_q = F.log_softmax(z / self.temperature, dim=1)
        s, f = self.soft_targets[idx], self.ever_correct[idx]
        return ce, log_q, s, f, f.to(z.dtype) * self.current_lambda

    def _remember(self, z, y, idx, ce, q, s, f, training: bool | None = None) -> None:
        """Make the batch's store rows pending (from the last warm-up epoch on, when training)."""
        training = torch.is_grad_enabled() if training is None else training
        if training and self.epoch >= self.warmup_epochs:
            self._pending.append(self._store_rows(z.detach(), y, idx, ce, q, s, f))
            self._synced = False

    @torch.no_grad()
    def _store_rows(self, z, y, idx, ce, q, old, flags) -> tuple[torch.Tensor, ...]:
        """(idx, new S rows, new F rows); non-finite logits give NaN ``p`` and never qualify.

        ``q`` = softmax(z/T) and the rows ``old``, ``flags`` when the loss already has them.
        """
        p_true = torch.exp(-ce.detach())
        ok = (z.argmax(dim=1) == y) & (p_true >= self.consistency_threshold)
        alpha = torch.expm1(p_true * -self.mu).neg_()  # 1 − exp(−μ p)
        if q is None:
            q = torch.softmax(z / self.temperature, dim=1)
            old, flags = self.soft_targets[idx], self.ever_correct[idx]
        new = torch.where(ok.unsqueeze(1), torch.lerp(old, q.detach(), alpha.unsqueeze(1)), old)
        return idx, new, flags | ok

    # -- the store --------------------------------------------------------------------------------
    def commit(self) -> None:
        """Write every pending store row (a no-op when nothing is pending)."""
        if not self._pending:
            return
        if not self._synced and is_distributed():
            self._pending_unsynced_warning()
        for idx, soft, flags in self._pending:
            self.soft_targets[idx] = soft
            self.ever_correct[idx] = flags
        self._pending = []
        self._synced = True

    def discard(self) -> None:
        """Drop the pending rows (their step was not taken)."""
        self._pending = []
        self._synced = True

    def attach(self, optimizer: torch.optim.Optimizer) -> Any:
        """Let ``optimizer``'s steps commit the pending rows; returns the hook's handle.

        A step the optimizer skipped (``last_step_skipped``, set by this library's optimizers)
        discards them instead. With ``torch.amp.GradScaler`` a step the scaler skips never calls
        ``optimizer.step()``; those rows are committed with the next step taken.
        """
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        self.deferred = True
        return optimizer.register_step_post_hook(self._after_optimizer_step)

    def _after_optimizer_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if getattr(optimizer, "last_step_skipped", False):
            self.discard()
        else:
            self.commit()

    def _pending_unsynced_warning(self) -> None:
        import warnings

        warnings.warn(
            "FERLoss under torch.distributed: call sync_distributed() after backward() and before "
            "step(), or each rank keeps only its own samples' store",
            RuntimeWarning,
            stacklevel=4,
        )

    def sync_distributed(self, group: Any = None) -> None:
        """Give every rank the pending rows of every other rank (no-op in one process).

        Under data parallelism each rank computes the loss of its own shard. Call this once per
        step, after ``backward`` and before ``step``: the pending rows are all-gathered, so every
        rank commits the store a single process would hold after the global batch.
        """
        if not is_distributed(group):
            self._synced = True
            return
        rows = torch.cat(
            [
                torch.cat([i.double().unsqueeze(1), f.double().unsqueeze(1), s.double()], dim=1)
                for i, s, f in self._pending
            ]
            or [self.soft_targets.new_zeros(0, self.soft_targets.shape[1] + 2).double()]
        )
        self._pending = [
            (b[:, 0].long(), b[:, 2:].to(self.soft_targets.dtype), b[:, 1] > 0.5)
            for b in all_gather_rows(rows, group)
            if b.shape[0]
        ]
        self._synced = True

    def summary(self) -> dict[str, float]:
        """Fraction of flagged samples, mean target mass of the flagged ones, and ``λ_t``."""
        flagged = self.ever_correct
        count = int(flagged.sum())
        mass = float(self.soft_targets[flagged].sum(dim=1).mean()) if count else 0.0
        return {
            "fer_flagged": count / self.num_samples,
            "fer_target_mass": mass,
            "fer_lambda": self.current_lambda,
        }

    # -- checks and state -------------------------------------------------------------------------
    def _check_ready(self) -> None:
        if self.epoch is None:
            raise RuntimeError(
                "FER: the epoch is unknown; call set_epoch(epoch) at the start of every epoch "
                "(1-based)"
            )
        if self.epochs is None:
            raise RuntimeError(
                "FER: the total number of epochs is unknown; pass epochs= or call "
                "set_epoch(epoch, epochs)"
            )

    def _allocate(self, num_classes: int, device: torch.device) -> None:
        if self.soft_targets.shape[1] == 0:
            self.soft_targets = torch.zeros(self.num_samples, num_classes, device=device)
            self.ever_correct = self.ever_correct.to(device)  # no host read (works on meta too)
        if self.soft_targets.device != device:
            raise ValueError(
                f"logits are on {device} but FER's store is on {self.soft_targets.device}; move "
                f"the loss module with .to({str(device)!r})"
            )

    def _check_batch(self, logits: Any, targets: Any, indices: Any) -> None:
        if not isinstance(logits, torch.Tensor):
            raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
        if logits.ndim != 2 or not logits.is_floating_point():
            raise ValueError(
                f"logits must be a float tensor of shape (batch, classes), got {logits.dtype} "
                f"{tuple(logits.shape)}"
            )
        batch, classes = logits.shape
        if batch == 0:
            raise ValueError("logits must hold at least one sample, got an empty batch")
        if self.soft_targets.shape[1] and classes != self.soft_targets.shape[1]:
            raise ValueError(
                f"logits must have {self.soft_targets.shape[1]} classes (the store's), got {classes}"
            )
        check_index_tensor("targets", targets, classes, f" (the logits have {classes} classes)")
        check_index_tensor(
            "indices",
            indices,
            self.num_samples,
            "; set num_samples (memory_size) to the "
            "training-set size and pass each sample's dataset index",
        )
        for name, value in (("targets", targets), ("indices", indices)):
            if value.shape != (batch,):
                raise ValueError(
                    f"{name} must have shape ({batch},) to match logits, got {tuple(value.shape)}"
                )

    def get_extra_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "epochs": self.epochs, "num_samples": self.num_samples}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.epoch, self.epochs = state["epoch"], state["epochs"]
        self._pending = []

    def _load_from_state_dict(self, state_dict, prefix, *args: Any) -> None:  # type: ignore[override]
        errors = args[-1]
        problem = self.check_state(state_dict, prefix)
        if problem:
            errors.append(problem)
            return
        key = prefix + "soft_targets"
        if key in state_dict and self.soft_targets.shape != state_dict[key].shape:
            self.soft_targets = torch.zeros_like(state_dict[key], device=self.soft_targets.device)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def check_state(self, state_dict: dict[str, Any], prefix: str = "") -> str | None:
        """Why ``state_dict`` cannot be loaded into this store, or ``None`` when it can."""
        soft = state_dict.get(prefix + "soft_targets")
        if not isinstance(soft, torch.Tensor) or soft.dim() != 2:
            return f"FER state lacks a (num_samples, num_classes) {prefix}soft_targets tensor"
        if soft.shape[0] != self.num_samples:
            return (
                f"FER state was saved for num_samples (memory_size)={soft.shape[0]}, this store "
                f"holds {self.num_samples}"
            )
        classes = self.soft_targets.shape[1]
        if soft.shape[1] and classes and soft.shape[1] != classes:
            return f"FER state was saved for {soft.shape[1]} classes, this store has {classes}"
        return None

    def extra_repr(self) -> str:
        return (
            f"num_samples={self.num_samples}, num_classes={self.soft_targets.shape[1] or None}, "
            f"fer_weight={self.fer_weight}, consistency_threshold={self.consistency_threshold}, "
            f"temperature={self.temperature}, mu={self.mu}, warmup_epochs={self.warmup_epochs}, "
            f"epoch={self.epoch}/{self.epochs}"
        )


class _FERObjective(torch.autograd.Function):
    """FER's loss once active, in one pass with its closed-form gradient in the logits.

    ``(loss, ce, q)`` with ``q = softmax(z/T)``; the gradient
    ``[(1 − w)(p − e_y) + wT(m q − s)] / B`` (``m`` = the rows' mass) is formed in the forward
    pass, so the backward is one multiplication (fewer small kernels than autograd's graph).
    """

    @staticmethod
    def forward(ctx: Any, z, y, s, w, temperature: float):  # type: ignore[override]
        batch = z.shape[0]
        log_p = torch.log_softmax(z, dim=1)
        log_q = torch.log_softmax(z / temperature, dim=1)
        ce = -log_p.gather(1, y.unsqueeze(1)).squeeze(1)
        q = log_q.exp()
        soft = (s * log_q).sum(dim=1)
        loss = (ce.sum() - torch.dot(w, ce) - temperature**2 * torch.dot(w, soft)) / batch
        if ctx.needs_input_grad[0]:
            grad = torch.addcmul(-s, s.sum(dim=1, keepdim=True), q)
            grad.mul_((w * temperature).unsqueeze(1))
            p = log_p.exp_()
            p.scatter_add_(1, y.unsqueeze(1), -torch.ones_like(ce).unsqueeze(1))  # p − e_y
            grad.addcmul_(p, (1 - w).unsqueeze(1)).div_(batch)
            ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(ce, q)
        return loss, ce, q

    @staticmethod
    def backward(ctx: Any, grad_loss, *_):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad * grad_loss.to(grad.dtype), None, None, None, None


class _AddGradient(torch.autograd.Function):
    """Identity in the forward pass; adds a fixed tensor to the incoming gradient."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(extra)
        return logits.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (extra,) = ctx.saved_tensors
        return grad + extra.to(grad.dtype), None
