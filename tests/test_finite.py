"""The shared non-finite test behind every optimizer's skip policy."""

from __future__ import annotations

import math
import warnings
from functools import partial

import pytest
import torch

from advanced_optimizers._finite import all_finite


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_one_bad_entry_anywhere_is_found(dtype: torch.dtype, bad: float) -> None:
    tensors = [torch.ones(3, 4, dtype=dtype), torch.zeros(5, dtype=dtype)]
    assert all_finite(tensors)
    tensors[1][2] = bad
    assert not all_finite(tensors)


def test_none_empty_mixed_dtypes_and_sparse() -> None:
    assert all_finite([])
    assert all_finite([None, torch.ones(2)])
    mixed = [torch.ones(2, dtype=torch.float64), torch.ones(2, dtype=torch.float32)]
    assert all_finite(mixed)
    mixed[0][0] = math.nan
    assert not all_finite(mixed)
    sparse = torch.sparse_coo_tensor([[0, 2]], [1.0, math.inf], (4,))
    assert not all_finite([sparse])
    assert all_finite([torch.sparse_coo_tensor([[0, 2]], [1.0, 2.0], (4,))])


# -- a large finite gradient is a finite gradient -------------------------------------------------
@pytest.mark.parametrize(
    "tensor",
    [
        torch.full((256, 256), 300.0, dtype=torch.float16),  # 2-norm 76800 > fp16 max 65504
        torch.full((64, 64), 1e20, dtype=torch.float32),  # 2-norm 6.4e21: squares overflow
        torch.full((8,), 3e38, dtype=torch.float32),
        torch.full((256, 256), 3e38, dtype=torch.bfloat16),
    ],
    ids=["float16-300", "float32-1e20", "float32-3e38", "bfloat16-3e38"],
)
def test_large_finite_entries_are_finite(tensor: torch.Tensor) -> None:
    assert all_finite([tensor])
    assert all_finite([torch.ones(3), tensor, None])
    for bad in (math.nan, math.inf, -math.inf):
        broken = tensor.clone()
        broken.view(-1)[-1] = bad
        assert not all_finite([broken])
        assert not all_finite([tensor, broken])


def _optimizers() -> dict:
    from advanced_optimizers import FEROptimizer, create_gradient_correction_optimizer
    from advanced_optimizers.sigprop import SigPropAdam

    made = {
        "SigPropAdam": lambda p: SigPropAdam([p], lr=1e-3),
        "FEROptimizer": lambda p: FEROptimizer([p], torch.optim.SGD, {"lr": 1e-3}),
        "GradientCorrection": lambda p: create_gradient_correction_optimizer([p], lr=1e-3),
    }
    try:
        from advanced_optimizers import mup
    except ImportError:  # pragma: no cover - μP is optional here
        return made
    for name in ("MuPAdamW", "MuPAdam", "MuPSGD"):
        if hasattr(mup, name):
            made[name] = partial(_built, getattr(mup, name))
    return made


def _built(cls: type, p: torch.nn.Parameter) -> torch.optim.Optimizer:
    return cls([p], lr=1e-3)


OPTIMIZERS = _optimizers()


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_large_finite_float16_gradient_is_never_skipped(name: str) -> None:
    p = torch.nn.Parameter(torch.ones(256, 256, dtype=torch.float16))
    optimizer = OPTIMIZERS[name](p)
    p.grad = torch.full_like(p, 300.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimizer.step()
    assert not [w for w in caught if "finite" in str(w.message)]
    assert optimizer.skipped_steps == 0
    assert not torch.equal(p.detach(), torch.ones_like(p))
    assert torch.isfinite(p).all()


def test_skipped_steps_warn_at_powers_of_ten_not_every_step() -> None:
    from advanced_optimizers._guard import NonFiniteGuard

    guard = NonFiniteGuard("skip", owner="opt")
    bad = [torch.tensor([math.nan])]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for _ in range(120):
            assert not guard.allows(bad)
    assert guard.skipped_steps == 120
    counts = [str(w.message).split("; ")[1].split(" ")[0] for w in seen]
    assert counts == ["1", "10", "100"]
