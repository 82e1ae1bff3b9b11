"""The table the contract suite is generated from: one entry per algorithm and base optimizer.

Like ``torch/testing/_internal/common_optimizers.py``, each entry says how to build a small model and
its optimizer, how to compute a batch's loss, which hyperparameters must be rejected, and what it
supports; ``test_contract.py`` generates the same checks for every entry.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IN_SHAPE = (1, 4, 4)
CLASSES = 3
BATCH = 12


def tiny_mlp(dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """Flatten → 16-8-8-3 MLP (three Linear layers, so layer-wise methods have layers to split)."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, CLASSES)
    ).to(dtype)


def batches(n: int, dtype: torch.dtype = torch.float32, seed: int = 0):
    """``n`` fixed batches (x, y, index) of a learnable toy problem; indices cover 0..n*BATCH-1."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        y = torch.randint(0, CLASSES, (BATCH,), generator=g)
        x = torch.randn(BATCH, *IN_SHAPE, generator=g)
        x[:, 0, 0, :] += 2.0 * y[:, None]
        out.append((x.to(dtype), y, torch.arange(i * BATCH, (i + 1) * BATCH)))
    return out


def ce_loss(model: nn.Module, optimizer: Any, x, y, index, epoch: int) -> torch.Tensor:
    return F.cross_entropy(model(x).float(), y)


@dataclass
class Entry:
    """How to exercise one optimizer.

    ``build(dtype)`` returns a fresh (model, optimizer) from a fixed seed; ``loss`` computes a batch's
    loss (algorithm-specific losses live here); ``end_epoch`` is the optimizer's epoch hook, if any
    (called every ``steps_per_epoch`` steps); ``invalid`` lists constructor calls that must raise,
    as (call, exception type, words the message must contain); ``nonfinite`` is the documented policy
    for a non-finite gradient: "skip" (warn, change nothing) or "raise".
    """

    name: str
    build: Callable[[torch.dtype], tuple[nn.Module, torch.optim.Optimizer]]
    loss: Callable[..., torch.Tensor] = ce_loss
    end_epoch: Callable[[nn.Module, Any, float], None] | None = None
    invalid: list[tuple[Callable[[], Any], type[Exception], str]] = field(default_factory=list)
    nonfinite: str | None = None
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64, torch.bfloat16)
    steps_per_epoch: int = 2
    # the quantity that must fall with training, if ``loss`` also holds model-independent terms
    progress: Callable[..., torch.Tensor] = ce_loss

    def __repr__(self) -> str:
        return self.name


def _seeded(fn: Callable[[torch.dtype], tuple[nn.Module, torch.optim.Optimizer]]):
    def build(dtype: torch.dtype = torch.float32):
        torch.manual_seed(0)
        return fn(dtype)

    return build


def _torch_entry(name: str, cls: type, **kwargs: Any) -> Entry:
    shared = torch.nn.Parameter(torch.zeros(2))

    def build(dtype):
        model = tiny_mlp(dtype)
        return model, cls(model.parameters(), **kwargs)

    return Entry(
        name,
        _seeded(build),
        invalid=[
            (
                lambda: cls([torch.zeros(1, requires_grad=True)], lr=-1.0),
                ValueError,
                "learning rate",
            ),
            (lambda: cls([], lr=0.1), ValueError, "empty parameter list"),
            (
                lambda: cls([{"params": [shared]}, {"params": [shared]}], lr=0.1),
                ValueError,
                "more than one parameter group",
            ),
        ],
    )


NAN = math.nan

ENTRIES: list[Entry] = [
    _torch_entry("torch-sgd", torch.optim.SGD, lr=0.1, momentum=0.9),
    _torch_entry("torch-adam", torch.optim.Adam, lr=1e-2),
]


def _gc_entry(base: type, **kwargs: Any) -> Entry:
    from advanced_optimizers.gradient_correction import create_gradient_correction_optimizer

    def build(dtype):
        model = tiny_mlp(dtype)
        return model, create_gradient_correction_optimizer(
            model.parameters(), base_optimizer=base, gcw_strength=0.5, meta_lr=1e-2, **kwargs
        )

    def make(**kw):
        return create_gradient_correction_optimizer(tiny_mlp().parameters(), **kw)

    return Entry(
        f"gc-{base.__name__.lower()}",
        _seeded(build),
        nonfinite="skip",
        invalid=[
            (lambda: make(gcw_strength=-1), ValueError, "gcw_strength"),
            (lambda: make(use_gcw=False, use_gcode=False), ValueError, "both False"),
            (lambda: make(device="meta"), ValueError, "device"),
            (lambda: create_gradient_correction_optimizer([]), ValueError, "empty"),
        ],
    )


def _local_entry(mode: str) -> Entry:
    from advanced_optimizers.localized import create_localized_optimizer

    def build(dtype):
        model = tiny_mlp(dtype)
        return model, create_localized_optimizer(
            model,
            lr=0.1,
            hebbian_lr=1e-2,
            selection_mode=mode,
            warmup_epochs=1,
            settle_ratio=0.9,
            base_kwargs={"momentum": 0.9},
        )

    def observe(model, optimizer, x, y, index, epoch):
        loss = ce_loss(model, optimizer, x, y, index, epoch)
        optimizer.observe_loss(loss.detach())
        return loss

    return Entry(
        f"localized-{mode}",
        _seeded(build),
        loss=observe,
        end_epoch=lambda model, optimizer, loss: optimizer.end_epoch(loss),
        nonfinite="skip",
        invalid=[
            (
                lambda: create_localized_optimizer(tiny_mlp(), selection_mode="magic"),
                ValueError,
                "selection_mode",
            ),
            (
                lambda: create_localized_optimizer(tiny_mlp(), hebbian_lr=-1.0),
                ValueError,
                "hebbian_lr",
            ),
            (
                lambda: create_localized_optimizer(
                    tiny_mlp(), weak_supervision_weight=float("nan")
                ),
                ValueError,
                "weak_supervision_weight",
            ),
            (lambda: create_localized_optimizer("not a model"), TypeError, "model"),
        ],
    )


def _freezeout_entry() -> Entry:
    """FreezeOut (LoCal's baseline): layers freeze within the contract's short runs (12 steps)."""
    from advanced_optimizers.localized import create_freezeout_optimizer

    def build(dtype):
        model = tiny_mlp(dtype)
        return model, create_freezeout_optimizer(
            model, lr=0.1, total_steps=12, t_0=0.3, spacing="linear", base_kwargs={"momentum": 0.9}
        )

    def observe(model, optimizer, x, y, index, epoch):
        loss = ce_loss(model, optimizer, x, y, index, epoch)
        optimizer.observe_loss(loss.detach())
        return loss

    return Entry(
        "localized-freezeout",
        _seeded(build),
        loss=observe,
        end_epoch=lambda model, optimizer, loss: optimizer.end_epoch(loss),
        nonfinite="skip",
        invalid=[
            (
                lambda: create_freezeout_optimizer(tiny_mlp(), total_steps=None),
                ValueError,
                "total_steps",
            ),
            (
                lambda: create_freezeout_optimizer(tiny_mlp(), total_steps=10, t_0=0.0),
                ValueError,
                "t_0",
            ),
            (
                lambda: create_freezeout_optimizer(tiny_mlp(), total_steps=10, spacing="square"),
                ValueError,
                "spacing",
            ),
            (lambda: create_freezeout_optimizer("not a model", total_steps=10), TypeError, "model"),
        ],
    )


def _fer_entry(base: type, **kwargs: Any) -> Entry:
    from advanced_optimizers.fer import FEROptimizer

    def build(dtype):
        model = tiny_mlp(dtype)
        return model, FEROptimizer(
            model.parameters(),
            base,
            kwargs,
            memory_size=6 * BATCH,
            epochs=4,
            consistency_threshold=0.5,
        )

    def fer_loss(model, optimizer, x, y, index, epoch):
        optimizer.set_epoch(min(epoch, 4))
        return optimizer.fer_loss(model(x).float(), y, index)

    def make(**kw):
        return FEROptimizer(tiny_mlp().parameters(), base, {"lr": 0.1}, **kw)

    return Entry(
        f"fer-{base.__name__.lower()}",
        _seeded(build),
        loss=fer_loss,
        nonfinite="skip",
        invalid=[
            (
                lambda: FEROptimizer(tiny_mlp().parameters(), base, {"lr": -1.0}),
                ValueError,
                "learning rate",
            ),
            (lambda: make(fer_weight=-1.0), ValueError, "fer_weight"),
            (lambda: make(memory_size=0), ValueError, "memory_size"),
            (lambda: make(consistency_threshold=2.0), ValueError, "consistency_threshold"),
            (lambda: FEROptimizer([], base, {"lr": 0.1}), ValueError, "empty"),
        ],
    )


def _sigprop_entry(loss_name: str) -> Entry:
    from advanced_optimizers.sigprop import SigPropNet, create_sigprop_optimizer

    def build(dtype):
        model = SigPropNet(16, [8, 8], CLASSES, loss=loss_name).to(dtype)
        return model, create_sigprop_optimizer(model, lr=1e-2, signal_lr=1e-3)

    def local(model, optimizer, x, y, index, epoch):
        return model.training_loss(x.flatten(1), y)

    return Entry(
        f"sigprop-{loss_name}",
        _seeded(build),
        loss=local,
        nonfinite="skip",
        invalid=[
            (lambda: create_sigprop_optimizer(SigPropNet(16, [8], 3), lr=-1.0), ValueError, "lr"),
            (
                lambda: create_sigprop_optimizer(SigPropNet(16, [8], 3), signal_lr=float("nan")),
                ValueError,
                "signal_lr",
            ),
            (lambda: create_sigprop_optimizer(tiny_mlp()), TypeError, "SigPropNet"),
            (lambda: SigPropNet(16, [8], 3, loss="magic"), ValueError, "loss"),
        ],
    )


ENTRIES += [
    _sigprop_entry("v14"),
    _sigprop_entry("topk"),
    _fer_entry(torch.optim.Adam, lr=1e-2),
    _fer_entry(torch.optim.SGD, lr=0.1, momentum=0.9),
    _gc_entry(torch.optim.Adam, lr=1e-2),
    _gc_entry(torch.optim.SGD, lr=0.1, momentum=0.9),
    _local_entry("static"),
    _local_entry("dynamic"),
    _freezeout_entry(),
]


def _mup_entry(optimizer: str, **hyper: Any) -> Entry:
    """μP on the tiny MLP read as width 8 of a proxy tuned at width 4 (multiplier 2)."""
    from advanced_optimizers.mup import create_mu_transfer_optimizer

    def make(model: nn.Module, **kw: Any) -> torch.optim.Optimizer:
        options = {"base_hyperparams": hyper, "optimizer": optimizer} | kw
        return create_mu_transfer_optimizer(model, {"width": 4}, {"width": 8}, **options)

    def build(dtype):  # the guard is opt-in for μP (its default is torch's "ignore")
        model = tiny_mlp(dtype)
        return model, make(model, nonfinite="skip")

    return Entry(
        f"mup-{optimizer}",
        _seeded(build),
        nonfinite="skip",
        invalid=[
            (lambda: make(tiny_mlp(), base_hyperparams={"lr": -1.0}), ValueError, "lr"),
            (lambda: make(tiny_mlp(), base_hyperparams={}), ValueError, "lr"),
            (lambda: make(tiny_mlp(), optimizer="lamb"), ValueError, "optimizer"),
            (lambda: make(tiny_mlp(), parametrization="ntk"), ValueError, "parametrization"),
            (lambda: make(tiny_mlp(), depth_alpha=2.0), ValueError, "depth_alpha"),
            (lambda: make(tiny_mlp(), nonfinite="zero"), ValueError, "nonfinite"),
            (lambda: make(tiny_mlp(), lr_ratio_check="maybe"), ValueError, "lr_ratio_check"),
        ],
    )


ENTRIES += [
    _mup_entry("adamw", lr=1e-2, weight_decay=0.01),
    _mup_entry("sgd", lr=0.1, momentum=0.9),
]
