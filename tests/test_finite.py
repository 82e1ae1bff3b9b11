"""The shared non-finite test behind every optimizer's skip policy."""

from __future__ import annotations

import math

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
