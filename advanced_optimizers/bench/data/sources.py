"""Where each dataset's files come from: local directories first, then the bundled copy, then the web.

Search order for a dataset's files:

1. an explicit directory (``data_dir`` argument, ``--data-dir``, or ``$ADVOPT_DATA_DIR``), searched
   with the usual layouts below it;
2. the usual local layouts under ``./data`` and ``~/.cache/advanced_optimizers``: ``<root>``,
   ``<root>/<name>``, ``<root>/MNIST/raw``, ``<root>/FashionMNIST/raw``, ``<root>/cifar-10-batches-py``,
   and ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``);
3. the copy bundled with this package (real MNIST, checked against its SHA-256 sums);
4. a download from the official mirrors, with a progress bar and SHA-256 verification, into the
   explicit directory or the cache. The file is written to a temporary name and renamed only once
   verified, so a failed or interrupted download leaves nothing half-written.

Every local file is checked against a SHA-256 sum before it is read (``check_sums=False``, the CLI's
``--trust-local-data``, skips that for your own copies). For MNIST and Fashion-MNIST the catalog holds
the official sums of the files themselves.

CIFAR-10 is distributed as one archive, ``cifar-10-python.tar.gz``, whose official SHA-256 the catalog
holds; no authoritative SHA-256 of the extracted ``cifar-10-batches-py`` files could be found (the
dataset's page and torchvision publish MD5 sums only), so none is typed in here. Instead:

* the archive is verified against the catalog when downloaded, and at extraction the SHA-256 of
  every extracted file is recorded in a manifest, ``advopt-manifest.json``, written atomically
  beside them (it also records the archive's verified sum), before the directory is moved into
  place — the files and their manifest appear together or not at all;
* a ``cifar-10-batches-py`` directory is read only if it has such a manifest, whose archive sum is
  the official one and which covers every batch; each batch's bytes are then checked against it as
  they are read. A directory without one (unpacked by hand, by torchvision, or planted) is refused
  with a message saying how to get a verified copy, unless the user opts in with
  ``--trust-local-data`` / ``check_sums=False``.

The manifest guards against corrupt, partial or substituted data, not against an attacker who can
write to the data directory (who could write a manifest too). What stops a planted batch from
running code is the reader: batches are unpickled by a restricted unpickler that can only build
numpy arrays, lists and dicts (:class:`~.formats.CifarUnpickler`), with or without a manifest.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .formats import DataFormatError, sha256_of

__all__ = [
    "BUNDLED_DIR",
    "CATALOG",
    "MANIFEST",
    "DataNotFoundError",
    "DatasetFiles",
    "accepted_sums",
    "candidate_dirs",
    "download_file",
    "locate",
    "write_manifest",
]

BUNDLED_DIR = Path(__file__).parent / "_bundled"
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
MANIFEST = "advopt-manifest.json"


class DataNotFoundError(FileNotFoundError):
    """The dataset's files are not on this machine and could not be downloaded."""


@dataclass(frozen=True)
class DatasetFiles:
    """The files a dataset needs, their SHA-256 sums and where to download them."""

    name: str
    files: tuple[str, ...]
    sha256: dict[
        str, tuple[str, ...]
    ]  # accepted SHA-256 of the file or of its decompressed content
    mirrors: tuple[str, ...]
    subdirs: tuple[str, ...]
    archive: str | None = None  # downloaded as one archive that unpacks into `archive_dir`
    archive_dir: str | None = None


_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

