"""Bad input to ``advopt compare``: one clear error line, before any training, nothing changed.

Each table row is a mistake a user can make (an argument out of range, results of another experiment
in ``--out``, a damaged run file or checkpoint, an output directory that cannot be written, a second
``compare`` on the same directory). Every row must end in exit code 2 with exactly one
``advopt compare: error: ...`` line that names the argument or file, and ``train_run`` must never be
called; where an output directory existed, its files must be byte-for-byte unchanged.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from advanced_optimizers.bench import compare as compare_mod
from advanced_optimizers.bench.cli import build_parser, main
from advanced_optimizers.bench.data import load_dataset

ROOT = Path(__file__).resolve().parents[1]
LEGACY = ROOT / "results" / "mnist-mlp-full"  # committed before runs recorded their fingerprint

TINY = [
    "--methods",
    "sgd",
    "--seeds",
    "1",
    "--epochs",
    "1",
    "--n-train",
    "256",
    "--n-test",
    "128",
    "--width",
    "16",
    "--no-progress",
]

_DATA_CACHE: dict[tuple, object] = {}


def _cached_load(name, data_dir=None, download_ok=True, progress=True, check_sums=True):
    key = (name, data_dir, check_sums)
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = load_dataset(name, data_dir, download_ok, progress, check_sums)
    return _DATA_CACHE[key]


@pytest.fixture(autouse=True)
def _fast_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compare_mod, "load_dataset", _cached_load)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An output directory holding one finished tiny run (sgd, seed 0, 1 epoch)."""
    out = tmp_path_factory.mktemp("finished") / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compare_mod, "load_dataset", _cached_load)
        assert main(["compare", *TINY, "--out", str(out)]) == 0
    return out


@pytest.fixture
def out(finished: Path, tmp_path: Path) -> Path:
    """A private copy of ``finished``."""
    copy = tmp_path / "out"
    shutil.copytree(finished, copy)
    return copy


class _Trained(AssertionError):
    pass


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise _Trained("train_run was called: the error came after training started")

    monkeypatch.setattr(compare_mod, "train_run", refuse)


