"""The Optimizer contract, checked for every entry of ``optimizer_table.ENTRIES``.

Construction errors, closures, ``grad=None``, ``zero_grad``, ``add_param_group``, LR schedulers,
lock-step resume through ``torch.save``/``torch.load(weights_only=True)`` (bit-identical on CPU),
non-finite gradients, float64/bfloat16, ``deepcopy`` and ``repr``.
"""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
import torch.optim.optimizer as torch_optimizer_module
from optimizer_table import ENTRIES, Entry, batches

pytestmark = pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])


def train(entry: Entry, model, optimizer, data, start: int = 0) -> list[float]:
    """One optimizer step per batch; the epoch hook every ``entry.steps_per_epoch`` steps."""
    losses = []
    for step, (x, y, index) in enumerate(data, start=start):
        epoch = step // entry.steps_per_epoch + 1
        optimizer.zero_grad()
        loss = entry.loss(model, optimizer, x, y, index, epoch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if entry.end_epoch is not None and (step + 1) % entry.steps_per_epoch == 0:
            entry.end_epoch(model, optimizer, loss.item())
    return losses


def params_of(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_invalid_hyperparameters_name_the_argument(entry: Entry) -> None:
    """Each declared bad construction (empty params, bad values, unknown modes) raises clearly."""
    assert entry.invalid, "every entry declares at least one invalid construction"
    for call, exc, words in entry.invalid:
        with pytest.raises(exc, match=words):
            call()


def test_step_returns_closure_loss(entry: Entry) -> None:
    model, optimizer = entry.build(torch.float32)
    x, y, index = batches(1)[0]

    def closure():
        optimizer.zero_grad()
        loss = entry.loss(model, optimizer, x, y, index, 1)
        loss.backward()
        return loss

    returned = optimizer.step(closure)
    assert isinstance(returned, torch.Tensor) and torch.isfinite(returned)


def test_training_reduces_the_loss(entry: Entry) -> None:
    model, optimizer = entry.build(torch.float32)
    data = batches(4)

    def progress() -> float:
        with torch.no_grad():
            return sum(entry.progress(model, optimizer, x, y, i, 1).item() for x, y, i in data)

    before = progress()
    train(entry, model, optimizer, data * 6)
    assert progress() < before


def test_param_with_grad_none_is_skipped(entry: Entry) -> None:
    model, optimizer = entry.build(torch.float32)
    train(entry, model, optimizer, batches(2))  # build up state first
    x, y, index = batches(3)[2]
    optimizer.zero_grad()
    entry.loss(model, optimizer, x, y, index, 1).backward()
    first = next(p for p in model.parameters() if p.grad is not None)
    first.grad = None
    before = first.detach().clone()
    optimizer.step()
    assert torch.equal(first.detach(), before)


def test_zero_grad_sets_none(entry: Entry) -> None:
    model, optimizer = entry.build(torch.float32)
    train(entry, model, optimizer, batches(1))
    optimizer.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_add_param_group(entry: Entry) -> None:
    model, optimizer = entry.build(torch.float32)
    extra = torch.nn.Parameter(torch.ones(3))
    optimizer.add_param_group({"params": [extra]})
    assert any(extra is p for g in optimizer.param_groups for p in g["params"])
    x, y, index = batches(1)[0]
    optimizer.zero_grad()
    (entry.loss(model, optimizer, x, y, index, 1) + extra.sum()).backward()
    optimizer.step()
    assert not torch.equal(extra.detach(), torch.ones(3))


@pytest.mark.parametrize("scheduler", ["StepLR", "CosineAnnealingLR", "OneCycleLR"])
def test_lr_schedulers_drive_it(entry: Entry, scheduler: str) -> None:
    model, optimizer = entry.build(torch.float32)
    kwargs = {
        "StepLR": {"step_size": 1, "gamma": 0.5},
        "CosineAnnealingLR": {"T_max": 4},
        # one max_lr per group keeps groups' lr ratios (μP's per-group learning rates survive it;
        # a scalar max_lr would flatten them, which μP detects: tests/test_mup.py)
        "OneCycleLR": {"max_lr": [g["lr"] for g in optimizer.param_groups], "total_steps": 10},
    }[scheduler]
    sched = getattr(torch.optim.lr_scheduler, scheduler)(optimizer, **kwargs)
    lrs = []
    for x, y, index in batches(3):
        optimizer.zero_grad()
        entry.loss(model, optimizer, x, y, index, 1).backward()
        optimizer.step()
        sched.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert len(set(lrs)) > 1


def _roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_lockstep_resume_is_bit_identical(entry: Entry) -> None:
    data = batches(6)
    model, optimizer = entry.build(torch.float32)
    train(entry, model, optimizer, data)
    reference = params_of(model)

    model, optimizer = entry.build(torch.float32)
    train(entry, model, optimizer, data[:3])
    saved = _roundtrip({"model": model.state_dict(), "optimizer": optimizer.state_dict()})
    model, optimizer = entry.build(torch.float32)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    train(entry, model, optimizer, data[3:], start=3)
    for got, want in zip(params_of(model), reference, strict=True):
        assert torch.equal(got, want)


def test_nonfinite_gradient_policy(entry: Entry) -> None:
    if entry.nonfinite is None:
        pytest.skip(f"{entry.name}: non-finite gradients are passed through as torch.optim does")
    model, optimizer = entry.build(torch.float32)
    train(entry, model, optimizer, batches(2))
    state_before = copy.deepcopy(optimizer.state_dict())
    params_before = params_of(model)
    x, y, index = batches(3)[2]
    optimizer.zero_grad()
    entry.loss(model, optimizer, x, y, index, 1).backward()
    next(p for p in model.parameters() if p.grad is not None).grad.view(-1)[0] = float("nan")
    if entry.nonfinite == "raise":
        with pytest.raises((ValueError, RuntimeError), match="finite"):
            optimizer.step()
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            optimizer.step()
        assert any("finite" in str(w.message) for w in caught)
    for got, want in zip(params_of(model), params_before, strict=True):
        assert torch.equal(got, want)
    after = optimizer.state_dict()
    assert all(torch.isfinite(t).all() for t in _tensors(after))
    assert len(list(_tensors(after))) == len(list(_tensors(state_before)))
    if entry.nonfinite == "skip":  # a skipped step changes no state at all but its skip counter
        assert getattr(optimizer, "skipped_steps", None) == 1
        _assert_same(_without_counter(after), _without_counter(state_before))


def _without_counter(state: dict) -> dict:
    return {k: v for k, v in state.items() if k != "nonfinite"}


def _assert_same(a, b, where: str = "state") -> None:
    """Deep equality of two state dicts (tensors bit-identical, NaN equal to NaN)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape, where
        assert torch.equal(a, b) or torch.allclose(a, b, rtol=0, atol=0, equal_nan=True), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {set(a) ^ set(b)}"
        for key in a:
            _assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and a != a:
        assert isinstance(b, float) and b != b, where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_step_hooks_fire_once_per_step(entry: Entry) -> None:
    """Instance and global step hooks run exactly once per step(), also once torch has wrapped
    Adam's and SGD's step with its hook runner (which happens when a plain one is created)."""
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    model, optimizer = entry.build(torch.float32)
    calls: list[str] = []
    optimizer.register_step_pre_hook(lambda *args: calls.append("pre"))
    optimizer.register_step_post_hook(lambda *args: calls.append("post"))
    seen: list[str] = []
    handles = [
        torch_optimizer_module.register_optimizer_step_pre_hook(
            lambda opt, *args: seen.append("pre") if opt is optimizer else None
        ),
        torch_optimizer_module.register_optimizer_step_post_hook(
            lambda opt, *args: seen.append("post") if opt is optimizer else None
        ),
    ]
    try:
        train(entry, model, optimizer, batches(2))
    finally:
        for handle in handles:
            handle.remove()
    assert calls == ["pre", "post", "pre", "post"]
    assert seen == ["pre", "post", "pre", "post"]


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point():
            yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _tensors(v)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=["float64", "bfloat16"])
def test_other_dtypes(entry: Entry, dtype: torch.dtype) -> None:
    if dtype not in entry.dtypes:
        with pytest.raises((TypeError, ValueError), match="dtype"):
            entry.build(dtype)
        return
    model, optimizer = entry.build(dtype)
    train(entry, model, optimizer, batches(2, dtype))
    assert all(p.dtype == dtype and torch.isfinite(p).all() for p in model.parameters())


def test_deepcopy_and_repr(entry: Entry) -> None:
    model, optimizer = entry.build(torch.float32)
    train(entry, model, optimizer, batches(2))
    clone = copy.deepcopy(optimizer)
    assert type(clone) is type(optimizer)
    assert isinstance(repr(optimizer), str) and type(optimizer).__name__ in repr(optimizer)
