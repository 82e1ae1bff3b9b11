"""Misuse from the reliability issue: each row is a wrong call and the error it must get.

A row builds what the misuse needs (``setup``), makes the wrong call (``misuse``) and expects the
exception type and words; ``after`` then checks that the refusal changed nothing it should not have
(the epoch count, the base optimizer's state, ...). Errors name the argument, the value and what is
allowed, at construction or load time rather than at some later step.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advanced_optimizers.fer import FEROptimizer, create_fer_optimizer
from advanced_optimizers.gradient_correction import create_gradient_correction_optimizer
from advanced_optimizers.localized import create_localized_optimizer
from advanced_optimizers.sigprop import SigPropNet, create_sigprop_optimizer

CLASSES = 3


def mlp(width: int = 8, classes: int = CLASSES) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
        nn.Linear(width, classes),
    )  # fmt: skip


def batch(n: int = 12, seed: int = 0, classes: int = CLASSES):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.randn(n, 16, generator=g)
    x[:, 0] += 2.0 * y
    return x, y, torch.arange(n)


def fer(model: nn.Module | None = None, **kwargs: Any) -> FEROptimizer:
    model = model or mlp()
    kwargs.setdefault("memory_size", 12)
    kwargs.setdefault("epochs", 4)
    kwargs.setdefault("consistency_threshold", 0.0)
    return FEROptimizer(model.parameters(), torch.optim.Adam, {"lr": 1e-2}, **kwargs)


def trained_fer(width: int = 8, classes: int = CLASSES, **kwargs: Any) -> FEROptimizer:
    model = mlp(width, classes)
    opt = fer(model, **kwargs)
    for epoch in (1, 2):
        opt.set_epoch(epoch)
        x, y, index = batch(classes=classes)
        opt.zero_grad()
        opt.fer_loss(model(x), y, index).backward()
        opt.step()
    return opt


def trained_gc(width: int = 8, seed: int = 0, steps: int = 4):
    model = mlp(width)
    opt = create_gradient_correction_optimizer(model.parameters(), lr=1e-2, meta_lr=1e-2)
    for step in range(steps):
        x, y, _ = batch(seed=seed + step)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return opt


def trained_localized(width: int = 8):
    model = mlp(width)
    opt = create_localized_optimizer(model, lr=0.1, selection_mode="static", warmup_epochs=0)
    for _ in range(2):
        x, y, _ = batch()
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        opt.observe_loss(loss.detach())
        loss.backward()
        opt.step()
    opt.end_epoch(1.0)
    return opt


def trained_sigprop(width: int = 8):
    torch.manual_seed(0)
    model = SigPropNet(16, [width], CLASSES)
    opt = create_sigprop_optimizer(model)
    x, y, _ = batch()
    opt.zero_grad()
    model.training_loss(x, y).backward()
    opt.step()
    return opt


def state_copy(opt: torch.optim.Optimizer) -> dict:
    return copy.deepcopy(opt.state_dict())


def assert_same(a: Any, b: Any, where: str = "state") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


class Tied(nn.Module):
    """Two Linear layers sharing one weight (tied weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)
        self.b.weight = self.a.weight
        self.inp = nn.Linear(16, 8)
        self.out = nn.Linear(8, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.b(self.a(self.inp(x))))


class Reordered(nn.Module):
    """Layers registered output-first but run input-first."""

    def __init__(self) -> None:
        super().__init__()
        self.out = nn.Linear(8, CLASSES)
        self.inp = nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.inp(x)))


def reused_linear() -> nn.Sequential:
    shared = nn.Linear(8, 8)
    return nn.Sequential(nn.Linear(16, 8), shared, nn.ReLU(), shared, nn.Linear(8, CLASSES))


@dataclass
class Misuse:
    name: str
    setup: Callable[[], Any]
    misuse: Callable[[Any], Any]
    exc: type[BaseException] | tuple[type[BaseException], ...]
    words: str
    after: Callable[[Any], None] | None = None

    def __repr__(self) -> str:
        return self.name


def _gc_load_missing_meta_state() -> dict:
    """A GC optimizer and a state (from another GC of the same shapes) that fails mid-load."""
    opt = trained_gc(seed=0)
    state = trained_gc(seed=10).state_dict()
    del state["extra"]["meta_optimizer"]  # e.g. a state written by another version of GC
    return {"opt": opt, "state": state, "before": state_copy(opt.base)}


