"""In-memory datasets held as tensors, sliced into shuffled mini-batches that carry sample indices.

Images are scaled to [0, 1] and normalised per channel with the official training set's mean and std
(a fixed preprocessing of the pixels, computed once at load time from no labels and no test data). The
train/test split is the dataset's official one.

**Validation split.** :meth:`Dataset.split_validation` carves a validation split off the *end* of the
official training set (``VALIDATION_DEFAULTS``: the last 10 000 training images of MNIST and
Fashion-MNIST, the last 5 000 of CIFAR-10); the rest is the training part, of which
:meth:`Dataset.subset` takes the first ``n_train``. The split is fixed (no shuffling) and recorded in
every run's fingerprint (``n_val`` and the validation labels in the data digest). All selection —
learning rates, options, targets, best epochs — is made on it; the test set is read once per final run
(see :mod:`..train`). A dataset without a validation split (``n_val == 0``) is the legacy /
smoke-test mode, labelled "no validation split" wherever its results are shown.

Batches are index slices of one tensor: no per-sample Python work, no DataLoader. The shuffling
order of epoch ``e`` under seed ``s`` depends on ``(s, e)`` only, so every method sees the same data
order for the same seed and a resumed run continues with the order it would have had.

The tensors stay in CPU memory; :func:`move_batch` (or the ``device`` argument of the batch
iterators) moves one batch at a time to the training device with ``non_blocking=True``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..._validation import check_choice, check_int
from ..methods import Batch
from .formats import DataFormatError, read_cifar_batch, read_idx
from .sources import (
    CATALOG,
    DataNotFoundError,
    accepted_sums,
    candidate_dirs,
    download,
    locate,
    not_found_message,
)

__all__ = ["DATASETS", "VALIDATION_DEFAULTS", "Dataset", "load_dataset", "move_batch"]

DATASETS = tuple(CATALOG)

# The default validation split: the last N images of the official training set.
VALIDATION_DEFAULTS: dict[str, int] = {"mnist": 10_000, "fashion-mnist": 10_000, "cifar10": 5_000}

# Training cross-entropy (``train_ce``) is measured in eval mode on the first this many training samples.
TRAIN_EVAL_SAMPLES = 10_000


@dataclass(frozen=True)
class Dataset:
    """Train, validation and test tensors. ``x_*``: (N, C, H, W) float32; ``y_*``: (N,) int64.

    ``x_val`` / ``y_val`` are ``None`` when there is no validation split (see the module docstring).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def n_test(self) -> int:
        return len(self.y_test)

    @property
    def n_val(self) -> int:
        """Samples in the validation split (0: none)."""
        return 0 if self.y_val is None else len(self.y_val)

    def with_validation(self, n_val: int, asker: str) -> Dataset:
        """This dataset with a validation split of ``n_val`` samples: the one it has (which must be
        ``n_val`` samples, or a ``ValueError`` says what ``asker`` asked for), else carved off the
        end of the training set (:meth:`split_validation`)."""
        if not self.n_val:
            return self.split_validation(n_val)
        if self.n_val != n_val:
            raise ValueError(
                f"the dataset given has a validation split of {self.n_val} samples, {asker} asks "
                f"for {n_val} (--validation)"
            )
        return self

    def split_validation(self, n_val: int) -> Dataset:
        """The last ``n_val`` training samples become the validation split (0: no split, ``self``).

        The training part keeps the first ``n_train - n_val`` samples in their order. A dataset that
        already has a validation split, or one too small to keep a training part, is a
        ``ValueError`` naming ``--validation``.
        """
        n_val = check_int("validation", n_val, 0)
        if n_val == 0:
            return self
        if self.n_val:
            raise ValueError(f"{self.name} already has a validation split of {self.n_val} samples")
        if n_val >= self.n_train:
            raise ValueError(
                f"validation (--validation) = {n_val} leaves no training samples of the "
                f"{self.n_train} of {self.name}; pass fewer"
            )
        cut = self.n_train - n_val
        return replace(
            self,
            x_train=self.x_train[:cut],
            y_train=self.y_train[:cut],
            x_val=self.x_train[cut:],
            y_val=self.y_train[cut:],
        )

    def without_test(self) -> Dataset:
        """The same data with an empty test split (what tuning works on: it cannot read the test set)."""
        return replace(self, x_test=self.x_test[:0], y_test=self.y_test[:0])

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> Dataset:
        """The first ``n_train`` / ``n_test`` samples (a fixed, reproducible subset).

        The validation split, if any, is kept whole (``n_train`` counts the training part only).
        Asking for more samples than there are is a ``ValueError`` naming the argument, the value
        and the dataset's size (never a silently smaller subset).
        """
        n_train = self.n_train if n_train is None else check_int("n_train", n_train, 1)
        n_test = self.n_test if n_test is None else check_int("n_test", n_test, 1)
        for arg, wanted, have, split in (
            ("n_train", n_train, self.n_train, "training"),
            ("n_test", n_test, self.n_test, "test"),
        ):
            if wanted > have:
                flag = "--" + arg.replace("_", "-")
                after = (
                    f" left after the {self.n_val}-sample validation split" if self.n_val else ""
                )
                if split == "test":
                    after = ""
                raise ValueError(
                    f"{arg} ({flag}) = {wanted} is more than the {have} {split} samples{after} of "
                    f"{self.name}; pass at most {have}, or leave it out to use them all"
                )
        return replace(
            self,
            x_train=self.x_train[:n_train],
            y_train=self.y_train[:n_train],
            x_test=self.x_test[:n_test],
            y_test=self.y_test[:n_test],
        )

    def epoch_order(self, seed: int, epoch: int) -> torch.Tensor:
        """The permutation of training indices used in ``epoch`` under ``seed``."""
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        return torch.randperm(self.n_train, generator=generator)

    def train_batches(
        self,
        batch_size: int,
        seed: int = 0,
        epoch: int = 1,
        device: torch.device | str | None = None,
    ) -> Iterator[Batch]:
        """Shuffled training batches ``Batch(x, y, index)``; the last one may be smaller.

        ``device``: move each batch there (default: leave it in CPU memory).
        """
        check_int("batch_size", batch_size, 1)
        order = self.epoch_order(seed, epoch)
        for start in range(0, self.n_train, batch_size):
            index = order[start : start + batch_size]
            yield move_batch(Batch(self.x_train[index], self.y_train[index], index), device)

    def test_batches(
        self, batch_size: int = 1000, device: torch.device | str | None = None
    ) -> Iterator[Batch]:
        """Test batches in order (moved to ``device`` when given)."""
        return _ordered_batches(self.x_test, self.y_test, batch_size, device)

    def val_batches(
        self, batch_size: int = 1000, device: torch.device | str | None = None
    ) -> Iterator[Batch]:
        """Validation batches in order (none without a validation split)."""
        if self.y_val is None:
            return iter(())
        return _ordered_batches(self.x_val, self.y_val, batch_size, device)

    def train_eval_batches(
        self,
        batch_size: int = 1000,
        device: torch.device | str | None = None,
        limit: int = TRAIN_EVAL_SAMPLES,
    ) -> Iterator[Batch]:
        """The first ``min(limit, n_train)`` training samples in order (for training cross-entropy)."""
        n = min(limit, self.n_train)
        return _ordered_batches(self.x_train[:n], self.y_train[:n], batch_size, device)

    def eval_batches(
        self, split: str, batch_size: int = 1000, device: torch.device | str | None = None
    ) -> Iterator[Batch]:
        """Batches of ``split``: ``"test"``, ``"val"`` or ``"train"`` (the train-eval subset)."""
        check_choice("split", split, ("test", "val", "train"))
        if split == "test":
            return self.test_batches(batch_size, device)  # the one door to the test set
        if split == "val":
            return self.val_batches(batch_size, device)
        return self.train_eval_batches(batch_size, device)

    def split_size(self, split: str) -> int:
        """Samples :meth:`eval_batches` yields for ``split``."""
        return {
            "test": self.n_test,
            "val": self.n_val,
            "train": min(TRAIN_EVAL_SAMPLES, self.n_train),
        }[split]