def _snapshot(directory: Path) -> dict[str, bytes]:
    if not directory.is_dir():
        return {}
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def _refused(
    args: list[str], capsys: pytest.CaptureFixture, *needles: str, directory: Path | None = None
) -> str:
    """Run ``advopt compare args``; assert one error line containing every needle; return it."""
    before = _snapshot(directory) if directory is not None else None
    capsys.readouterr()
    code = main(["compare", *args])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("advopt compare: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    if directory is not None:
        assert _snapshot(directory) == before, "the output directory was changed"
    return lines[0]


# -- item 3: values out of range are refused at parse time ----------------------------------------

OUT_OF_RANGE = [
    ("--momentum", "5", "[0, 1)"),
    ("--momentum", "1", "[0, 1)"),
    ("--momentum", "-0.1", "[0, 1)"),
    ("--momentum", "nan", "finite"),
    ("--weight-decay", "-1", ">= 0"),
    ("--weight-decay", "inf", "finite"),
    ("--lr", "0", "> 0"),
    ("--lr", "-0.01", "> 0"),
    ("--lr", "nan", "finite"),
    ("--lr", "inf", "finite"),
    ("--lr", "fast", "number"),
    ("--device", "tpu", "auto, cpu, cuda, mps"),
]


@pytest.mark.parametrize("flag, value, allowed", OUT_OF_RANGE)
def test_out_of_range_values_are_refused_at_parse_time(
    flag: str, value: str, allowed: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["compare", flag, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: " in err and value in err and allowed in err, err


def test_in_range_edge_values_are_accepted() -> None:
    args = build_parser().parse_args(
        ["compare", "--momentum", "0", "--weight-decay", "0", "--lr", "1e-9"]
    )
    assert (args.momentum, args.weight_decay, args.lr) == (0.0, 0.0, 1e-9)


@pytest.mark.parametrize(
    "flag, value, size",
    # the quick preset's 2000-image validation split leaves 58000 of MNIST's 60000 for training
    [
        ("--n-train", "70000", "58000"),
        ("--n-test", "10001", "10000"),
        ("--validation", "60000", "60000"),
    ],
)
def test_more_samples_than_the_dataset_has_are_refused(
    flag: str, value: str, size: str, tmp_path: Path, capsys: pytest.CaptureFixture, no_training
) -> None:
    args = [a for a in TINY] + [flag, value, "--out", str(tmp_path / "out")]
    _refused(args, capsys, flag, value, size, "mnist")
    assert not (tmp_path / "out").exists()  # nothing left behind


# -- item 2: results of another experiment are never reused ---------------------------------------

OTHER_EXPERIMENT = [
    (["--n-train", "200"], "n_train: saved 256, now 200"),
    (["--n-test", "100"], "n_test: saved 128, now 100"),
    (["--arch", "cnn"], "arch: saved 'mlp', now 'cnn'"),
    (["--width", "32"], "width: saved 16, now 32"),
    (["--depth", "2"], "depth: saved None, now 2"),
    (["--epochs", "2"], "epochs: saved 1, now 2"),
    (["--batch-size", "64"], "batch_size: saved 128, now 64"),
    (["--lr", "0.1"], "lr: saved None, now 0.1"),
    (["--momentum", "0.5"], "momentum: saved 0.9, now 0.5"),
    (["--weight-decay", "0.001"], "weight_decay: saved 0.0, now 0.001"),
    (["--schedule", "cosine"], "schedule: saved 'constant', now 'cosine'"),
    (["--dataset", "fashion-mnist"], "dataset: saved 'mnist', now 'fashion-mnist'"),
    (["--validation", "1000"], "validation: saved 2000, now 1000"),
]


@pytest.mark.parametrize(
    "change, difference", OTHER_EXPERIMENT, ids=[c[0][0] for c in OTHER_EXPERIMENT]
)
def test_results_of_another_experiment_are_not_reused(
    change: list[str], difference: str, out: Path, capsys: pytest.CaptureFixture, no_training
) -> None:
    args = [*TINY, *change, "--out", str(out)]  # argparse: the later value wins
    _refused(args, capsys, difference, "pass another --out or delete", directory=out)


def test_checkpoint_of_another_experiment_is_not_resumed(
    out: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A killed run's checkpoint (experiment.json gone too) is refused under other settings."""
    real = compare_mod.train_run

    def killed_after_epoch_one(config, dataset, checkpoint=None, on_epoch=None, **kwargs):
        def hook(record):
            raise KeyboardInterrupt

        return real(config, dataset, checkpoint=checkpoint, on_epoch=hook, **kwargs)

    shutil.rmtree(out)
    monkeypatch.setattr(compare_mod, "train_run", killed_after_epoch_one)
    with pytest.raises(KeyboardInterrupt):
        main(["compare", *TINY, "--epochs", "2", "--out", str(out)])
    ckpt = out / "runs" / "sgd" / "seed0.ckpt"
    assert ckpt.exists()
    (out / "experiment.json").unlink()
    monkeypatch.setattr(compare_mod, "train_run", _refuse_training)
    args = [*TINY, "--epochs", "2", "--n-train", "200", "--out", str(out)]
    _refused(args, capsys, f"checkpoint {ckpt}", "n_train: saved 256, now 200", directory=out)


def _refuse_training(*args, **kwargs):
    raise _Trained("train_run was called")


def test_experiment_json_is_compared_and_the_grid_may_grow(
    out: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same settings, more methods: the finished run is reused, experiment.json lists the union."""
    trained = []
    real = compare_mod.train_run
    monkeypatch.setattr(
        compare_mod,
        "train_run",
        lambda config, *a, **k: trained.append(config) or real(config, *a, **k),
    )
    assert main(["compare", *TINY, "--methods", "adam", "--out", str(out)]) == 0
    assert [c.method for c in trained] == ["adam"]
    saved = json.loads((out / "experiment.json").read_text())
    assert saved["methods"] == ["sgd", "adam"] and saved["n_train"] == 256
    assert saved["device"] == "cpu"


def test_runs_without_a_fingerprint_still_report_but_are_not_resumed(
    tmp_path: Path, capsys: pytest.CaptureFixture, no_training
) -> None:
    legacy = tmp_path / "legacy"
    (legacy / "runs" / "sgd").mkdir(parents=True)
    shutil.copy(LEGACY / "experiment.json", legacy / "experiment.json")
    shutil.copy(LEGACY / "runs" / "sgd" / "seed0.json", legacy / "runs" / "sgd" / "seed0.json")
    assert "n_train" not in json.loads((legacy / "runs/sgd/seed0.json").read_text())["config"]

    assert main(["report", "--out", str(legacy), "--no-write"]) == 0
    assert "| sgd | 1 |" in capsys.readouterr().out
    assert main(["report", "--out", str(legacy)]) == 0  # writes; old method names are fine
    assert (legacy / "summary.md").exists()

    args = ["--preset", "full", "--methods", "sgd", "--seeds", "1", "--out", str(legacy)]
    _refused(args, capsys, "older advopt", "device", "pass another --out", directory=legacy)
    (legacy / "experiment.json").unlink()
    _refused(args, capsys, "run file", "older advopt", "n_train", directory=legacy)


# -- item 2: one compare at a time per output directory -------------------------------------------


def test_second_compare_on_one_out_is_refused_at_once(
    out: Path, capsys: pytest.CaptureFixture, no_training
) -> None:
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, b"4242\n")
        _refused([*TINY, "--out", str(out)], capsys, "in use by another advopt compare", "4242")
    finally:
        os.close(fd)


def test_lock_of_a_killed_compare_does_not_block(
    out: Path, capsys: pytest.CaptureFixture, no_training
) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(out / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.write(fd, str(os.getpid()).encode())\n"
            "print('locked', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        _refused([*TINY, "--out", str(out)], capsys, "in use", str(holder.pid))
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    finally:
        holder.kill()
        holder.wait()
    assert main(["compare", *TINY, "--out", str(out)]) == 0  # finished run reused, no training


# -- item 4: damaged harness files and unusable output directories --------------------------------


def _run(out: Path) -> Path:
    return out / "runs" / "sgd" / "seed0.json"


def _ckpt_only(content: bytes) -> Callable[[Path], Path]:
    def setup(out: Path) -> Path:
        _run(out).unlink()
        path = out / "runs" / "sgd" / "seed0.ckpt"
        path.write_bytes(content)
        return path

    return setup


def _run_file(content: str) -> Callable[[Path], Path]:
    def setup(out: Path) -> Path:
        _run(out).write_text(content)
        return _run(out)

    return setup


def _truncated_history(out: Path) -> Path:
    record = json.loads(_run(out).read_text())
    record["history"], record["correct"] = [], []
    _run(out).write_text(json.dumps(record))
    return _run(out)


def _experiment_file(out: Path) -> Path:
    (out / "experiment.json").write_text("{\n")
    return out / "experiment.json"


DAMAGED = [
    ("garbage-checkpoint", _ckpt_only(b"\x80\x04garbage, not a checkpoint"), "is damaged"),
    ("empty-checkpoint", _ckpt_only(b""), "is damaged"),
    ("empty-run-file", _run_file(""), "is empty"),
    ("invalid-json-run-file", _run_file("{not json"), "is not a valid run record"),
    ("wrong-shape-run-file", _run_file('{"config": {}}'), "is not a valid run record"),
    ("list-run-file", _run_file("[]"), "is not a valid run record"),
    ("truncated-run-file", _truncated_history, "is incomplete"),
    ("damaged-experiment-json", _experiment_file, "is damaged"),
]


@pytest.mark.parametrize("setup, problem", [d[1:] for d in DAMAGED], ids=[d[0] for d in DAMAGED])
def test_damaged_harness_files_are_one_clear_error(
    setup: Callable[[Path], Path],
    problem: str,
    out: Path,
    capsys: pytest.CaptureFixture,
    no_training,
) -> None:
    path = setup(out)
    line = _refused([*TINY, "--out", str(out)], capsys, str(path), problem, directory=out)
    assert "delete" in line
    assert "weights_only" not in line


@pytest.fixture
def read_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], None]]:
    """Make directories unwritable — by mode bits, and, as root ignores those, by refusing to
    create entries in them (what the kernel does for a read-only mount)."""
    locked: list[Path] = []
    real_open, real_mkdir = os.open, os.mkdir

    def blocked(path) -> bool:
        return Path(os.fspath(path)).parent in locked

    def guarded_open(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and blocked(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    def guarded_mkdir(path, *args, **kwargs):
        if blocked(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_mkdir(path, *args, **kwargs)

    if os.geteuid() == 0:
        monkeypatch.setattr(os, "open", guarded_open)
        monkeypatch.setattr(os, "mkdir", guarded_mkdir)

    def lock(directory: Path) -> None:
        directory.chmod(0o555)
        locked.append(directory)

    yield lock
    for directory in locked:
        directory.chmod(0o755)


def test_read_only_out_is_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture, read_only, no_training
) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    read_only(out)
    _refused([*TINY, "--out", str(out)], capsys, f"--out {out}", "cannot write", directory=out)


def test_read_only_runs_dir_is_refused_before_training(
    out: Path, capsys: pytest.CaptureFixture, read_only, no_training
) -> None:
    _run(out).unlink()  # so that sgd seed 0 would be trained (and its files written) again
    read_only(out / "runs" / "sgd")
    line = _refused([*TINY, "--out", str(out)], capsys, str(out / "runs" / "sgd"), directory=out)
    assert "cannot write" in line and "chmod" in line


def test_out_naming_a_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture, no_training
) -> None:
    path = tmp_path / "results.txt"
    path.write_text("keep me")
    _refused([*TINY, "--out", str(path)], capsys, f"--out {path}", "existing file")
    assert path.read_text() == "keep me"