def _sparse_gc() -> dict:
    torch.manual_seed(0)
    emb = nn.Embedding(10, 4, sparse=True)
    opt = create_gradient_correction_optimizer(emb.parameters(), base_optimizer=torch.optim.SGD)
    emb(torch.tensor([1, 2, 3])).sum().backward()
    return {"opt": opt, "emb": emb, "before": emb.weight.detach().clone()}


def _fer_epoch_set(opt: FEROptimizer) -> FEROptimizer:
    opt.set_epoch(1)
    return opt


def _params_unchanged(ctx: dict) -> None:
    assert torch.equal(ctx["emb"].weight.detach(), ctx["before"])


def _base_untouched(ctx: dict) -> None:
    assert_same(ctx["opt"].base.state_dict(), ctx["before"])


def load_ctx(source: torch.optim.Optimizer, target: torch.optim.Optimizer) -> dict:
    """Loading ``source``'s state into ``target``; ``before`` is ``target``'s own state."""
    return {"state": source.state_dict(), "opt": target, "before": state_copy(target)}


def _unchanged_and_steps(ctx: dict) -> None:
    """The refused load changed nothing, and the optimizer still steps (nothing half-loaded)."""
    assert_same(ctx["opt"].state_dict(), ctx["before"])
    _still_steps(ctx["opt"])


def _still_steps(opt: torch.optim.Optimizer) -> None:
    """After a refused load the optimizer still takes a step (nothing half-loaded)."""
    params = [p for g in opt.param_groups for p in g["params"]]
    for p in params:
        p.grad = torch.ones_like(p)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "FEROptimizer.step\\(\\) without fer_loss")
        opt.step()


