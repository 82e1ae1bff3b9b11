"""Device bugs caught without a GPU.

* Training on the ``meta`` device: a tensor the library creates on the CPU without ``device=`` meets
  the model's meta tensors and fails, exactly where it would meet CUDA tensors (or cost a transfer)
  on a GPU. ``nonfinite="ignore"``: the finiteness check is a host read, which meta cannot do.
* After training, every tensor of ``state_dict()`` is on the parameters' device and every
  per-parameter state tensor has its parameter's dtype (exceptions listed with their reasons).
* A static scan of the library for tensor factories without ``device=``, against an allowlist.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from optimizer_table import ENTRIES, Entry, batches
from torch import nn

META = torch.device("meta")
CLASSES = 3


def _mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, CLASSES)
    )


def _conv() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 8), nn.ReLU(),
        nn.Linear(8, CLASSES),
    )  # fmt: skip


def _meta_batch(n: int = 12) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = torch.empty(n, 1, 4, 4, device=META)
    y = torch.empty(n, dtype=torch.long, device=META)
    return x, y, torch.arange(n, device=META)


# -- 1a: two training steps on the meta device --------------------------------------------------
def _fer_optimizer(num_classes: int | None) -> Callable[[], list[Any]]:
    def run() -> list[Any]:
        from advanced_optimizers import FEROptimizer

        with META:
            model = _mlp()
        opt = FEROptimizer(
            model.parameters(),
            torch.optim.Adam,
            {"lr": 1e-2},
            memory_size=24,
            epochs=3,
            num_classes=num_classes,
            nonfinite="ignore",
        )
        x, y, index = _meta_batch()
        for epoch in (1, 2):  # warm-up (the store fills), then FER's loss
            opt.set_epoch(epoch)
            opt.zero_grad()
            opt.fer_loss(model(x), y, index).backward()
            opt.step()
        assert opt.soft_targets.device == opt.ever_correct.device == META
        return [model, opt.state_dict()]

    return run


def _fer_loss_attached() -> list[Any]:
    from advanced_optimizers import FERLoss

    with META:
        model = _mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    criterion = FERLoss(24, epochs=3, device=META)  # classes from the first batch
    criterion.attach(opt)
    x, y, index = _meta_batch()
    for epoch in (1, 2):
        criterion.set_epoch(epoch)
        opt.zero_grad()
        criterion(model(x), y, index).backward()
        opt.step()
    assert criterion.soft_targets.device == criterion.ever_correct.device == META
    return [model, criterion.state_dict(), opt.state_dict()]


def _localized(build: Callable[[], nn.Module]) -> Callable[[], list[Any]]:
    def run() -> list[Any]:
        from advanced_optimizers import create_localized_optimizer

        with META:
            model = build()
        opt = create_localized_optimizer(
            model, lr=0.1, hebbian_lr=1e-2, selection_mode="static", nonfinite="ignore"
        )
        opt.set_transition(1)  # the first layer learns by the Hebbian rule
        opt.gate_rule.end_epoch(1.0)  # a reference loss from the host: the gate is a tensor now
        x, y, _ = _meta_batch()
        for step in range(2):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            opt.observe_loss(loss.detach() if step == 0 else 2.0)  # a tensor, then a host float
            loss.backward()
            opt.step()
        assert opt.gate_rule.ema.device == META
        return [model]

    return run


def _sigprop(loss: str, cnn: bool = False) -> Callable[[], list[Any]]:
    def run() -> list[Any]:
        from advanced_optimizers import SigPropCNN, SigPropNet, create_sigprop_optimizer

        with META:
            model = (
                SigPropCNN((1, 4, 4), (4,), CLASSES, fc_dims=(8,), loss=loss)
                if cnn
                else SigPropNet(16, [8, 8], CLASSES, loss=loss)
            )
        opt = create_sigprop_optimizer(model, lr=1e-2, nonfinite="ignore")
        x, y, _ = _meta_batch()
        for _ in range(2):
            opt.zero_grad()
            model(x, y).backward()  # the training loss
            opt.step()
        model.eval()
        model(x)
        model.predict_by_signal(x)
        return [model, opt.state_dict()]

    return run


def _gradient_correction() -> list[Any]:
    from advanced_optimizers import create_gradient_correction_optimizer

    with META:
        model = _mlp()
    opt = create_gradient_correction_optimizer(
        model.parameters(), lr=1e-2, gcw_strength=0.5, nonfinite="ignore"
    )
    x, y, _ = _meta_batch()
    for _ in range(4):  # the corrections start once history + 1 gradients are stored
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return [model, opt.state_dict()]


def _mup() -> list[Any]:
    from advanced_optimizers import create_mu_transfer_optimizer

    with META:
        model = _mlp()
    opt = create_mu_transfer_optimizer(
        model, {"width": 4}, {"width": 8}, {"lr": 1e-2, "weight_decay": 0.01}, nonfinite="ignore"
    )
    x, y, _ = _meta_batch()
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return [model, opt.state_dict()]


META_RUNS = {
    "fer-optimizer-num_classes": _fer_optimizer(CLASSES),
    "fer-optimizer-classes-from-batch": _fer_optimizer(None),
    "fer-loss-attached-to-adam": _fer_loss_attached,
    "localized-linear": _localized(_mlp),
    "localized-conv": _localized(_conv),
    **{f"sigprop-{loss}": _sigprop(loss) for loss in ("v14", "topk", "max_all", "l2")},
    "sigprop-cnn": _sigprop("v14", cnn=True),
    "gradient_correction": _gradient_correction,
    "mup": _mup,
}


def _tensors(obj: Any, path: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, nn.Module):
        yield from _tensors(obj.state_dict(), path)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _tensors(value, f"{path}[{key!r}]")
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            yield from _tensors(value, f"{path}[{i}]")


# torch keeps Adam's/AdamW's step counter on the CPU unless capturable or fused ("special device
# hosting for step", torch/optim/adam.py): a 0-dim float32 count, whatever the parameters' device.
TORCH_STEP = r"\['state'\]\[\d+\]\['step'\]$"


@pytest.mark.parametrize("name", list(META_RUNS))
def test_two_training_steps_on_the_meta_device(name: str) -> None:
    """Every tensor the algorithm makes lives on the model's device, so nothing mixes with meta."""
    results = META_RUNS[name]()
    for path, tensor in _tensors(results):
        if re.search(TORCH_STEP, path):
            continue
        assert tensor.device == META, f"{name}: {path} is on {tensor.device}"


