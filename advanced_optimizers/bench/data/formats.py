"""Readers for the two on-disk formats, with clear errors for corrupt files.

* IDX (MNIST, Fashion-MNIST): big-endian header ``0x00 0x00 <dtype> <ndim>``, ``ndim`` uint32 sizes,
  then the row-major data; plain or gzip-compressed.
* CIFAR-10 python batches (``cifar-10-batches-py``): pickled dicts with ``data`` (N x 3072 uint8,
  channel-major) and ``labels``. They are pickles, as the dataset ships them: read only files you trust.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import pickle
from pathlib import Path

import numpy as np

__all__ = ["DataFormatError", "read_cifar_batch", "read_idx", "sha256_of"]

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class DataFormatError(ValueError):
    """A data file is not what its name says: bad magic number, truncated, or inconsistent."""


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as fh:
        head = fh.read(2)
    if head == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as fh:
                return fh.read()
        except (OSError, EOFError) as exc:
            raise DataFormatError(f"{path}: corrupt or truncated gzip file ({exc})") from exc
    return path.read_bytes()


def read_idx(path: str | Path, expected_ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into an array of its declared shape and dtype."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataFormatError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    zero1, zero2, dtype_code, ndim = raw[:4]
    if zero1 or zero2 or dtype_code not in _IDX_DTYPES or ndim == 0:
        raise DataFormatError(
            f"{path}: bad IDX magic number 0x{raw[:4].hex()} "
            "(expected 0x0000 then a dtype code and a dimension count, e.g. 0x00000803)"
        )
    if expected_ndim is not None and ndim != expected_ndim:
        raise DataFormatError(f"{path}: expected {expected_ndim} dimensions, header says {ndim}")
    header_end = 4 + 4 * ndim
    if len(raw) < header_end:
        raise DataFormatError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[dtype_code]
    expected = math.prod(shape) * dtype.itemsize
    body = len(raw) - header_end
    if body != expected:
        kind = "truncated" if body < expected else "has trailing bytes"
        raise DataFormatError(
            f"{path}: {kind}: header shape {shape} needs {expected} data bytes, file has {body}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_end).reshape(shape)
    return data.astype(dtype.newbyteorder("="))  # a writable, native-order copy


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch → (images N x 3 x 32 x 32 uint8, labels N int64)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DataFormatError(f"{path}: not a readable CIFAR-10 batch ({exc})") from exc
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataFormatError(f"{path}: CIFAR-10 batch must be a dict with b'data' and b'labels'")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataFormatError(f"{path}: data must be N x 3072, got shape {data.shape}")
    if len(labels) != len(data):
        raise DataFormatError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32), labels
