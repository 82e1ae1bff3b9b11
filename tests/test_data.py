"""Data loading: formats, corrupt files, search order, download (against a local server), batches."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import pickle
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import idx_bytes, write_idx_dataset

from advanced_optimizers.bench.data import (
    DataFormatError,
    DataNotFoundError,
    load_dataset,
    read_cifar_batch,
    read_idx,
    sources,
)
from advanced_optimizers.bench.data.sources import CATALOG, DatasetFiles


def test_read_idx_roundtrip(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    plain = tmp_path / "a-idx3-ubyte"
    plain.write_bytes(idx_bytes(array))
    zipped = tmp_path / "a-idx3-ubyte.gz"
    zipped.write_bytes(gzip.compress(idx_bytes(array)))
    np.testing.assert_array_equal(read_idx(plain), array)
    np.testing.assert_array_equal(read_idx(zipped), array)
    assert read_idx(zipped).flags.writeable


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b"\x08\x08" + b[2:], "magic"),
        (lambda b: b[:-5], "truncated"),
        (lambda b: b + b"\x00", "trailing"),
        (lambda b: b[:6], "truncated IDX header"),
        (lambda b: b[:2], "too short"),
    ],
)
def test_read_idx_rejects_corrupt(tmp_path: Path, mutate, message: str) -> None:
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(mutate(idx_bytes(np.zeros((2, 3, 4), np.uint8))))
    with pytest.raises(DataFormatError, match=message):
        read_idx(path)


def test_truncated_gzip_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "x-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(100, np.uint8)))[:-12])
    with pytest.raises(DataFormatError, match="gzip"):
        read_idx(path)


def test_load_from_explicit_dir(idx_dir: Path) -> None:
    ds = load_dataset(
        "mnist", data_dir=idx_dir, download_ok=False, progress=False, check_sums=False
    )
    assert ds.x_train.shape == (200, 1, 28, 28) and ds.x_test.shape == (100, 1, 28, 28)
    assert ds.y_train.dtype == torch.int64
    assert abs(ds.x_train.mean().item()) < 1e-4  # standardised by the training set


def test_env_var_is_used(idx_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADVOPT_DATA_DIR", str(idx_dir))
    assert (
        load_dataset("fashion-mnist", download_ok=False, progress=False, check_sums=False).n_train
        == 200
    )


def test_usual_layout_is_found(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path / "FashionMNIST" / "raw", n_train=50, n_test=20)
    ds = load_dataset(
        "fashion-mnist", data_dir=tmp_path, download_ok=False, progress=False, check_sums=False
    )
    assert (ds.n_train, ds.n_test) == (50, 20)


def test_label_count_mismatch(tmp_path: Path) -> None:
    root = write_idx_dataset(tmp_path, n_train=20, n_test=10)
    (root / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros(19, np.uint8)))
    )
    with pytest.raises(DataFormatError, match="20 images but 19 labels"):
        load_dataset(
            "fashion-mnist", data_dir=root, download_ok=False, progress=False, check_sums=False
        )


def test_checksum_mismatch_of_known_file(tmp_path: Path) -> None:
    # toy files under MNIST's official names: their SHA-256 is not the official one
    root = write_idx_dataset(tmp_path / "MNIST" / "raw")
    with pytest.raises(DataFormatError, match="SHA-256 mismatch"):
        sources.verify(
            root / "train-images-idx3-ubyte.gz",
            CATALOG["mnist"].sha256["train-images-idx3-ubyte.gz"],
        )


def test_recompressed_and_uncompressed_copies_pass_by_content(tmp_path: Path) -> None:
    official = sources.BUNDLED_DIR / "mnist" / "t10k-labels-idx1-ubyte.gz"
    accepted = CATALOG["mnist"].sha256["t10k-labels-idx1-ubyte.gz"]
    content = gzip.decompress(official.read_bytes())
    plain = tmp_path / "t10k-labels-idx1-ubyte"
    plain.write_bytes(content)
    again = tmp_path / "t10k-labels-idx1-ubyte.gz"
    again.write_bytes(gzip.compress(content, compresslevel=1, mtime=0))  # other bytes, same data
    assert _sha(again) != _sha(official)
    sources.verify(plain, accepted)
    sources.verify(again, accepted)
    plain.write_bytes(content[:-1] + bytes([content[-1] ^ 1]))  # one label changed
    with pytest.raises(DataFormatError, match="SHA-256 mismatch"):
        sources.verify(plain, accepted)


def test_bundled_mnist_is_real_and_verified() -> None:
    spec = CATALOG["mnist"]
    for name in spec.files:
        sources.verify(sources.BUNDLED_DIR / "mnist" / name, spec.sha256[name])
    labels = read_idx(sources.BUNDLED_DIR / "mnist" / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10_000,) and labels[:5].tolist() == [7, 2, 1, 0, 4]


def test_not_found_offline_names_files_and_places(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as info:
        load_dataset(
            "cifar10",
            data_dir=tmp_path / "empty",
            download_ok=False,
            progress=False,
            check_sums=False,
        )
    text = str(info.value)
    assert "data_batch_1" in text and "test_batch" in text and str(tmp_path) in text


def _cifar_batch(n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return pickle.dumps(
        {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, n).tolist(),
        }
    )


def _write_cifar(directory: Path, n: int = 8) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        (directory / f"data_batch_{i}").write_bytes(_cifar_batch(n, i))
    (directory / "test_batch").write_bytes(_cifar_batch(n, 9))


def test_cifar_batches(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "cifar-10-batches-py")
    ds = load_dataset(
        "cifar10", data_dir=tmp_path, download_ok=False, progress=False, check_sums=False
    )
    assert ds.x_train.shape == (40, 3, 32, 32) and ds.input_shape == (3, 32, 32)


def test_cifar_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}))
    with pytest.raises(DataFormatError, match="3072"):
        read_cifar_batch(path)
    path.write_bytes(b"not a pickle")
    with pytest.raises(DataFormatError):
        read_cifar_batch(path)


class _Server:
    """A loopback HTTP server serving a directory (the download tests' 'mirror')."""

    def __init__(self, directory: Path) -> None:
        handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(  # noqa: E731
            *a, directory=str(directory), **k
        )
        http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_idx_verifies_and_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = write_idx_dataset(tmp_path / "mirror")
    with _Server(mirror) as url:
        spec = DatasetFiles(
            "fashion-mnist",
            CATALOG["fashion-mnist"].files,
            {n: (_sha(mirror / n),) for n in CATALOG["fashion-mnist"].files},
            (url,),
            ("",),
        )
        monkeypatch.setitem(CATALOG, "fashion-mnist", spec)
        target = tmp_path / "target"
        ds = load_dataset("fashion-mnist", data_dir=target, progress=False)
    assert ds.n_train == 200
    assert sorted(p.name for p in target.iterdir()) == sorted(spec.files)  # no temp files left


def test_download_checksum_mismatch_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = write_idx_dataset(tmp_path / "mirror")
    with _Server(mirror) as url:
        spec = DatasetFiles(
            "fashion-mnist",
            CATALOG["fashion-mnist"].files,
            {n: ("0" * 64,) for n in CATALOG["fashion-mnist"].files},
            (url,),
            ("",),
        )
        monkeypatch.setitem(CATALOG, "fashion-mnist", spec)
        target = tmp_path / "target"
        with pytest.raises(DataNotFoundError, match="SHA-256 mismatch"):
            load_dataset("fashion-mnist", data_dir=target, progress=False)
    assert list(target.iterdir()) == []


def test_download_unreachable_mirror_is_clear(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = DatasetFiles(
        "fashion-mnist", CATALOG["fashion-mnist"].files, {}, ("http://127.0.0.1:9/",), ("",)
    )
    monkeypatch.setitem(CATALOG, "fashion-mnist", spec)
    with pytest.raises(DataNotFoundError, match=r"train-images-idx3-ubyte\.gz"):
        load_dataset("fashion-mnist", data_dir=tmp_path / "t", progress=False)


def test_download_cifar_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_cifar(tmp_path / "src" / "cifar-10-batches-py")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    (mirror / "cifar-10-python.tar.gz").write_bytes(buffer.getvalue())
    base = CATALOG["cifar10"]
    with _Server(mirror) as url:
        spec = DatasetFiles(
            "cifar10",
            base.files,
            {"cifar-10-python.tar.gz": (_sha(mirror / "cifar-10-python.tar.gz"),)},
            (url,),
            base.subdirs,
            base.archive,
            base.archive_dir,
        )
        monkeypatch.setitem(CATALOG, "cifar10", spec)
        ds = load_dataset("cifar10", data_dir=tmp_path / "data", progress=False)
    assert ds.n_train == 40
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["cifar-10-batches-py"]


def test_batches_cover_each_sample_once_with_indices(toy) -> None:
    seen = []
    for batch in toy.train_batches(batch_size=50, seed=3, epoch=2):
        assert torch.equal(batch.x, toy.x_train[batch.index])
        assert torch.equal(batch.y, toy.y_train[batch.index])
        seen.append(batch.index)
    assert sorted(torch.cat(seen).tolist()) == list(range(toy.n_train))


def test_epoch_order_depends_on_seed_and_epoch_only(toy) -> None:
    assert torch.equal(toy.epoch_order(1, 2), toy.epoch_order(1, 2))
    assert not torch.equal(toy.epoch_order(1, 2), toy.epoch_order(1, 3))
    assert not torch.equal(toy.epoch_order(1, 2), toy.epoch_order(2, 2))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="name must be one of"):
        load_dataset("imagenet")


# -- CIFAR-10 batches are pickles: verified by SHA-256 and read by a restricted unpickler ----------


class _RunsCode:
    """A pickle that, loaded by plain ``pickle.load``, runs a shell command (creates a marker)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _planted_batch(marker: Path) -> bytes:
    return pickle.dumps({b"data": _RunsCode(marker), b"labels": [0]})


def _write_manifest(directory: Path, archive_sha: str | None = None) -> None:
    """The manifest ``advopt`` writes when it extracts the verified official archive."""
    official = CATALOG["cifar10"].sha256["cifar-10-python.tar.gz"][0]
    sources.write_manifest(directory, "cifar-10-python.tar.gz", archive_sha or official)


@pytest.mark.parametrize("protocol", [2, 4, pickle.HIGHEST_PROTOCOL])
def test_cifar_planted_pickle_is_refused_without_running_it(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _RunsCode(marker), b"labels": [0]}, protocol=protocol))
    with pytest.raises(DataFormatError, match=r"data_batch_1: refused to unpickle posix\.system"):
        read_cifar_batch(path)
    assert not marker.exists()


@pytest.mark.parametrize("with_manifest", [False, True], ids=["no-manifest", "forged-manifest"])
@pytest.mark.parametrize("check_sums", [True, False], ids=["checked", "trusted"])
def test_cifar_planted_directory_never_runs_code(
    tmp_path: Path, with_manifest: bool, check_sums: bool
) -> None:
    """Planted under --data-dir: refused for lacking a manifest, or (a manifest forged with the
    planted files' sums, or the user trusting the files) by the restricted unpickler."""
    marker = tmp_path / "pwned"
    directory = tmp_path / "data" / "cifar-10-batches-py"
    _write_cifar(directory)
    (directory / "data_batch_1").write_bytes(_planted_batch(marker))
    if with_manifest:
        _write_manifest(directory)
    with pytest.raises(DataFormatError) as info:
        load_dataset(
            "cifar10",
            data_dir=tmp_path / "data",
            download_ok=False,
            progress=False,
            check_sums=check_sums,
        )
    assert not marker.exists()
    text = str(info.value)
    assert str(directory) in text
    if check_sums and not with_manifest:
        assert "advopt-manifest.json" in text and "--trust-local-data" in text
    else:
        assert "refused to unpickle" in text


def test_cifar_files_with_accepted_sums_load(tmp_path: Path) -> None:
    directory = tmp_path / "cifar-10-batches-py"
    _write_cifar(directory)
    _write_manifest(directory)
    ds = load_dataset("cifar10", data_dir=tmp_path, download_ok=False, progress=False)
    assert ds.x_train.shape == (40, 3, 32, 32) and ds.n_test == 8
    images, labels = read_cifar_batch(directory / "test_batch", _sha(directory / "test_batch"))
    assert images.shape == (8, 3, 32, 32) and labels.dtype == np.int64


def test_cifar_file_changed_after_verification_is_not_read(tmp_path: Path) -> None:
    directory = tmp_path / "cifar-10-batches-py"
    _write_cifar(directory)
    _write_manifest(directory)
    (directory / "test_batch").write_bytes(_cifar_batch(8, 99))
    with pytest.raises(DataFormatError, match=r"test_batch: SHA-256 mismatch"):
        load_dataset("cifar10", data_dir=tmp_path, download_ok=False, progress=False)
    with pytest.raises(DataFormatError, match="SHA-256 mismatch"):
        read_cifar_batch(directory / "test_batch", "0" * 64)


@pytest.mark.parametrize(
    "problem, archive_sha, match",
    [
        ("not from the official archive", "f" * 64, "does not come from the official"),
        ("damaged", None, "is damaged"),
    ],
)
def test_cifar_manifest_must_come_from_the_official_archive(
    tmp_path: Path, problem: str, archive_sha: str | None, match: str
) -> None:
    directory = tmp_path / "cifar-10-batches-py"
    _write_cifar(directory)
    _write_manifest(directory, archive_sha)
    if problem == "damaged":
        (directory / "advopt-manifest.json").write_text("{")
    with pytest.raises(DataFormatError, match=match):
        load_dataset("cifar10", data_dir=tmp_path, download_ok=False, progress=False)


def test_cifar_download_writes_a_manifest_of_the_extracted_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_cifar(tmp_path / "src" / "cifar-10-batches-py")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    (mirror / "cifar-10-python.tar.gz").write_bytes(buffer.getvalue())
    archive_sha = _sha(mirror / "cifar-10-python.tar.gz")
    base = CATALOG["cifar10"]
    with _Server(mirror) as url:
        spec = DatasetFiles(
            "cifar10",
            base.files,
            {"cifar-10-python.tar.gz": (archive_sha,)},
            (url,),
            base.subdirs,
            base.archive,
            base.archive_dir,
        )
        monkeypatch.setitem(CATALOG, "cifar10", spec)
        load_dataset("cifar10", data_dir=tmp_path / "data", progress=False)
    directory = tmp_path / "data" / "cifar-10-batches-py"
    manifest = json.loads((directory / "advopt-manifest.json").read_text())
    assert manifest["archive_sha256"] == archive_sha
    assert manifest["files"]["data_batch_3"] == _sha(directory / "data_batch_3")
    assert not list(directory.glob("*.tmp"))
