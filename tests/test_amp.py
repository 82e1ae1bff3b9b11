"""Mixed precision for every entry of ``optimizer_table.ENTRIES`` (torch's SGD/Adam are the controls).

* ``torch.amp.GradScaler``: the scale is a power of two, so scaling the loss and unscaling the
  gradients is exact and the parameters after a few steps are bit-identical to the unscaled loop.
  An algorithm that computes gradients outside the caller's ``backward()`` (SigProp's layer-wise
  backward) or reads them before ``unscale_`` breaks this.
* ``torch.autocast`` (bfloat16 on the CPU): training runs, the parameters stay finite and change.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from optimizer_table import ENTRIES, Entry, batches

STEPS = 3
SCALE = 1024.0


def _sigprop_entry(layerwise: bool) -> Entry:
    """SigProp with an explicit backward mode (the table's entries use the model's default)."""
    from advanced_optimizers.sigprop import SigPropNet, create_sigprop_optimizer

    def build(dtype: torch.dtype) -> tuple[Any, Any]:
        torch.manual_seed(0)
        model = SigPropNet(16, [8, 8], 3, layerwise_backward=layerwise).to(dtype)
        return model, create_sigprop_optimizer(model, lr=1e-2, signal_lr=1e-3)

    def loss(model, optimizer, x, y, index, epoch):
        return model(x.flatten(1), y)  # the training loss through the module

    name = "sigprop-layerwise-backward" if layerwise else "sigprop-one-backward"
    return Entry(name, build, loss=loss)


CASES = [*ENTRIES, _sigprop_entry(True), _sigprop_entry(False)]
IDS = [e.name for e in CASES]


def _train(entry: Entry, scaler: torch.amp.GradScaler | None = None, autocast: bool = False):
    model, optimizer = entry.build(torch.float32)
    start = [p.detach().clone() for p in model.parameters()]
    for step, (x, y, index) in enumerate(batches(STEPS)):
        epoch = step // entry.steps_per_epoch + 1
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = entry.loss(model, optimizer, x, y, index, epoch)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        if entry.end_epoch is not None and (step + 1) % entry.steps_per_epoch == 0:
            entry.end_epoch(model, optimizer, loss.item())
    return model, optimizer, start


@pytest.mark.parametrize("entry", CASES, ids=IDS)
def test_grad_scaler_gives_the_unscaled_parameters(entry: Entry) -> None:
    plain, _, start = _train(entry)
    scaler = torch.amp.GradScaler("cpu", init_scale=SCALE)
    scaled, optimizer, _ = _train(entry, scaler)
    assert scaler.get_scale() == SCALE  # no step was skipped for an overflow
    assert getattr(optimizer, "skipped_steps", 0) == 0
    moved = False
    for p, q, p0 in zip(plain.parameters(), scaled.parameters(), start, strict=True):
        torch.testing.assert_close(q, p, rtol=0, atol=0)  # bit-identical: 2**10 is exact
        moved |= not torch.equal(p, p0)
    assert moved


@pytest.mark.parametrize("entry", CASES, ids=IDS)
def test_bfloat16_autocast_trains(entry: Entry) -> None:
    model, optimizer, start = _train(entry, autocast=True)
    assert getattr(optimizer, "skipped_steps", 0) == 0
    for p in model.parameters():
        assert p.dtype == torch.float32 and torch.isfinite(p).all()
    assert all(not torch.equal(p, p0) for p, p0 in zip(model.parameters(), start, strict=True))
