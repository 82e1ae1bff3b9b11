"""What identifies and records one run: its config (the fingerprint), its result and its checkpoint.

A config carries the run's full fingerprint — the data (``dataset``, ``n_train``, ``n_val``,
``n_test``, ``data_id``) and the device as well as the model and the optimisation settings — so a
checkpoint or a finished run is only ever reused by the same experiment. A result's per-sample
correctness rows are bit-packed and base64-encoded in its JSON form; a checkpoint is read with
tensors only (``weights_only=True``), never with code.
"""

from __future__ import annotations

import base64
import hashlib
import pickle
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._validation import check_choice, check_int, check_nonnegative, check_positive, check_range
from .data import Dataset

__all__ = [
    "FINGERPRINT_FIELDS",
    "SCHEDULES",
    "RunConfig",
    "RunResult",
    "config_differences",
    "data_id",
    "read_checkpoint",
]


SCHEDULES = ("constant", "cosine")

# RunConfig fields added to make a run's record identify its experiment completely; a run file or
# checkpoint written before they existed lacks them (they load as ``None``: "unknown").
FINGERPRINT_FIELDS = ("dataset", "n_train", "n_val", "n_test", "data_id", "device")
_RUN_DEVICES = ("cpu", "cuda", "mps")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one run. ``lr=None`` takes the method's default learning rate.

    ``schedule``: ``"constant"`` keeps each param group's learning rate; ``"cosine"`` multiplies it by
    ``(1 + cos(π s / S)) / 2`` at step ``s`` of ``S`` (``CosineAnnealingLR`` stepped per batch, so
    per-group ratios — μP's, for instance — are kept).

    The data and device fields are the run's fingerprint (``None`` = not recorded): ``dataset`` the
    dataset's name, ``n_train`` / ``n_test`` the numbers of samples actually used, ``data_id`` a
    digest of the labels used (:func:`data_id`), ``device`` the device type trained on (``None``
    trains on the CPU). When set, :func:`~.train.train_run` checks them against the dataset it is
    given. ``n_val`` is the size of the validation split (0: none; ``None``: not recorded).
    """

    method: str
    options: dict[str, Any] = field(default_factory=dict)
    arch: str = "mlp"
    width: int | None = None
    depth: int | None = None
    epochs: int = 5
    batch_size: int = 128
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0
    schedule: str = "constant"
    dataset: str | None = None
    n_train: int | None = None
    n_test: int | None = None
    data_id: str | None = None
    device: str | None = None
    n_val: int | None = None

    def __post_init__(self) -> None:
        check_choice("schedule", self.schedule, SCHEDULES)
        check_int("epochs", self.epochs, 1)
        check_int("batch_size", self.batch_size, 1)
        check_int("seed", self.seed, 0)
        if self.lr is not None:
            check_positive("lr", self.lr)
        check_range("momentum", self.momentum, 0.0, 1.0, high_open=True)
        check_nonnegative("weight_decay", self.weight_decay)
        for name in ("n_train", "n_test"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 1)
        if self.n_val is not None:
            check_int("n_val", self.n_val, 0)
        if self.device is not None:
            check_choice("device", self.device, _RUN_DEVICES)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunResult:
    """One run's record.

    ``history``: per-epoch dicts (see :mod:`.train`). ``correct``: bool (epochs × n) per-sample
    correctness on the selection split — validation, or the test set for a run without a validation
    split (``selection_split``). ``test_correct``: the final run's per-sample test correctness
    (``None`` when the test set was not evaluated once at the end). ``status``: ``"ok"`` or
    ``"failed"``, with the reason in ``failure``.
    """

    config: RunConfig
    history: list[dict[str, Any]]
    correct: torch.Tensor
    status: str = "ok"
    failure: str | None = None
    test_correct: torch.Tensor | None = None

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1]

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def selection_split(self) -> str:
        """``"val"`` if the run was measured on a validation split, else ``"test"`` (legacy)."""
        return "val" if self.history and "val_acc" in self.history[0] else "test"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; correctness rows are bit-packed and base64-encoded."""
        out: dict[str, Any] = {
            "config": self.config.to_dict(),
            "status": self.status,
            "failure": self.failure,
            "history": self.history,
            "correct_split": self.selection_split,
            "correct": [_pack_bits(row) for row in self.correct],
            "n_correct": int(self.correct.shape[1]) if self.correct.ndim == 2 else 0,
        }
        if self.test_correct is not None:
            out["test_correct"] = _pack_bits(self.test_correct)
            out["n_test"] = int(self.test_correct.numel())
        elif self.selection_split == "test":
            out["n_test"] = out["n_correct"]  # the field name older readers expect
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        """Read :meth:`to_dict`'s form, and run files written before validation splits existed."""
        width = data["n_correct"] if "n_correct" in data else data["n_test"]
        rows = [_unpack_bits(row, width) for row in data["correct"]]
        correct = torch.stack(rows) if rows else torch.zeros(0, width, dtype=torch.bool)
        test_correct = None
        if data.get("test_correct") is not None:
            test_correct = _unpack_bits(data["test_correct"], data["n_test"])
        status = data.get("status", "ok")
        if status not in ("ok", "failed"):
            raise ValueError(f"status must be 'ok' or 'failed', got {status!r}")
        return cls(
            RunConfig(**data["config"]),
            data["history"],
            correct,
            status=status,
            failure=data.get("failure"),
            test_correct=test_correct,
        )


def data_id(dataset: Dataset) -> str:
    """A short digest of ``dataset``'s labels (train, then test) and sizes.

    It tells one subset, order or source of the data from another. It is computed on the labels
    only: they are exact integers, whereas the normalised images can differ in their last bits from
    one machine or thread count to another; the images of the catalog datasets are pinned by their
    files' SHA-256 sums.
    """
    head = f"{dataset.name}:{dataset.n_train}:{dataset.n_test}:"
    splits = [dataset.y_train, dataset.y_test]
    if dataset.n_val:  # a dataset without a validation split keeps its earlier digest
        head += f"val{dataset.n_val}:"
        splits.append(dataset.y_val)
    digest = hashlib.sha256(head.encode())
    for labels in splits:
        digest.update(labels.to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def config_differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """``"name: saved X, now Y"`` for every field of two config dicts that differs."""
    keys = list(wanted) + [k for k in saved if k not in wanted]
    return [
        f"{key}: saved {saved.get(key, '(not recorded)')!r}, now {wanted.get(key)!r}"
        for key in keys
        if saved.get(key, _MISSING) != wanted.get(key, _MISSING)
    ]


_MISSING = object()
_CHECKPOINT_KEYS = {"config", "model", "optimizer", "rng", "history", "correct"}


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`~.train.train_run` (tensors only, onto the CPU).

    A damaged or foreign file is a ``ValueError`` naming it and saying what to do — never a prompt
    to load it with ``weights_only=False``, which would let a planted file run code.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch warns about odd pickles before failing on them
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, KeyError) as exc:
        raise ValueError(
            f"checkpoint {path} is damaged or not an advopt checkpoint "
            f"({type(exc).__name__}); delete it to restart that run from its first epoch"
        ) from None
    missing = _CHECKPOINT_KEYS - set(state) if isinstance(state, dict) else _CHECKPOINT_KEYS
    if missing:
        raise ValueError(
            f"checkpoint {path} is not an advopt checkpoint (it lacks {', '.join(sorted(missing))}); "
            "delete it to restart that run from its first epoch"
        )
    return state


def _check_data(config: RunConfig, dataset: Dataset) -> None:
    """The dataset matches the config's data fingerprint (fields left ``None`` are not checked)."""
    actual = {
        "dataset": dataset.name,
        "n_train": dataset.n_train,
        "n_val": dataset.n_val,
        "n_test": dataset.n_test,
        "data_id": data_id(dataset) if config.data_id is not None else None,
    }
    wrong = [
        f"{key}: config {getattr(config, key)!r}, data {value!r}"
        for key, value in actual.items()
        if getattr(config, key) is not None and getattr(config, key) != value
    ]
    if wrong:
        raise ValueError(f"the dataset given does not match the run's config ({'; '.join(wrong)})")


def _pack_bits(row: torch.Tensor) -> str:
    return base64.b64encode(np.packbits(row.numpy().astype(np.uint8)).tobytes()).decode("ascii")


def _unpack_bits(text: str, n: int) -> torch.Tensor:
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:n]
    return torch.from_numpy(bits.astype(bool))
