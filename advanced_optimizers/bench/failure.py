"""When a run has failed: it diverged, or it is still (or again) at chance.

A run is stopped and returned with ``status = "failed"`` and the reason when

* its epoch's training loss (or, with a validation split, its validation loss) is not finite
  (diverged), or
* with a validation split: its validation accuracy is not above ``CHANCE_FACTOR`` (1.5) × chance
  (``1 / num_classes``) at the end of any epoch from :func:`failure_check_epoch` on
  (``min(epochs, max(2, ceil(epochs / 4)))``: the later of epoch 2 and a quarter of the budget, the
  last epoch for shorter runs). A run still at chance there has not started learning; a run that
  falls back to chance later has collapsed.

Without a validation split only the first rule applies (the second would be a decision made on the
test set). A failed run's test set is not evaluated; its record is final (``advopt compare`` does
not retry it unless asked with ``--retry-failed``).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["CHANCE_FACTOR", "detect_failure", "failure_check_epoch"]

# A run whose validation accuracy is not above CHANCE_FACTOR / num_classes has failed (see above).
CHANCE_FACTOR = 1.5


def failure_check_epoch(epochs: int) -> int:
    """The first epoch at which a run still at chance counts as failed (see the module docstring)."""
    return min(epochs, max(2, math.ceil(epochs / 4)))


def detect_failure(
    record: dict[str, Any], epochs: int, num_classes: int, split: str | None = None
) -> str | None:
    """Why a run whose latest epoch is ``record`` has failed (see the module docstring), or ``None``.

    ``split``: the accuracy the chance rule reads — ``"val"`` (default when the record has
    ``val_acc``); ``"test"`` applies it to a run without a validation split, which only reports do
    (after the fact, and labelled: it is a judgement made on the test set); ``None`` otherwise
    checks the losses only.
    """
    epoch = int(record["epoch"])
    if split is None and "val_acc" in record:
        split = "val"
    losses = ("train_loss", "val_loss") if "val_loss" in record else ("train_loss",)
    for key in losses:
        value = record[key]
        if value is None or not math.isfinite(value):  # a run file stores NaN/inf as null
            what = "training loss" if key == "train_loss" else "validation loss"
            return f"diverged: {what} is {value} at epoch {epoch}"
    if split is not None and epoch >= failure_check_epoch(epochs):
        acc = record[f"{split}_acc"]
        floor = CHANCE_FACTOR / num_classes
        name = "validation" if split == "val" else "test"
        if acc is None or not acc > floor:
            return (
                f"at chance: {name} accuracy {acc:.4f} <= {floor:.4f} "
                f"({CHANCE_FACTOR:g} x chance) at epoch {epoch}"
            )
    return None
