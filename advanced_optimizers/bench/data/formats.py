"""Readers for the two on-disk formats, with clear errors for corrupt files.

* IDX (MNIST, Fashion-MNIST): big-endian header ``0x00 0x00 <dtype> <ndim>``, ``ndim`` uint32 sizes,
  then the row-major data; plain or gzip-compressed.
* CIFAR-10 python batches (``cifar-10-batches-py``): pickled dicts with ``data`` (N x 3072 uint8,
  channel-major) and ``labels``. They are pickles, as the dataset ships them, and ``pickle.load`` on
  a planted file runs whatever code it names. So :func:`read_cifar_batch` (1) reads the file once
  into memory and, when given the accepted SHA-256 sums, refuses it unless those very bytes match
  (no window between the check and the read), and (2) unpickles with :class:`CifarUnpickler`,
  whose ``find_class`` admits only what a CIFAR batch contains — numpy array reconstruction
  (``numpy[._]core.multiarray._reconstruct``, ``numpy[._]core.numeric._frombuffer``,
  ``numpy.ndarray``, ``numpy.dtype``) and ``_codecs.encode`` (bytes in protocol-2 pickles); dicts,
  lists, strings, bytes and numbers need no lookup. Anything else (``os.system``, ``eval``, …) is
  refused with :class:`UnsafePickleError` before it can be called.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import math
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CifarUnpickler",
    "DataFormatError",
    "UnsafePickleError",
    "read_cifar_batch",
    "read_idx",
    "sha256_of",
]

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


class UnsafePickleError(DataFormatError):
    """A pickle names something a CIFAR-10 batch never contains; it was not loaded."""


def _cifar_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR-10 batch pickle may name, under numpy 1.x and 2.x module names."""
    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class CifarUnpickler(pickle.Unpickler):
    """An unpickler for CIFAR-10 batches that can build arrays, dicts and lists, and nothing else.

    ``find_class`` is the only way a pickle reaches a callable; this one returns only the numpy
    array constructors (see the module docstring) and raises :class:`UnsafePickleError`, naming
    the file and the refused global, for anything else.
    """

    def __init__(self, file: io.BufferedIOBase, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self.path = path
        self.allowed = _cifar_globals()

    def find_class(self, module: str, name: str) -> Any:
        found = self.allowed.get((module, name))
        if found is None:
            raise UnsafePickleError(
                f"{self.path}: refused to unpickle {module}.{name}: a CIFAR-10 batch holds only "
                "arrays, lists and dicts, so this file is not one (a planted pickle would run code "
                "this way); nothing in it was executed — delete it and get the official "
                "cifar-10-python.tar.gz (advopt data --dataset cifar10)"
            )
        return found


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


def read_cifar_batch(
    path: str | Path, sha256: str | Iterable[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch → (images N x 3 x 32 x 32 uint8, labels N int64).

    ``sha256``: the accepted SHA-256 sum(s) of the file; the bytes read are checked before they are
    unpickled (``None``: not checked — the restricted unpickler still refuses anything but arrays).
    """
    path = Path(path)
    raw = path.read_bytes()
    if sha256 is not None:
        accepted = (sha256,) if isinstance(sha256, str) else tuple(sha256)
        actual = hashlib.sha256(raw).hexdigest()
        if actual not in accepted:
            raise DataFormatError(
                f"{path}: SHA-256 mismatch (expected {' or '.join(accepted)}, got {actual}); the "
                "file changed since it was verified and was not read — delete its directory and "
                "let advopt download and verify the archive again"
            )
    try:
        batch = CifarUnpickler(io.BytesIO(raw), path).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as exc:
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