def _ordered_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device | str | None
) -> Iterator[Batch]:
    for start in range(0, len(y), batch_size):
        index = torch.arange(start, min(start + batch_size, len(y)))
        yield move_batch(Batch(x[start : start + batch_size], y[index], index), device)


def move_batch(batch: Batch, device: torch.device | str | None) -> Batch:
    """``batch`` with its tensors (inputs, labels, indices) on ``device``; itself when ``None``."""
    if device is None:
        return batch
    return Batch(
        batch.x.to(device, non_blocking=True),
        batch.y.to(device, non_blocking=True),
        batch.index.to(device, non_blocking=True),
    )


def _normalise(train: np.ndarray, test: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, C, H, W) → float32 in [0, 1], standardised per channel by the training set."""
    train_f = torch.from_numpy(train).float().div_(255.0)
    test_f = torch.from_numpy(test).float().div_(255.0)
    mean = train_f.mean(dim=(0, 2, 3), keepdim=True)
    std = train_f.std(dim=(0, 2, 3), keepdim=True)
    return (train_f - mean) / std, (test_f - mean) / std


def _check_split(images: np.ndarray, labels: np.ndarray, what: str, num_classes: int) -> None:
    if len(images) != len(labels):
        raise DataFormatError(f"{what}: {len(images)} images but {len(labels)} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataFormatError(
            f"{what}: labels must be in [0, {num_classes}), got [{labels.min()}, {labels.max()}]"
        )


Sums = dict[str, tuple[str, ...]]


def _load_idx(files: dict[str, os.PathLike], sums: Sums) -> tuple[np.ndarray, ...]:
    x_train = read_idx(files["train-images-idx3-ubyte.gz"], expected_ndim=3)[:, None]
    y_train = read_idx(files["train-labels-idx1-ubyte.gz"], expected_ndim=1).astype(np.int64)
    x_test = read_idx(files["t10k-images-idx3-ubyte.gz"], expected_ndim=3)[:, None]
    y_test = read_idx(files["t10k-labels-idx1-ubyte.gz"], expected_ndim=1).astype(np.int64)
    return x_train, y_train, x_test, y_test


def _load_cifar(files: dict[str, os.PathLike], sums: Sums) -> tuple[np.ndarray, ...]:
    """The six batches; each one's bytes checked against its accepted sum as it is read."""
    parts = [
        read_cifar_batch(files[f"data_batch_{i}"], sums.get(f"data_batch_{i}")) for i in range(1, 6)
    ]
    x_test, y_test = read_cifar_batch(files["test_batch"], sums.get("test_batch"))
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    return x_train, y_train, x_test, y_test