MISUSES = [
    # -- FER's schedule ---------------------------------------------------------------------------
    Misuse(
        "fer_set_epoch_beyond_epochs_changes_nothing",
        lambda: _fer_epoch_set(fer(epochs=10)),
        lambda opt: opt.set_epoch(5, 3),
        ValueError,
        r"epoch must be in \[1, epochs=3\], got 5",
        lambda opt: (
            (opt.epochs, opt.epoch) == (10, 1) or pytest.fail(f"{opt.epochs=} {opt.epoch=}")
        ),
    ),
    Misuse(
        "fer_warmup_not_below_epochs_at_construction",
        lambda: None,
        lambda _: fer(epochs=2, warmup_epochs=2),
        ValueError,
        "warmup_epochs=2 must be smaller than epochs=2",
    ),
    Misuse(
        "fer_warmup_not_below_epochs_at_set_epoch",
        lambda: fer(epochs=None, warmup_epochs=3),
        lambda opt: opt.set_epoch(1, 3),
        ValueError,
        "warmup_epochs=3 must be smaller than epochs=3",
        lambda opt: opt.epochs is None or pytest.fail(f"epochs became {opt.epochs}"),
    ),
    # -- non-finite / wrong-type hyperparameters --------------------------------------------------
    Misuse(
        "fer_lr_nan",
        lambda: mlp(),
        lambda m: FEROptimizer(m.parameters(), torch.optim.SGD, {"lr": math.nan}),
        ValueError,
        "lr must be a finite number, got nan",
    ),
    Misuse(
        "fer_lr_inf",
        lambda: mlp(),
        lambda m: FEROptimizer(m.parameters(), torch.optim.SGD, {"lr": math.inf}),
        ValueError,
        "lr must be a finite number, got inf",
    ),
    Misuse(
        "fer_lr_string",
        lambda: mlp(),
        lambda m: FEROptimizer(m.parameters(), torch.optim.SGD, {"lr": "0.1"}),
        TypeError,
        r"lr must be a real number, got str \('0.1'\)",
    ),
    Misuse(
        "gc_lr_inf",
        lambda: mlp(),
        lambda m: create_gradient_correction_optimizer(m.parameters(), lr=math.inf),
        ValueError,
        "lr must be in",
    ),
    Misuse(
        "localized_lr_string",
        lambda: mlp(),
        lambda m: create_localized_optimizer(m, lr="0.1"),
        TypeError,
        "lr must be a real number",
    ),
    # -- LoCal's model checks ---------------------------------------------------------------------
    Misuse(
        "localized_reused_linear_is_tied",
        reused_linear,
        lambda m: create_localized_optimizer(m),
        ValueError,
        "shares a parameter with layer .*tied weights",
    ),
    Misuse(
        "localized_shared_weight_is_tied",
        Tied,
        lambda m: create_localized_optimizer(m),
        ValueError,
        "layer 'b' shares a parameter with layer 'a' .*tied weights",
    ),
    Misuse(
        "localized_params_of_another_model",
        lambda: (mlp(), mlp()),
        lambda models: create_localized_optimizer(models[0], params=models[1].parameters()),
        ValueError,
        "does not update 1.weight: its params must be the parameters of the model",
    ),
    Misuse(
        "localized_layers_registered_out_of_run_order",
        lambda: (lambda m: (m, create_localized_optimizer(m)))(Reordered()),
        lambda ctx: ctx[0](batch()[0]),
        RuntimeError,
        r"run in the order 'inp', not in their registration order \['out', 'inp'\]",
    ),
    # -- checkpoints from another model, another algorithm ----------------------------------------
    Misuse(
        "fer_load_other_memory_size",
        lambda: load_ctx(trained_fer(), trained_fer(memory_size=24)),
        lambda ctx: ctx["opt"].load_state_dict(ctx["state"]),
        ValueError,
        "num_samples \\(memory_size\\)=12, this store holds 24",
        _unchanged_and_steps,
    ),
    Misuse(
        "fer_load_3_class_store_into_5_classes",
        lambda: load_ctx(trained_fer(), fer(mlp(classes=5), num_classes=5)),
        lambda ctx: ctx["opt"].load_state_dict(ctx["state"]),
        ValueError,
        "saved for 3 classes, this store has 5",
        _unchanged_and_steps,
    ),
    Misuse(
        "fer_load_other_model_width",
        lambda: load_ctx(trained_fer(width=8), fer(mlp(width=12))),
        lambda ctx: ctx["opt"].load_state_dict(ctx["state"]),
        ValueError,
        "saved for another model",
        _unchanged_and_steps,
    ),
    Misuse(
        "localized_load_other_model_width",
        lambda: load_ctx(trained_localized(8), trained_localized(12)),
        lambda ctx: ctx["opt"].load_state_dict(ctx["state"]),
        ValueError,
        "shapes",
        _unchanged_and_steps,
    ),
    Misuse(
        "sigprop_load_other_model_width",
        lambda: load_ctx(trained_sigprop(8), trained_sigprop(12)),
        lambda ctx: ctx["opt"].load_state_dict(ctx["state"]),
        ValueError,
        "saved for another model",
        _unchanged_and_steps,
    ),
    Misuse(
        "gc_load_other_model_width",
        lambda: load_ctx(trained_gc(8), trained_gc(12)),
        lambda ctx: ctx["opt"].load_state_dict(ctx["state"]),
        ValueError,
        "shapes",
        _unchanged_and_steps,
    ),
    Misuse(
        "gc_failing_mid_load_leaves_base_untouched",
        _gc_load_missing_meta_state,
        lambda ctx: ctx["opt"].load_state_dict(ctx["state"]),
        (KeyError, ValueError),
        "meta_optimizer",
        _base_untouched,
    ),
    Misuse(
        "fer_state_into_gc",
        lambda: load_ctx(trained_fer(), trained_gc()),
        lambda ctx: ctx["opt"].load_state_dict(ctx["state"]),
        ValueError,
        "expects the state of a 'gradient_correction' optimizer, got the state of a 'fer'",
        _unchanged_and_steps,
    ),
    Misuse(
        "gc_state_into_fer",
        lambda: load_ctx(trained_gc(), trained_fer()),
        lambda ctx: ctx["opt"].load_state_dict(ctx["state"]),
        ValueError,
        "expects the state of a 'fer' optimizer, got the state of a 'gradient_correction'",
        _unchanged_and_steps,
    ),
    # -- bad batches ------------------------------------------------------------------------------
    Misuse(
        "fer_target_out_of_range",
        lambda: _fer_epoch_set(fer()),
        lambda opt: opt.fer_loss(
            torch.randn(4, CLASSES), torch.tensor([0, 1, 2, 3]), torch.arange(4)
        ),
        ValueError,
        r"targets must lie in \[0, 3\), got values in \[0, 3\]",
    ),
    Misuse(
        "sigprop_empty_batch",
        lambda: SigPropNet(16, [8], CLASSES),
        lambda m: m.training_loss(torch.zeros(0, 16), torch.zeros(0, dtype=torch.long)),
        ValueError,
        "x must hold at least one sample, got an empty batch",
    ),
    Misuse(
        "gc_sparse_gradient",
        _sparse_gc,
        lambda ctx: ctx["opt"].step(),
        RuntimeError,
        "does not support sparse gradients .* nn.Embedding\\(sparse=False\\)",
        _params_unchanged,
    ),
    # -- base optimizers that cannot be wrapped ---------------------------------------------------
    Misuse(
        "gc_around_lbfgs",
        lambda: mlp(),
        lambda m: create_gradient_correction_optimizer(
            m.parameters(), base_optimizer=torch.optim.LBFGS
        ),
        TypeError,
        "base_optimizer LBFGS re-evaluates the closure",
    ),
    Misuse(
        "fer_around_lbfgs",
        lambda: mlp(),
        lambda m: FEROptimizer(m.parameters(), torch.optim.LBFGS, {"lr": 1.0}),
        TypeError,
        "base_optimizer LBFGS re-evaluates the closure",
    ),
    Misuse(
        "fer_base_optimizer_is_a_module_class",
        lambda: mlp(),
        lambda m: FEROptimizer(m.parameters(), nn.Linear, {"lr": 0.1}),
        TypeError,
        "base_optimizer must be a torch.optim.Optimizer class .* got <class 'torch.nn",
    ),
    Misuse(
        "gc_base_optimizer_is_a_module_class",
        lambda: mlp(),
        lambda m: create_gradient_correction_optimizer(m.parameters(), base_optimizer=nn.Linear),
        TypeError,
        "base_optimizer must be a torch.optim.Optimizer class",
    ),
    Misuse(
        "gc_base_optimizer_is_a_string",
        lambda: mlp(),
        lambda m: create_gradient_correction_optimizer(m.parameters(), base_optimizer="adam"),
        TypeError,
        "base_optimizer must be a torch.optim.Optimizer class .* got 'adam'",
    ),
    Misuse(
        "create_fer_base_kwargs_not_a_dict",
        lambda: mlp(),
        lambda m: create_fer_optimizer(m.parameters(), base_kwargs=[1, 2]),
        TypeError,
        r"base_kwargs must be a dict .* got list \(\[1, 2\]\)",
    ),
]


