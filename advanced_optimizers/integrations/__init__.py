"""The library inside trainers that own the training loop: PyTorch Lightning and Hugging Face.

- :mod:`.lightning`: ``AdvancedOptimizersCallback``, a Lightning ``Callback`` (needs ``lightning``);
- :mod:`.huggingface`: ``attach(trainer)``, for a ``transformers.Trainer`` (needs ``transformers``
  and ``accelerate``).

Both do per batch and per epoch what FER and LoCal need (the epoch, the samples' indices, FER's
loss, LoCal's loss gate and epoch hook, the ``torch.distributed`` syncs), so the optimizer is all the
training code names; the other algorithms (Gradient Correction, μP, SigProp's optimizer) are plain
optimizers and need nothing. ``pip install 'advanced_optimizers[integrations]'`` installs both
trainers. The submodules are imported on first use (``advanced_optimizers.integrations.lightning``),
so importing the library never imports a trainer.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["huggingface", "lightning"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
