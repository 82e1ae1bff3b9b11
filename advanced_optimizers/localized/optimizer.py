"""Selective Localized Learning (LoCal+SGD): Hebbian early layers, SGD late layers, a real speed-up.

Krithivasan, Sen, Venkataramani, Raghunathan, "Accelerating DNN Training through Selective Localized
Learning" (ICLR 2021 submission; Frontiers in Neuroscience 2022). Only the abstracts are public and
there is no official code. What the abstracts fix is implemented as stated; every other piece is a
design of this module, marked **[design]** below with its reason.

Fixed by the paper
------------------
* The parametrised layers ``L_0 … L_{n-1}`` (in execution order) are split each epoch by a transition
  layer ``T``: layers ``i < T`` learn with a localized (Hebbian) rule computed in the forward pass,
  layers ``i >= T`` with SGD (here: any ``torch.optim`` base optimizer). All layers start on SGD and,
  as epochs progress, layers move to localized learning (``T`` only grows).
* The speed and memory come from the localized layers needing no backward pass: their parameters get
  ``requires_grad_(False)`` for the epoch, so autograd stores none of their activations and computes
  neither their error GEMM nor their weight-gradient GEMM. The classifier always stays on SGD.
* Static selection moves ``T`` by a predefined function of the epoch; dynamic selection moves it by
  the trend of the transition layer's weight updates across epochs.
* Weak supervision: the localized learning rate is controlled by the overall training loss.

The localized rule **[design]**: Oja's subspace rule on unit filter directions
------------------------------------------------------------------------------------
For a layer with weight ``W`` (``m`` output units; a Conv2d filter is a row of length
``n = C_in·kh·kw``) let ``ŵ_j = w_j / ||w_j||`` be the unit directions and, for the rows ``x_r``
(``r = 1..N``) of its input (samples for Linear; every receptive-field patch of every sample for
Conv2d), ``ŷ_rj = ŵ_j · x_r`` the responses (read off the layer's own output: ``(out − b_j) /
||w_j||``, so no extra forward GEMM). The update direction is ::

    ΔŴ = ( Ŷᵀ X − (Ŷᵀ Ŷ) Ŵ ) / Σ_r ||x_r||²

and the step is ``ŵ_j ← normalise(ŵ_j + η ΔŵJ)``, ``w_j ← ||w_j|| ŵ_j``; biases are not changed.
Reasons: plain or normalised Hebb (``Δw_j ∝ y_j x``; Oja's single-unit rule is the same once norms are
fixed) drives every filter to the input's top principal component — the collapse to chance accuracy
seen in this project's first try. The ``(ŶᵀŶ)Ŵ`` term of Oja's subspace rule (Oja 1989) decorrelates
the units, so the fixed points are orthonormal bases of the principal subspace and no two filters can
merge. Keeping each row's norm leaves the scale learned by SGD (and so the next layer's input scale)
untouched: the rule only rotates filters. Dividing by ``Σ||x_r||²`` makes ``η`` a dimensionless
per-step rotation rate, the same for a 9-tap first conv and a 784-input Linear layer (the raw rule's
step grows with the input energy, which was ~100x larger in a second conv layer than in the first).
Cost: ``ŶᵀX`` is one GEMM, the size of the weight-gradient GEMM; ``(ŶᵀŶ)Ŵ`` is computed as
``Ŷᵀ(ŶŴ)`` or as ``(ŶᵀŶ)Ŵ``, whichever has fewer multiply-adds (``N·m·n`` vs ``N·m² + m²·n``).
**[design] subsampling**: the statistics are taken on the first ``ceil(hebbian_subsample · B)``
samples of each batch (batches are already shuffled, so this is a random subset that uses no RNG and
keeps resumes exact). For a Conv2d layer even a quarter batch gives thousands of patches; this is what
makes the localized layer cheaper than its backward pass also for an input layer, whose backward
is only the weight-gradient GEMM. **[design] interval**: with ``hebbian_interval = k`` the rule runs on
every k-th step only (steps counted from the start of training), cutting its cost by ``k``; each
update keeps the rate ``η`` (so the per-epoch Hebbian change shrinks by ``k`` as well). Measured on
the MNIST CNN, the rule's cost is dominated by per-call overheads (norms, the energy convolution),
not by the GEMM, so the interval saves more time than a smaller subsample. The update is computed
in a forward hook under ``no_grad``, accumulated like a gradient, applied by ``step()`` and dropped
by ``zero_grad()``. What accumulates are the two row sums, numerator ``ŶᵀX − (ŶᵀŶ)Ŵ`` and energy
``Σ_r ||x_r||²``; the direction is their ratio, so several forward passes in one step, or the
shards of several data-parallel ranks (:meth:`LocalizedOptimizer.sync_distributed`), pool their
rows exactly.

Weak supervision **[design]**
-----------------------------
The training loss of every step (from ``step(closure)`` or :meth:`LocalizedOptimizer.observe_loss`;
the harness plugin calls the latter) enters an exponential moving average ``ℓ̄_t = β ℓ̄_{t−1} +
(1−β) ℓ_t`` (``β = loss_ema_beta``); ``L* = min_k L_k`` is the best mean training loss of a completed
epoch (passed to :meth:`end_epoch`). The Hebbian rate is ::

    η_t = hebbian_lr · g_t,   g_t = clip(1 − (ℓ̄_t − L*) / (λ L*), 0, 1),   λ = weak_supervision_weight

While training is healthy the batch losses of an epoch lie below the previous epochs' means, so
``g = 1``; as the smoothed loss climbs above the best epoch mean the rate shrinks, and it stops once the
loss is a fraction ``λ`` (default 10 %) above it. A harmful rule therefore switches itself off within
tens of steps instead of after an epoch, and the rate returns when the loss recovers. (A running
minimum of the batch-loss average itself was tried first and rejected: its noise kept the gate shut
on healthy runs; the epoch mean is a stable reference.) ``λ = 0`` disables the guard (``g = 1``);
before the first epoch ends ``g = 1``. Without per-step losses the epoch mean is used for ``ℓ̄``.

Learning-mode selection **[design]**
------------------------------------
``end_epoch()`` records for every layer ``u_i(e) = ||W_i(e) − W_i(e−1)|| / ||W_i(e−1)||`` (the relative
weight change over the epoch) and then sets ``T`` for the next epoch. ``T`` never exceeds
``cap = min(max_transition, n − min_sgd_layers)`` and never moves during the first
``warmup_epochs`` epochs (all-SGD warm-up, as in the paper).

* ``static``: after ``c`` completed epochs, ``T(c) = min(cap, k·(⌊(c − warmup_epochs)/static_interval⌋
  + 1))`` for ``c >= warmup_epochs`` (else 0), ``k = static_step``: ``k`` more layers go localized
  every ``static_interval`` epochs.
* ``dynamic``: with ``u = u_T(c)`` the transition layer's last update and ``u⁺`` its largest update so
  far (``T`` has always been on SGD, so its whole history is gradient-driven), the layer has settled by
  one "notch" per factor ``1/ρ`` of shrinkage, and ``T`` moves by that many layers::

      shift = ⌊ log(u⁺ / u) / log(1/ρ) ⌋,   T ← min(cap, T + shift),   ρ = settle_ratio (0.5)

  So ``T`` stays while the transition layer's updates are still as large as they have been (an
  update that halved moves ``T`` by one layer, one that fell to a quarter by two) and moves once they
  settle. Updates shrink both as a layer converges and as a schedule lowers the learning rate; either
  means the layer's SGD updates matter less, which is the paper's premise for localizing it.

Non-finite policy: a step whose observed loss, any gradient or any pending Hebbian update is not
finite is skipped as a whole (no parameter, momentum or Hebbian change; the loss is not entered into
the average), counted in ``skipped_steps`` and reported with a ``RuntimeWarning``.
Limits: layers are taken in registration order, which
must be their execution order (true for ``nn.Sequential``); every module owning parameters must be
``nn.Linear`` or ``nn.Conv2d`` (``groups=1``, zero, numeric padding); a closure is evaluated once
(base optimizers that re-evaluate it, such as LBFGS, are not supported).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.grad import conv2d_weight

from .._distributed import all_reduce_sum, is_distributed
from .._finite import all_finite, grads_of
from .._validation import (
    check_choice,
    check_int,
    check_nonnegative,
    check_probability,
    check_range,
)

__all__ = [
    "LocalizedOptimizer",
    "create_localized_optimizer",
    "find_localizable_layers",
    "oja_subspace_direction",
    "oja_subspace_terms",
]

SELECTION_MODES = ("static", "dynamic")


# ------------------------------------------------------------------------------------------------
# Layers
# ------------------------------------------------------------------------------------------------
def find_localizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ``(name, module)`` of every parametrised layer, in registration (= execution) order.

    Raises ``ValueError`` naming the first module that owns parameters but is not a supported
    ``nn.Linear`` / ``nn.Conv2d`` (groups=1, zero numeric padding).
    """
    layers = []
    for name, module in model.named_modules():
        if not any(True for _ in module.parameters(recurse=False)):
            continue
        _check_supported(name, module)
        layers.append((name, module))
    if len(layers) < 2:
        raise ValueError(
            f"model must have at least 2 Linear/Conv2d layers to split (a localized part and the "
            f"SGD classifier), found {len(layers)}"
        )
    return layers


