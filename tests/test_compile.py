"""Every optimizer's step compiles with ``torch.compile`` and gives the eager result.

The model's forward and backward stay eager; ``optimizer.step`` is compiled with the ``aot_eager``
backend (no C++ toolchain needed; on a machine with one, ``inductor`` exercises the same graphs).
Host reads inside a step (the non-finite check) become graph breaks, which is correct, only slower.
"""

from __future__ import annotations

import pytest
import torch
from optimizer_table import ENTRIES, Entry, batches

pytestmark = pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])


def test_compiled_step_equals_eager(entry: Entry) -> None:
    torch._dynamo.reset()  # one entry's compiled frames must not guard another's
    data = batches(3)
    eager_model, eager_opt = entry.build(torch.float32)
    model, opt = entry.build(torch.float32)
    step = torch.compile(opt.step, backend="aot_eager")
    for x, y, index in data:
        for m, o, take_step in ((eager_model, eager_opt, eager_opt.step), (model, opt, step)):
            o.zero_grad()
            entry.loss(m, o, x, y, index, 1).backward()
            take_step()
    for got, want in zip(model.parameters(), eager_model.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch._dynamo.reset()
