"""Where the harness trains: ``--device {auto,cpu,cuda,mps}`` resolved to a ``torch.device``.

``auto`` is CUDA when it is available, else the CPU (never MPS: ask for it by name). Asking for a
device this machine does not have is a ``ValueError`` that says which devices it has. Under
``torchrun`` each process uses the GPU of its ``LOCAL_RANK``, and the process group's backend follows
the device: ``nccl`` for CUDA, ``gloo`` otherwise (:func:`backend_for`).

The datasets stay in CPU memory; the training loop moves each batch to the device
(``non_blocking=True``) and builds the model there before its optimizer.
"""

from __future__ import annotations

import os

import torch

__all__ = ["DEVICES", "available_devices", "backend_for", "resolve_device"]

DEVICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """The ``--device`` values this machine can honour, ``auto`` and ``cpu`` first."""
    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        names.append("cuda")
    if _mps_available():
        names.append("mps")
    return names


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto``/``cpu``/``cuda``/``mps`` (``None`` = ``auto``) → the ``torch.device`` to train on.

    Raises ``ValueError`` naming the value and the devices available here when it cannot be had.
    """
    if isinstance(name, torch.device):
        return name
    name = "auto" if name is None else name
    if name not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}; got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    available = available_devices()
    if name not in available:
        raise ValueError(
            f"device {name!r} is not available on this machine "
            f"(torch {torch.__version__}); available: {', '.join(available)}"
        )
    if name == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(name)


def backend_for(device: str | torch.device) -> str:
    """The ``torch.distributed`` backend for ``device``: ``nccl`` for CUDA, ``gloo`` otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"