# -- 1b: state_dict tensors follow the parameters' device and dtype -----------------------------
# (regex on the tensor's path in state_dict(), dtype it has instead of the parameters', reason)
DTYPE_EXCEPTIONS = [
    (TORCH_STEP, torch.float32, "torch's Adam/AdamW step counter (torch's scalar dtype)"),
    (
        r"\['extra'\]\['loss'\]\['soft_targets'\]$",
        torch.float32,
        "FER's store is float32 by design: logits are upcast, the store does not follow the model",
    ),
    (r"\['extra'\]\['loss'\]\['ever_correct'\]$", torch.bool, "FER's sticky flags"),
    (
        r"\['extra'\](\['groups'\]\[\d+\])?\['coefs?'\]|\['extra'\]\['meta_optimizer'\]",
        torch.float32,
        "Gradient Correction's ODE coefficients and their Adam: one float32 scalar per parameter "
        "tensor, not per-element state",
    ),
    (r"\['extra'\]\['gate'\]\['ema'\]$", torch.float64, "LoCal's loss average is float64"),
]
DEVICE_EXCEPTIONS = [(TORCH_STEP, "torch's Adam/AdamW step counter lives on the CPU")]


def _train(entry: Entry, model: nn.Module, optimizer: Any, data: list) -> None:
    for step, (x, y, index) in enumerate(data):
        optimizer.zero_grad()
        entry.loss(model, optimizer, x, y, index, step // entry.steps_per_epoch + 1).backward()
        optimizer.step()
        if entry.end_epoch is not None and (step + 1) % entry.steps_per_epoch == 0:
            entry.end_epoch(model, optimizer, 1.0)


def _expected_dtype(path: str, param_dtype: torch.dtype) -> torch.dtype:
    for pattern, dtype, _reason in DTYPE_EXCEPTIONS:
        if re.search(pattern, path):
            return dtype
    return param_dtype


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_float64_state_has_the_parameters_device_and_dtype(entry: Entry) -> None:
    model, optimizer = entry.build(torch.float64)
    _train(entry, model, optimizer, batches(6, torch.float64))
    param = next(model.parameters())
    assert param.dtype == torch.float64
    seen = 0
    for path, tensor in _tensors(optimizer.state_dict()):
        seen += 1
        assert tensor.device == param.device, f"{path} is on {tensor.device}"
        assert tensor.dtype == _expected_dtype(path, param.dtype), f"{path} is {tensor.dtype}"
    assert seen, "the trained optimizer has state tensors"


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_state_on_the_meta_device_stays_there(entry: Entry) -> None:
    with META:
        model, optimizer = entry.build(torch.float32)
    if hasattr(optimizer, "guard"):
        optimizer.guard.policy = "ignore"  # the finiteness check is a host read
    data = [tuple(t.to(META) for t in b) for b in batches(4)]
    for step, (x, y, index) in enumerate(data):
        optimizer.zero_grad()
        entry.loss(model, optimizer, x, y, index, step // entry.steps_per_epoch + 1).backward()
        optimizer.step()
    for path, tensor in _tensors(optimizer.state_dict()):
        if any(re.search(pattern, path) for pattern, _ in DEVICE_EXCEPTIONS):
            continue
        assert tensor.device == META, f"{path} is on {tensor.device}"


# -- 1c: static scan for tensor factories without device= ---------------------------------------
PACKAGE = Path(__file__).resolve().parent.parent / "advanced_optimizers"
FACTORIES = frozenset(
    {"zeros", "ones", "empty", "full", "tensor", "eye", "arange", "rand", "randn", "randint",
     "linspace"}
)  # fmt: skip
# (file glob relative to advanced_optimizers/, qualified function, reason)
ALLOWED = [
    (
        "localized/gate.py",
        "LossGate.observe",
        "a loss given as a Python float comes from the host; commit() moves it to the average's "
        "device",
    ),
    (
        "localized/gate.py",
        "LossGate.end_epoch",
        "the epoch's mean loss is a Python float from the host; commit() moves the average to the "
        "device of the first loss tensor",
    ),
    (
        "localized/gate.py",
        "LossGate.load_state_dict",
        "an average saved as a Python float (host); commit() moves it as above",
    ),
    (
        "sigprop/networks.py",
        "SigPropBase.__init__",
        "module buffers made in __init__ follow the default device and .to(), like parameters",
    ),
    (
        "mup/*.py",
        "DepthScaledResidual.__init__",
        "module buffer made in __init__ (follows the default device and .to())",
    ),
    (
        "data.py",
        "collate_with_index.collate",
        "a DataLoader collate builds host batches from Python ints; the loop moves the batch",
    ),
    (
        "mup/*.py",
        "_InitMark.__reduce__",
        "an empty placeholder pickled for a parameter that no longer exists (never computed with)",
    ),
]


def _factory_calls_without_device(path: Path) -> list[tuple[str, int, str]]:
    """(qualified function, line, call) of every ``torch.<factory>(...)`` without ``device=``."""
    found: list[tuple[str, int, str]] = []
    scope: list[str] = []

    class Visitor(ast.NodeVisitor):
        def _scoped(self, node: ast.AST) -> None:
            scope.append(node.name)  # type: ignore[attr-defined]
            self.generic_visit(node)
            scope.pop()

        visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

        def visit_Call(self, node: ast.Call) -> None:
            func = node.func
            if (
                isinstance(func, ast.Attribute)
                and func.attr in FACTORIES
                and isinstance(func.value, ast.Name)
                and func.value.id == "torch"
                and not any(k.arg == "device" for k in node.keywords)
            ):
                found.append((".".join(scope) or "<module>", node.lineno, ast.unparse(node)))
            self.generic_visit(node)

    Visitor().visit(ast.parse(path.read_text(), str(path)))
    return found


def _scanned_files() -> list[str]:
    files = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py"))
    return [f for f in files if not f.startswith("bench/")]


def _offenders(relative: str, allowed: list[tuple[str, str, str]]) -> list[str]:
    out = []
    for function, line, call in _factory_calls_without_device(PACKAGE / relative):
        if not any(fnmatch.fnmatch(relative, f) and function == fn for f, fn, _ in allowed):
            out.append(f"{relative}:{line} in {function}: {call}")
    return out


def test_scan_sees_the_library() -> None:
    files = _scanned_files()
    assert any(f.startswith("fer") for f in files) and "localized/gate.py" in files
    assert "sigprop/networks.py" in files
    assert not any(f.startswith("bench/") for f in files)
    assert _factory_calls_without_device(PACKAGE / "localized/gate.py"), "the scan finds calls"


@pytest.mark.parametrize(
    "relative",
    [
        *_scanned_files(),
    ],
)
def test_no_tensor_factory_without_device(relative: str) -> None:
    """A new ``torch.zeros(...)`` & co. without ``device=`` fails here: pass ``device=`` (or use
    ``*_like`` / ``x.new_*``), or add it to ``ALLOWED`` with the reason it is right."""
    offenders = _offenders(relative, ALLOWED)
    assert not offenders, "tensor factories without device=:\n" + "\n".join(offenders)


def test_allowlist_has_no_stale_entries() -> None:
    """Each allowlisted (file, function) still makes such a call; remove entries that were fixed."""
    calls = {
        (relative, function)
        for relative in _scanned_files()
        for function, _, _ in _factory_calls_without_device(PACKAGE / relative)
    }
    for pattern, function, _reason in ALLOWED:
        assert any(fnmatch.fnmatch(f, pattern) and fn == function for f, fn in calls), (
            pattern,
            function,
        )