CATALOG: dict[str, DatasetFiles] = {
    "mnist": DatasetFiles(
        name="mnist",
        files=_IDX_FILES,
        sha256={
            "train-images-idx3-ubyte.gz": (
                "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            ),
            "train-labels-idx1-ubyte.gz": (
                "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203",
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            ),
            "t10k-images-idx3-ubyte.gz": (
                "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be",
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            ),
            "t10k-labels-idx1-ubyte.gz": (
                "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b",
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            ),
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://yann.lecun.com/exdb/mnist/",
        ),
        subdirs=("", "mnist", "MNIST/raw"),
    ),
    "fashion-mnist": DatasetFiles(
        name="fashion-mnist",
        files=_IDX_FILES,
        sha256={
            "train-images-idx3-ubyte.gz": (
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            ),
            "train-labels-idx1-ubyte.gz": (
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            ),
            "t10k-images-idx3-ubyte.gz": (
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            ),
            "t10k-labels-idx1-ubyte.gz": (
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            ),
        },
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        subdirs=("", "fashion-mnist", "FashionMNIST/raw"),
    ),
    "cifar10": DatasetFiles(
        name="cifar10",
        files=(
            "data_batch_1",
            "data_batch_2",
            "data_batch_3",
            "data_batch_4",
            "data_batch_5",
            "test_batch",
        ),
        sha256={
            "cifar-10-python.tar.gz": (
                "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
            ),
        },
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        subdirs=("cifar-10-batches-py", "cifar10/cifar-10-batches-py", ""),
        archive="cifar-10-python.tar.gz",
        archive_dir="cifar-10-batches-py",
    ),
}


def default_roots() -> list[Path]:
    return [Path.cwd() / "data", Path.home() / ".cache" / "advanced_optimizers"]


def explicit_root(data_dir: str | os.PathLike | None) -> Path | None:
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get("ADVOPT_DATA_DIR")
    return Path(env).expanduser() if env else None


def candidate_dirs(spec: DatasetFiles, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Directories searched for ``spec``'s files, in order (the bundled copy last)."""
    root = explicit_root(data_dir)
    roots = [root] if root is not None else default_roots()
    dirs = [r / sub if sub else r for r in roots for sub in spec.subdirs]
    if spec.name == "fashion-mnist" and root is None:
        dirs.append(DEBIAN_FASHION_DIR)
    if spec.name == "mnist":
        dirs.append(BUNDLED_DIR / "mnist")
    return dirs


def _find_file(directory: Path, name: str) -> Path | None:
    """``name`` in ``directory``, also accepting the uncompressed form of a ``.gz`` name."""
    for candidate in (name, name.removesuffix(".gz")):
        path = directory / candidate
        if path.is_file():
            return path
    return None


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def gunzipped_sha256(path: Path) -> str:
    """SHA-256 of a gzip file's decompressed content."""
    digest = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
    except (OSError, EOFError) as exc:
        raise DataFormatError(f"{path}: corrupt or truncated gzip file ({exc})") from exc
    return digest.hexdigest()


def verify(path: Path, accepted: tuple[str, ...] | None) -> None:
    """Raise unless the SHA-256 of ``path`` (or of its decompressed content) is ``accepted``.

    Accepting the content's sum as well as the archive's lets re-compressed copies (Debian's) and
    uncompressed copies of the official files pass, while any change to the data fails.
    """
    if not accepted:
        return
    actual = sha256_of(path)
    if actual in accepted:
        return
    if _is_gzip(path):
        actual = gunzipped_sha256(path)
    if actual not in accepted:
        raise DataFormatError(
            f"{path}: SHA-256 mismatch (expected one of {', '.join(accepted)}, got {actual}); the "
            "file is corrupt or not the official one — delete it and let it be downloaded again"
        )


def write_manifest(directory: Path, archive: str, archive_sha256: str) -> Path:
    """Record the SHA-256 of every file in ``directory`` (extracted from the verified ``archive``)."""
    from ..atomic import write_json

    files = {
        path.name: sha256_of(path)
        for path in sorted(directory.iterdir())
        if path.is_file() and path.name != MANIFEST
    }
    record = {"format": 1, "archive": archive, "archive_sha256": archive_sha256, "files": files}
    return write_json(directory / MANIFEST, record)


def _unverified(spec: DatasetFiles, directory: Path, problem: str) -> DataFormatError:
    return DataFormatError(
        f"{directory}: {problem}, so these {spec.name} files were not read (they are pickles: a "
        f"planted one could run code). Move or delete {directory} and let advopt download and "
        f"verify {spec.archive} (advopt data --dataset {spec.name} [--data-dir DIR]); or, if you "
        "trust these files, pass --trust-local-data (check_sums=False) — they are then still "
        "read by a restricted unpickler"
    )


def _manifest_sums(spec: DatasetFiles, directory: Path) -> dict[str, tuple[str, ...]]:
    path = directory / MANIFEST
    if not path.is_file():
        raise _unverified(
            spec, directory, f"no {MANIFEST} (written when advopt extracts the archive)"
        )
    try:
        record = json.loads(path.read_text())
        files = record["files"]
        archive_sum = record["archive_sha256"]
        if not isinstance(files, dict):
            raise TypeError("files is not an object")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _unverified(
            spec, directory, f"{MANIFEST} is damaged ({type(exc).__name__})"
        ) from None
    if archive_sum not in spec.sha256.get(spec.archive or "", ()):
        raise _unverified(
            spec, directory, f"{MANIFEST} does not come from the official {spec.archive}"
        )
    missing = [name for name in spec.files if not isinstance(files.get(name), str)]
    if missing:
        raise _unverified(spec, directory, f"{MANIFEST} has no sum for {', '.join(missing)}")
    return {name: (value,) for name, value in files.items() if isinstance(value, str)}


def accepted_sums(
    spec: DatasetFiles, directory: Path, check_sums: bool = True
) -> dict[str, tuple[str, ...]]:
    """The accepted SHA-256 sums of ``spec``'s files in ``directory`` (``{}`` = nothing checked).

    From the catalog, or, for a dataset shipped as an archive (CIFAR-10), from the manifest written
    when advopt extracted the verified archive; a missing or foreign manifest is a
    :class:`DataFormatError` saying what to do.
    """
    if not check_sums:
        return {}
    if spec.archive is not None:
        return _manifest_sums(spec, directory)
    return spec.sha256


def locate(
    spec: DatasetFiles, data_dir: str | os.PathLike | None = None, check_sums: bool = True
) -> dict[str, Path] | None:
    """The first directory holding all of ``spec.files`` (SHA-256 checked); ``None`` if none."""
    for directory in candidate_dirs(spec, data_dir):
        found = {name: _find_file(directory, name) for name in spec.files}
        if all(found.values()):
            sums = accepted_sums(spec, directory, check_sums)
            for name, path in found.items():
                verify(path, sums.get(name))
            return found  # type: ignore[return-value]
    return None


def download_file(
    url: str,
    target: Path,
    accepted: tuple[str, ...] | None,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Download ``url`` to ``target`` atomically; verify the SHA-256 before the final rename."""
    from tqdm.auto import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=target.name, disable=not progress
            ) as bar:
                while block := resp.read(1 << 16):
                    out.write(block)
                    bar.update(len(block))
        try:
            verify(tmp, accepted)
        except DataFormatError as exc:
            raise DataFormatError(f"{url}: {exc}") from None
        os.replace(tmp, target)
        return target
    finally:
        tmp.unlink(missing_ok=True)


def _download_from_mirrors(name: str, spec: DatasetFiles, target_dir: Path, progress: bool) -> None:
    errors = []
    for mirror in spec.mirrors:
        try:
            download_file(mirror + name, target_dir / name, spec.sha256.get(name), progress)
            return
        except (urllib.error.URLError, OSError, DataFormatError) as exc:
            errors.append(f"{mirror}{name}: {exc}")
    raise DataNotFoundError("download failed:\n  " + "\n  ".join(errors))


def _safe_extract(archive: Path, into: Path) -> None:
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")


def download(spec: DatasetFiles, data_dir: str | os.PathLike | None, progress: bool = True) -> Path:
    """Download ``spec`` into the explicit directory (or the cache); return the directory of files."""
    root = explicit_root(data_dir) or default_roots()[1]
    if spec.archive is None:
        target = root if explicit_root(data_dir) else root / spec.name
        for name in spec.files:
            if _find_file(target, name) is None:
                _download_from_mirrors(name, spec, target, progress)
        return target
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=_mkdir(root)))
    try:
        _download_from_mirrors(spec.archive, spec, staging, progress)  # SHA-256 verified
        archive_sum = sha256_of(staging / spec.archive)
        _safe_extract(staging / spec.archive, staging)
        write_manifest(staging / spec.archive_dir, spec.archive, archive_sum)
        final = root / spec.archive_dir
        if not final.exists():
            os.replace(staging / spec.archive_dir, final)
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def not_found_message(spec: DatasetFiles, searched: Iterable[Path], reason: str) -> str:
    where = "\n  ".join(str(p) for p in searched)
    files = ", ".join((spec.archive and [spec.archive]) or spec.files)
    return (
        f"dataset {spec.name!r} not found ({reason}).\n"
        f"It needs the files: {', '.join(spec.files)}.\n"
        f"Searched:\n  {where}\n"
        f"Put them in one of those directories (or pass --data-dir / set ADVOPT_DATA_DIR), "
        f"or allow a download of {files} from {', '.join(spec.mirrors)}."
    )