@pytest.mark.parametrize("row", MISUSES, ids=[row.name for row in MISUSES])
def test_misuse_raises_a_clear_error(row: Misuse) -> None:
    ctx = row.setup()
    with pytest.raises(row.exc, match=row.words):
        row.misuse(ctx)
    if row.after is not None:
        row.after(ctx)


@pytest.mark.parametrize("layerwise", [True, False], ids=["layerwise", "one_backward"])
def test_sigprop_zero_grad_between_loss_and_backward_still_trains_hidden_layers(
    layerwise: bool,
) -> None:
    """``zero_grad()`` after ``training_loss`` (a common loop order) must not erase the layer-wise
    gradients: they reach ``.grad`` in ``backward()``."""
    torch.manual_seed(0)
    model = SigPropNet(16, [8, 8], CLASSES)
    opt = create_sigprop_optimizer(model, lr=1e-2)
    before = [block[0].weight.detach().clone() for block in model.blocks]
    x, y, _ = batch()
    loss = model.training_loss(x, y, layerwise_backward=layerwise)
    opt.zero_grad()
    loss.backward()
    assert all(block[0].weight.grad is not None for block in model.blocks)
    opt.step()
    for block, weight in zip(model.blocks, before, strict=True):
        assert not torch.equal(block[0].weight.detach(), weight)


def test_gc_failing_mid_load_leaves_its_own_state_untouched() -> None:
    ctx = _gc_load_missing_meta_state()
    opt = ctx["opt"]
    coefs = opt.coefficients()
    with pytest.raises((KeyError, ValueError)):
        opt.load_state_dict(ctx["state"])
    for now, before in zip(opt.coefficients(), coefs, strict=True):
        assert torch.equal(now, before)