def _check_supported(name: str, module: nn.Module) -> None:
    label = f"layer {name!r} ({type(module).__name__})"
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            raise ValueError(
                f"{label}: groups must be 1 for localized learning, got {module.groups}"
            )
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise ValueError(
                f"{label}: padding must be numeric with padding_mode='zeros', got "
                f"padding={module.padding!r}, padding_mode={module.padding_mode!r}"
            )
    elif not isinstance(module, nn.Linear):
        raise ValueError(
            f"{label} owns parameters but localized learning supports only nn.Linear and "
            "nn.Conv2d layers (parameter-free layers such as ReLU, MaxPool2d, Flatten are fine)"
        )


# ------------------------------------------------------------------------------------------------
# The localized rule
# ------------------------------------------------------------------------------------------------
def oja_subspace_terms(
    layer: nn.Module, x: torch.Tensor, out: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Numerator ``ŶᵀX − (ŶᵀŶ)Ŵ`` (shape of ``layer.weight``) and energy ``Σ_r ||x_r||²`` (0-dim).

    Both are sums over the rows ``r``, so the terms of several shards (or forward passes) add up to
    the terms of their union; the direction is their ratio (:func:`oja_subspace_direction`).
    """
    weight = layer.weight
    norms = weight.flatten(1).norm(dim=1).clamp_min(torch.finfo(weight.dtype).tiny)
    unit = weight.flatten(1) / norms[:, None]
    if isinstance(layer, nn.Conv2d):
        numerator, energy = _conv_terms(layer, x, out, unit, norms)
        return numerator.view_as(weight), energy
    return _linear_terms(layer, x, out, unit, norms)


def oja_subspace_direction(layer: nn.Module, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``ΔŴ = (ŶᵀX − (ŶᵀŶ)Ŵ) / Σ_r ||x_r||²`` for ``layer`` given its input ``x`` and output ``out``.

    Returned in the shape of ``layer.weight``. ``Ŵ`` are the unit rows of the weight, ``ŷ = (out − b) /
    ||w||`` the responses of those unit rows; rows ``x_r`` are samples (Linear) or patches (Conv2d).
    """
    numerator, energy = oja_subspace_terms(layer, x, out)
    return numerator / energy.clamp_min(torch.finfo(numerator.dtype).tiny)


def _linear_terms(
    layer: nn.Linear, x: torch.Tensor, out: torch.Tensor, unit: torch.Tensor, norms: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    rows = x.reshape(-1, x.shape[-1])
    pre = out.reshape(-1, out.shape[-1])
    if layer.bias is not None:
        pre = pre - layer.bias
    responses = pre / norms
    n_rows, m = responses.shape
    n = rows.shape[1]
    if n_rows * m * n <= n_rows * m * m + m * m * n:  # Ŷᵀ(X − ŶŴ): reconstruction-error form
        update = responses.t() @ (rows - responses @ unit)
    else:  # ŶᵀX − (ŶᵀŶ)Ŵ: Gram form
        update = responses.t() @ rows - (responses.t() @ responses) @ unit
    return update, rows.pow(2).sum()


def _conv_terms(
    layer: nn.Conv2d, x: torch.Tensor, out: torch.Tensor, unit: torch.Tensor, norms: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    pre = out if layer.bias is None else out - layer.bias.view(1, -1, 1, 1)
    responses = pre / norms.view(1, -1, 1, 1)
    geometry = {"stride": layer.stride, "padding": layer.padding, "dilation": layer.dilation}
    hebb = conv2d_weight(x, layer.weight.shape, responses, **geometry).flatten(1)  # Σ_r ŷ_r x_rᵀ
    flat = responses.transpose(0, 1).reshape(responses.shape[1], -1)
    decay = (flat @ flat.t()) @ unit
    window = torch.ones(1, 1, *layer.kernel_size, dtype=x.dtype, device=x.device)
    energy = F.conv2d(x.pow(2).sum(1, keepdim=True), window, **geometry).sum()  # Σ_r ||x_r||²
    return hebb - decay, energy


def apply_direction_step(weight: torch.Tensor, direction: torch.Tensor, rate: float) -> None:
    """In place: ``ŵ ← normalise(ŵ + rate·Δŵ)`` row by row, keeping every row's norm ``||w||``."""
    flat = weight.view(weight.shape[0], -1)
    norms = flat.norm(dim=1, keepdim=True)
    unit = flat / norms.clamp_min(torch.finfo(weight.dtype).tiny)
    moved = unit + rate * direction.reshape_as(flat)
    moved = moved / moved.norm(dim=1, keepdim=True).clamp_min(torch.finfo(weight.dtype).tiny)
    flat.copy_(moved * norms)


# ------------------------------------------------------------------------------------------------
# The optimizer
# ------------------------------------------------------------------------------------------------
class LocalizedOptimizer(torch.optim.Optimizer):
    """LoCal+SGD around a base optimizer; see the module docstring for the math.

    ``param_groups`` and ``state`` *are* the base optimizer's (schedulers see and change its lr).
    Call :meth:`end_epoch` after every epoch: it records the epoch and moves the transition layer.
    ``transition`` is the current ``T``; ``modes`` names each layer's mode ('hebbian', 'frozen' —
    localized with a zero rate — or 'sgd').
    """

    def __init__(
        self,
        model: nn.Module,
        base: torch.optim.Optimizer,
        *,
        hebbian_lr: float = 1e-4,
        selection_mode: str = "dynamic",
        weak_supervision_weight: float = 0.1,
        settle_ratio: float = 0.5,
        static_interval: int = 1,
        static_step: int = 1,
        warmup_epochs: int = 1,
        max_transition: int | None = None,
        min_sgd_layers: int = 1,
        hebbian_subsample: float = 0.25,
        hebbian_interval: int = 1,
        loss_ema_beta: float = 0.98,
    ) -> None:
        if not isinstance(base, torch.optim.Optimizer):
            raise TypeError(f"base must be a torch.optim.Optimizer, got {type(base).__name__}")
        self.layers = find_localizable_layers(model)
        n_layers = len(self.layers)
        self.hebbian_lr = check_nonnegative("hebbian_lr", hebbian_lr)
        self.selection_mode = check_choice("selection_mode", selection_mode, SELECTION_MODES)
        self.weak_supervision_weight = check_nonnegative(
            "weak_supervision_weight", weak_supervision_weight
        )
        self.settle_ratio = check_range(
            "settle_ratio", settle_ratio, 0.0, 1.0, low_open=True, high_open=True
        )
        self.static_interval = check_int("static_interval", static_interval, 1)
        self.static_step = check_int("static_step", static_step, 1)
        self.warmup_epochs = check_int("warmup_epochs", warmup_epochs, 0)
        self.min_sgd_layers = check_int("min_sgd_layers", min_sgd_layers, 1)
        if self.min_sgd_layers > n_layers:
            raise ValueError(
                f"min_sgd_layers must be in [1, {n_layers}] (the model has {n_layers} layers), "
                f"got {min_sgd_layers}"
            )
        if max_transition is not None:
            check_int("max_transition", max_transition, 0)
        self.max_transition = max_transition
        self.hebbian_subsample = check_probability("hebbian_subsample", hebbian_subsample)
        if self.hebbian_subsample == 0.0:
            raise ValueError("hebbian_subsample must be in (0, 1], got 0.0")
        self.hebbian_interval = check_int("hebbian_interval", hebbian_interval, 1)
        self.loss_ema_beta = check_probability("loss_ema_beta", loss_ema_beta, open_high=True)

        self.base = base
        self._hook_handles = []
        super().__init__([p for g in base.param_groups for p in g["params"]], dict(base.defaults))
        self.param_groups = base.param_groups
        self.state = base.state
        self.defaults = base.defaults
        self._ready = True

        self.transition = 0
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.loss_ema: float | None = None
        self.loss_best: float | None = None
        self.gate = 1.0
        self.skipped_steps = 0
        self.hebbian_steps = 0
        self.steps = 0
        self._epoch_losses_seen = 0
        self._bad_loss = False
        self._pending: dict[int, list] = {}
        self._synced = False  # sync_distributed() called since the last step
        self._warned_unsynced = False
        self._snapshots = self._take_snapshots()
        self._set_requires_grad()
        self._hook_handles = [
            module.register_forward_hook(partial(self._forward_hook, index))
            for index, (_, module) in enumerate(self.layers)
        ]

    # -- read-only views ------------------------------------------------------------------------
    @property
    def cap(self) -> int:
        """The largest ``T`` ever used: ``min(max_transition, n_layers − min_sgd_layers)``."""
        cap = len(self.layers) - self.min_sgd_layers
        return cap if self.max_transition is None else min(cap, self.max_transition)

    @property
    def modes(self) -> list[str]:
        """Each layer's learning mode this epoch: 'hebbian', 'frozen' (rate 0) or 'sgd'."""
        local = "hebbian" if self.hebbian_lr > 0 else "frozen"
        return [local if i < self.transition else "sgd" for i in range(len(self.layers))]

    @property
    def layer_names(self) -> list[str]:
        return [name for name, _ in self.layers]

    @property
    def hebbian_rate(self) -> float:
        """The current localized rate ``η_t = hebbian_lr · g_t``."""
        return self.hebbian_lr * self.gate

    # -- transition control ---------------------------------------------------------------------
    def set_transition(self, transition: int) -> None:
        """Put layers ``< transition`` in localized mode and the rest on the base optimizer."""
        check_int("transition", transition, 0)
        if transition > self.cap:
            raise ValueError(f"transition must be in [0, {self.cap}] (the cap), got {transition}")
        self.transition = transition
        self._set_requires_grad()

    def _set_requires_grad(self) -> None:
        for index, (_, module) in enumerate(self.layers):
            sgd = index >= self.transition
            for p in module.parameters(recurse=False):
                p.requires_grad_(sgd)
                if not sgd:
                    p.grad = None
            if sgd:
                self._pending.pop(index, None)

    def _take_snapshots(self) -> list[torch.Tensor]:
        return [module.weight.detach().clone() for _, module in self.layers]

    def _relative_updates(self) -> list[float]:
        out = []
        for (_, module), before in zip(self.layers, self._snapshots, strict=True):
            scale = before.norm().item()
            change = (module.weight.detach() - before).norm().item()
            out.append(change / scale if scale > 0 else change)
        return out

    def next_transition(self) -> int:
        """``T`` for the next epoch from the recorded history (static or dynamic rule)."""
        completed = self.epoch
        if completed < self.warmup_epochs:
            return self.transition
        if self.selection_mode == "static":
            target = self.static_step * (
                (completed - self.warmup_epochs) // self.static_interval + 1
            )
            return max(self.transition, min(self.cap, target))
        if self.transition >= self.cap:
            return self.transition
        series = [h["update"][self.transition] for h in self.history]
        latest, peak = series[-1], max(series)
        if latest <= 0.0:
            return self.cap
        shift = math.floor(math.log(peak / latest) / math.log(1.0 / self.settle_ratio) + 1e-12)
        return min(self.cap, self.transition + max(0, shift))

    def end_epoch(self, train_loss: float | None = None) -> dict[str, float]:
        """Record the finished epoch, move ``T``; returns the numbers worth logging."""
        if train_loss is not None and math.isfinite(float(train_loss)):
            train_loss = float(train_loss)
            self.loss_best = (
                train_loss if self.loss_best is None else min(self.loss_best, train_loss)
            )
            if self._epoch_losses_seen == 0:
                self.loss_ema = train_loss
            self._update_gate()
        self.epoch += 1
        record = {
            "epoch": self.epoch,
            "transition": self.transition,
            "train_loss": math.nan if train_loss is None else float(train_loss),
            "gate": self.gate,
            "update": self._relative_updates(),
        }
        self.history.append(record)
        self._snapshots = self._take_snapshots()
        self._epoch_losses_seen = 0
        self.set_transition(self.next_transition())
        return {
            "transition": float(record["transition"]),
            "transition_next": float(self.transition),
            "hebbian_gate": self.gate,
            "transition_update": record["update"][min(record["transition"], len(self.layers) - 1)],
        }

    # -- weak supervision -----------------------------------------------------------------------
    def observe_loss(self, loss: float | torch.Tensor) -> None:
        """Feed this step's training loss to the weak-supervision gate (call before ``step``)."""
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        if not math.isfinite(value):
            self._bad_loss = True
            return
        beta = self.loss_ema_beta
        self.loss_ema = (
            value if self.loss_ema is None else beta * self.loss_ema + (1 - beta) * value
        )
        self._epoch_losses_seen += 1
        self._update_gate()

    def _update_gate(self) -> None:
        lam = self.weak_supervision_weight
        if lam == 0.0 or self.loss_best is None or self.loss_best <= 0.0 or self.loss_ema is None:
            self.gate = 1.0
            return
        rise = (self.loss_ema - self.loss_best) / (lam * self.loss_best)
        self.gate = min(1.0, max(0.0, 1.0 - rise))

    # -- the forward-pass rule ------------------------------------------------------------------
    def _forward_hook(
        self, index: int, module: nn.Module, args: tuple, output: torch.Tensor
    ) -> None:
        if (
            index >= self.transition
            or not module.training
            or self.hebbian_rate == 0.0
            or self.steps % self.hebbian_interval
        ):
            return
        x = args[0]
        keep = max(1, math.ceil(self.hebbian_subsample * x.shape[0]))
        with torch.no_grad():
            numerator, energy = oja_subspace_terms(
                module, x[:keep].detach(), output[:keep].detach()
            )
        pending = self._pending.get(index)
        if pending is None:
            self._pending[index] = [numerator, energy]
        else:  # several forward passes in one step: pool their rows
            pending[0].add_(numerator)
            pending[1].add_(energy)

    # -- Optimizer contract ---------------------------------------------------------------------
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Apply the pending Hebbian updates and one base-optimizer step; returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
            self.observe_loss(loss)
        if self._pending and not self._synced and is_distributed() and not self._warned_unsynced:
            self._warned_unsynced = True
            warnings.warn(
                "LocalizedOptimizer under torch.distributed: call optimizer.sync_distributed() after "
                "backward() and before step(), or each rank applies its own shard's Hebbian update "
                "and the ranks' weights drift apart",
                RuntimeWarning,
                stacklevel=2,
            )
        if self._bad_loss or not self._all_finite():
            self.skipped_steps += 1
            warnings.warn(
                "LocalizedOptimizer: non-finite loss, gradient or Hebbian update; step skipped "
                f"(parameters and state unchanged, {self.skipped_steps} skipped so far)",
                RuntimeWarning,
                stacklevel=2,
            )
        else:
            self._apply_hebbian()
            self.base.step()
        self._bad_loss = False
        self._synced = False
        self._pending.clear()
        self.steps += 1
        return loss

    def _all_finite(self) -> bool:
        pending = [term for terms in self._pending.values() for term in terms]
        return all_finite(grads_of(self) + pending)

    @torch.no_grad()
    def _apply_hebbian(self) -> None:
        rate = self.hebbian_rate
        if rate == 0.0 or not self._pending:
            return
        for index, (numerator, energy) in self._pending.items():
            direction = numerator / energy.clamp_min(torch.finfo(numerator.dtype).tiny)
            apply_direction_step(self.layers[index][1].weight, direction, rate)
        self.hebbian_steps += 1

    # -- data parallelism -----------------------------------------------------------------------
    def sync_distributed(self, group: Any = None) -> None:
        """Make this step's Hebbian update and gate those of the global batch (no-op in one process).

        Call after ``backward()`` (gradients averaged, e.g. by DDP) and before :meth:`step`. The
        pending Oja terms are sums over rows, so summing them over ranks gives the update of the
        union of the ranks' rows; the loss EMA is averaged (equal to the EMA of the global-batch mean
        loss when every rank observed its equal-sized shard's mean); a non-finite loss anywhere skips
        the step everywhere. Transition decisions then agree, since they read only the (identical)
        weights and this history.
        """
        if not is_distributed(group):
            return
        self._synced = True
        all_reduce_sum([term for i in sorted(self._pending) for term in self._pending[i]], group)
        ema = 0.0 if self.loss_ema is None else self.loss_ema
        stats = torch.tensor([ema, float(self._bad_loss)], dtype=torch.float64)
        all_reduce_sum([stats], group)
        if self.loss_ema is not None:
            self.loss_ema = stats[0].item() / dist.get_world_size(group)
        self._bad_loss = stats[1].item() > 0
        self._update_gate()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)
        self._pending.clear()

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not getattr(self, "_ready", False):
            super().add_param_group(param_group)  # called by Optimizer.__init__ on a scratch list
        else:
            self.base.add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:
        return {
            "base": self.base.state_dict(),
            "localized": {
                "transition": self.transition,
                "epoch": self.epoch,
                "history": [dict(h, update=list(h["update"])) for h in self.history],
                "loss_ema": self.loss_ema,
                "loss_best": self.loss_best,
                "gate": self.gate,
                "skipped_steps": self.skipped_steps,
                "hebbian_steps": self.hebbian_steps,
                "steps": self.steps,
                "epoch_losses_seen": self._epoch_losses_seen,
                "snapshots": [s.clone() for s in self._snapshots],
                "layer_names": self.layer_names,
            },
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        local = state_dict["localized"]
        if list(local["layer_names"]) != self.layer_names:
            raise ValueError(
                f"state_dict was saved for layers {local['layer_names']}, this optimizer has "
                f"{self.layer_names}"
            )
        self.base.load_state_dict(state_dict["base"])
        self.param_groups = self.base.param_groups
        self.state = self.base.state
        self.epoch = int(local["epoch"])
        self.history = [dict(h, update=list(h["update"])) for h in local["history"]]
        self.loss_ema = local["loss_ema"]
        self.loss_best = local["loss_best"]
        self.gate = float(local["gate"])
        self.skipped_steps = int(local["skipped_steps"])
        self.hebbian_steps = int(local["hebbian_steps"])
        self.steps = int(local["steps"])
        self._epoch_losses_seen = int(local["epoch_losses_seen"])
        self._snapshots = [s.detach().clone() for s in local["snapshots"]]
        self._pending.clear()
        self.transition = int(local["transition"])
        self._set_requires_grad()

    def remove_hooks(self) -> None:
        """Detach the forward hooks from the model (the optimizer stops computing Hebbian updates)."""
        for handle in self._hook_handles:
            handle.remove()
        self._hook_handles = []

    def __repr__(self) -> str:
        layers = ", ".join(f"{n}:{m}" for n, m in zip(self.layer_names, self.modes, strict=True))
        return (
            f"LocalizedOptimizer(T={self.transition}/cap {self.cap}, mode={self.selection_mode!r}, "
            f"hebbian_lr={self.hebbian_lr}, gate={self.gate:.3f}, layers=[{layers}], "
            f"base={type(self.base).__name__}(lr={self.param_groups[0]['lr']}))"
        )

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def create_localized_optimizer(
    model: nn.Module,
    lr: float = 1e-3,
    hebbian_lr: float = 1e-4,
    selection_mode: str = "dynamic",
    weak_supervision_weight: float = 0.1,
    base_optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.SGD,
    *,
    base_kwargs: dict[str, Any] | None = None,
    params: Iterable[nn.Parameter] | None = None,
    **options: Any,
) -> LocalizedOptimizer:
    """LoCal+SGD for ``model``: ``base_optimizer(params, lr=lr, **base_kwargs)`` on the SGD part.

    ``options``: ``settle_ratio`` (0.5), ``static_interval`` (1), ``static_step`` (1),
    ``warmup_epochs`` (1),
    ``max_transition`` (None), ``min_sgd_layers`` (1), ``hebbian_subsample`` (0.25),
    ``hebbian_interval`` (1),
    ``loss_ema_beta`` (0.98); see :class:`LocalizedOptimizer`. Call ``optimizer.end_epoch(loss)``
    after every epoch.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not callable(base_optimizer):
        raise TypeError(f"base_optimizer must be an optimizer class, got {base_optimizer!r}")
    check_nonnegative("lr", lr)
    params = list(model.parameters()) if params is None else list(params)
    base = base_optimizer(params, lr=lr, **(base_kwargs or {}))
    return LocalizedOptimizer(
        model,
        base,
        hebbian_lr=hebbian_lr,
        selection_mode=selection_mode,
        weak_supervision_weight=weak_supervision_weight,
        **options,
    )
