"""Flipping-error metrics (Deng et al., AAAI 2022) from a per-epoch test-correctness table.

With ``correct[t, i]`` = "test sample i is classified correctly after epoch t+1":

* wrongly flipped samples ``WFS(E)`` = samples wrong at the final epoch E but correct at some earlier
  epoch — the errors training had already fixed and then lost;
* relative flipping error ``RFE = WFS / errors(E)`` (0 when there are no errors);
* per-epoch flips ``flips_t`` = samples correct after epoch t−1 and wrong after epoch t (t ≥ 2).
"""

from __future__ import annotations

import torch

__all__ = ["flip_metrics"]


def flip_metrics(correct: torch.Tensor) -> dict:
    """WFS, RFE, errors and per-epoch correct→wrong flips of a bool (epochs, n_test) table."""
    if correct.ndim != 2 or correct.dtype != torch.bool:
        raise ValueError(
            f"correct must be a bool tensor of shape (epochs, n_test), got {correct.dtype} "
            f"{tuple(correct.shape)}"
        )
    final = correct[-1]
    errors = int((~final).sum())
    ever_correct_before = correct[:-1].any(dim=0) if len(correct) > 1 else torch.zeros_like(final)
    wfs = int((~final & ever_correct_before).sum())
    flips = (correct[:-1] & ~correct[1:]).sum(dim=1)
    return {
        "wfs": wfs,
        "errors": errors,
        "rfe": wfs / errors if errors else 0.0,
        "flips_per_epoch": [int(f) for f in flips],
    }
