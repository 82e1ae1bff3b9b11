"""No hidden host synchronisation in a steady-state ``step()``.

A host read (``.item()``, ``.tolist()``, ``bool(t)``, ``float(t)``, ``int(t)``) stalls a GPU
pipeline until the device catches up. Each read of a tensor in a step is counted by patching those
methods of ``torch.Tensor``; the count of the base torch optimizer's own step (torch's single-tensor
Adam reads its step counter) is subtracted. The goal: at most one extra read per step (the
non-finite decision) with the default policy, and none with ``nonfinite="ignore"``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
from optimizer_table import ENTRIES, Entry, batches

from advanced_optimizers import (
    FEROptimizer,
    GradientCorrectionOptimizer,
    LocalizedOptimizer,
    SigPropAdam,
)
from advanced_optimizers.mup import MuPAdam, MuPAdamW, MuPSGD

_READS = ("item", "tolist", "__bool__", "__float__", "__int__")


@contextlib.contextmanager
def counting_host_reads() -> Iterator[list[str]]:
    calls: list[str] = []
    originals = {name: getattr(torch.Tensor, name) for name in _READS}

    def counted(name: str):
        original = originals[name]

        def wrapper(self, *args, **kwargs):
            calls.append(name)
            return original(self, *args, **kwargs)

        return wrapper

    try:
        for name in _READS:
            setattr(torch.Tensor, name, counted(name))
        yield calls
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def _base_class(optimizer: torch.optim.Optimizer) -> type[torch.optim.Optimizer]:
    if isinstance(optimizer, FEROptimizer | GradientCorrectionOptimizer | LocalizedOptimizer):
        return type(optimizer.base)
    for ours, theirs in ((SigPropAdam, torch.optim.Adam), (MuPAdamW, torch.optim.AdamW)):
        if isinstance(optimizer, ours):
            return theirs
    if isinstance(optimizer, MuPAdam):
        return torch.optim.Adam
    if isinstance(optimizer, MuPSGD):
        return torch.optim.SGD
    return type(optimizer)


def _reads_per_step(entry: Entry, optimizer_policy: str | None) -> tuple[int, int]:
    """(reads of the optimizer's step, reads of its base torch optimizer's step), one step each."""
    model, optimizer = entry.build(torch.float32)
    if optimizer_policy is not None and hasattr(optimizer, "guard"):
        optimizer.guard.policy = optimizer_policy
    data = batches(4)
    for step, (x, y, index) in enumerate(data):  # steady state: every buffer exists
        optimizer.zero_grad()
        entry.loss(model, optimizer, x, y, index, 1).backward()
        if step < len(data) - 1:
            optimizer.step()
    twin = _base_class(optimizer)([dict(g) for g in optimizer.param_groups])
    twin.load_state_dict(_base_state(optimizer, twin))
    with counting_host_reads() as ours:
        optimizer.step()
    with counting_host_reads() as theirs:
        twin.step()
    return len(ours), len(theirs)


def _base_state(optimizer: torch.optim.Optimizer, twin: torch.optim.Optimizer) -> dict:
    state = twin.state_dict()
    saved = optimizer.state_dict()
    state["state"] = saved["state"]
    return state


def test_default_policy_adds_at_most_one_read(entry: Entry) -> None:
    ours, base = _reads_per_step(entry, None)
    assert ours - base <= 1, f"{entry.name}: {ours} host reads per step, its base {base}"


def test_ignore_policy_adds_no_read(entry: Entry) -> None:
    ours, base = _reads_per_step(entry, "ignore")
    assert ours - base <= 0, f"{entry.name}: {ours} host reads per step, its base {base}"


pytestmark = pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
