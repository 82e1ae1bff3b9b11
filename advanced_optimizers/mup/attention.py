r"""μP attention: logits scaled by :math:`\sqrt{d_0}/d` instead of :math:`1/\sqrt{d}`.

For head size :math:`d` and base head size :math:`d_0` the scale is :math:`1/\sqrt{d}` at the base
and :math:`\propto 1/d` beyond (Tensor Programs V): query-key dot products of a wide head are
correlated after training, so they grow like :math:`d`, not :math:`\sqrt{d}`.
``nn.MultiheadAttention`` hard-codes :math:`1/\sqrt{d}`; classification warns when its head size
grows.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from .._validation import check_int

__all__ = ["mup_attention_scale", "mup_scaled_dot_product_attention"]


def mup_attention_scale(d_head: int, base_d_head: int) -> float:
    r"""Attention-logit scale :math:`\sqrt{d_0}/d` (``1/√d`` at the base head size ``d0``)."""
    check_int("d_head", d_head, 1)
    check_int("base_d_head", base_d_head, 1)
    return math.sqrt(base_d_head) / d_head


def mup_scaled_dot_product_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, base_d_head: int, **kwargs: Any
) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` with :func:`mup_attention_scale` for ``query.shape[-1]``."""
    if "scale" in kwargs:
        raise TypeError("mup_scaled_dot_product_attention sets scale itself; do not pass scale")
    scale = mup_attention_scale(query.shape[-1], base_d_head)
    return F.scaled_dot_product_attention(query, key, value, scale=scale, **kwargs)
