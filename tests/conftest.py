"""Shared fixtures: small generated datasets (no network, no large files)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from advanced_optimizers.bench.data import Dataset


def idx_bytes(array: np.ndarray, dtype_code: int = 0x08) -> bytes:
    """The IDX encoding of a uint8 array: magic, big-endian sizes, data."""
    header = bytes([0, 0, dtype_code, array.ndim]) + b"".join(
        struct.pack(">I", s) for s in array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def class_images(labels: np.ndarray, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """Learnable toy images: class k lights up a bar at row 2k+3, plus noise."""
    images = rng.integers(0, 60, size=(len(labels), size, size), dtype=np.uint8)
    for k in range(10):
        images[labels == k, 2 * k + 3 : 2 * k + 5, :] = 255
    return images


def write_idx_dataset(root: Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """The four gzip IDX files of an MNIST-shaped toy dataset under ``root``."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = class_images(labels, rng)
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    return root


@pytest.fixture
def idx_dir(tmp_path: Path) -> Path:
    return write_idx_dataset(tmp_path / "toy")


def toy_dataset(n_train: int = 256, n_test: int = 128, seed: int = 0) -> Dataset:
    """An in-memory MNIST-shaped dataset that an MLP learns in a few epochs."""
    rng = np.random.default_rng(seed)
    y_train = rng.integers(0, 10, n_train)
    y_test = rng.integers(0, 10, n_test)
    x_train = torch.from_numpy(class_images(y_train, rng)).float()[:, None] / 255.0
    x_test = torch.from_numpy(class_images(y_test, rng)).float()[:, None] / 255.0
    return Dataset("toy", x_train, torch.from_numpy(y_train), x_test, torch.from_numpy(y_test), 10)


@pytest.fixture
def toy() -> Dataset:
    return toy_dataset()