_READERS = {"mnist": _load_idx, "fashion-mnist": _load_idx, "cifar10": _load_cifar}


def load_dataset(
    name: str = "mnist",
    data_dir: str | os.PathLike | None = None,
    download_ok: bool = True,
    progress: bool = True,
    check_sums: bool = True,
) -> Dataset:
    """Load ``name`` (``'mnist'``, ``'fashion-mnist'`` or ``'cifar10'``) into memory.

    Files are searched as described in :mod:`.sources` (explicit dir, usual layouts, the bundled
    MNIST) and downloaded with SHA-256 verification when missing and ``download_ok``.
    ``check_sums=False`` skips the SHA-256 check of local files (for your own copies or test files;
    downloads are always checked). CIFAR-10 batches are read only from a directory whose manifest
    (written when advopt extracted the verified archive) lists their sums, unless
    ``check_sums=False``, and always with a restricted unpickler (see :mod:`.sources`).
    Raises :class:`DataNotFoundError` naming the needed files when they cannot be had, and
    :class:`DataFormatError` for corrupt, unverified or unsafe files.
    """
    check_choice("name", name, DATASETS)
    spec = CATALOG[name]
    files = locate(spec, data_dir, check_sums)
    if files is None:
        searched = candidate_dirs(spec, data_dir)
        if not download_ok:
            raise DataNotFoundError(not_found_message(spec, searched, "download disabled"))
        try:
            directory = download(spec, data_dir, progress)
        except DataNotFoundError as exc:
            raise DataNotFoundError(not_found_message(spec, searched, str(exc))) from exc
        files = locate(spec, directory)
        if files is None:  # pragma: no cover - download() guarantees the files
            raise DataNotFoundError(not_found_message(spec, [directory], "download incomplete"))
    sums = accepted_sums(spec, Path(files[spec.files[0]]).parent, check_sums)
    x_train, y_train, x_test, y_test = _READERS[name](files, sums)
    num_classes = 10
    _check_split(x_train, y_train, f"{name} train", num_classes)
    _check_split(x_test, y_test, f"{name} test", num_classes)
    xtr, xte = _normalise(x_train, x_test)
    return Dataset(name, xtr, torch.from_numpy(y_train), xte, torch.from_numpy(y_test), num_classes)
