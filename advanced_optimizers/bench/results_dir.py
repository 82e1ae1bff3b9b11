"""The output directory of ``advopt compare``: its layout, its lock, and what makes resuming safe.

Layout::

    <out>/experiment.json          what was asked (compared on resume, never silently replaced)
    <out>/.lock                    held (flock) by the one compare process writing here
    <out>/runs/<method>/seed<k>.json   one finished run (config, status, per-epoch history,
                                       validation correctness per epoch, test correctness once)
    <out>/runs/<method>/seed<k>.ckpt   an unfinished run's last epoch (deleted when it finishes)
    <out>/results.json             experiment, environment, every run's history and flip metrics,
                                   and the summary
    <out>/results.csv              one row per (method, seed, epoch)
    <out>/summary.md               the statistics table (failures counted, bootstrap CIs, tests)
    <out>/plots/*.png              accuracy / loss against epoch and wall-clock, flips

Resuming is only ever done into the same experiment. Every run file and checkpoint records the
run's full fingerprint (:class:`~.run_record.RunConfig`: method and options, model, optimisation
settings, dataset, numbers of samples, a digest of the labels, device), and ``experiment.json`` the
shared settings. Before anything is trained, :func:`~.compare.run_experiment` checks, and refuses
with one message naming the file, what differs and how to start fresh:

* the output directory: a directory (not a file) that can be written to (probed with a temporary
  file), not in use by another ``compare`` (an exclusive ``flock`` on ``<out>/.lock``, which the
  kernel releases when the holder exits or is killed, so a stale lock never blocks);
* ``experiment.json``: the same settings (only the grid — methods, seeds, per-method options — may
  grow; the file then lists the union);
* every run file and checkpoint under ``runs/``: readable, complete, and of this experiment. Files
  written before the fingerprint existed are refused for resuming (``advopt report`` still reads
  them).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from .experiment import Experiment
from .run_record import (
    FINGERPRINT_FIELDS,
    RunConfig,
    RunResult,
    config_differences,
    read_checkpoint,
)

try:  # POSIX; elsewhere the output directory is not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["GRID_KEYS", "load_runs", "output_lock", "read_run_file"]


def _run_paths(out: Path, method: str, seed: int) -> tuple[Path, Path]:
    base = out / "runs" / method / f"seed{seed}"
    return base.with_suffix(".json"), base.with_suffix(".ckpt")


# may grow on resume; every other key may not
GRID_KEYS = ("methods", "seeds", "method_options", "method_lrs", "tuning")
_START_FRESH = "to start fresh, pass another --out or delete {out}"


def _fresh(out: Path) -> str:
    return _START_FRESH.format(out=out)


def read_run_file(path: Path) -> RunResult:
    """A finished run's file, or a ``ValueError`` naming it and saying what to do."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"run file {path} cannot be read ({getattr(exc, 'strerror', None) or exc}); "
            "fix its permissions, or delete it to run that (method, seed) again"
        ) from None
    what = "is empty" if not text.strip() else "is not a valid run record"
    try:
        data = json.loads(text)
        result = RunResult.from_dict(data)
        epochs = len(result.history)
        if not all(isinstance(h, dict) for h in result.history):
            raise ValueError("history rows must be objects")
    except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
        raise ValueError(
            f"run file {path} {what} ({type(exc).__name__}: {str(exc)[:80]}); it is damaged or "
            "was not written by advopt: delete it to run that (method, seed) again"
        ) from None
    complete = epochs == result.config.epochs or (
        not result.ok and 0 < epochs <= result.config.epochs
    )
    if not complete or result.correct.shape[0] != epochs:
        raise ValueError(
            f"run file {path} is incomplete ({epochs} epochs of history, "
            f"{result.correct.shape[0]} rows of correctness, {result.config.epochs} planned); "
            "delete it to run that (method, seed) again"
        )
    return result


def _legacy(saved: dict[str, Any]) -> bool:
    """Written before runs recorded their fingerprint (the fields are absent, or load as None)."""
    return all(saved.get(key) is None for key in FINGERPRINT_FIELDS)


def _check_saved_config(
    path: Path, saved: dict[str, Any], wanted: dict[str, Any], out: Path, what: str
) -> None:
    """Refuse a run file / checkpoint whose config differs from ``wanted`` (one-line message)."""
    if _legacy(saved):
        raise ValueError(
            f"{what} {path} was written by an older advopt that did not record the experiment's "
            f"fingerprint ({', '.join(FINGERPRINT_FIELDS)}), so it "
            f"cannot be resumed or mixed with new runs; {_fresh(out)} "
            "(advopt report --out still reads the old runs)"
        )
    differences = config_differences(saved, wanted)
    if differences:
        raise ValueError(
            f"{what} {path} belongs to a different experiment ({'; '.join(differences)}); "
            f"{_fresh(out)}"
        )


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    """The fields every run of one experiment shares (not its method, options or seed)."""
    return {k: v for k, v in config.items() if k not in ("method", "options", "seed")}


def _run_files(out: Path) -> Iterator[tuple[str, int, Path]]:
    """``(method, seed, path)`` of every ``runs/<method>/seed<k>.json`` and ``.ckpt``."""
    for path in sorted((out / "runs").glob("*/seed*")):
        if path.suffix in (".json", ".ckpt") and path.stem[4:].isdigit():
            yield path.parent.name, int(path.stem[4:]), path


def _check_runs(
    out: Path, configs: dict[tuple[str, int], RunConfig]
) -> dict[tuple[str, int], RunResult]:
    """Validate every run file and checkpoint under ``out/runs``; the finished runs of ``configs``.

    Runs of this grid must have exactly its config; other runs in the directory (another method or
    seed) must share its settings, so that the directory stays one experiment.
    """
    finished: dict[tuple[str, int], RunResult] = {}
    shared = _settings(next(iter(configs.values())).to_dict())
    for method, seed, path in _run_files(out):
        config = configs.get((method, seed))
        result = None
        if path.suffix == ".json":
            result = read_run_file(path)
            saved = result.config.to_dict()
        elif path.with_suffix(".json").exists():
            continue  # a finished run's leftover checkpoint: never read
        else:
            saved = read_checkpoint(path)["config"]
            saved = saved if isinstance(saved, dict) else {}
        what = "run file" if result is not None else "checkpoint"
        if config is not None:
            _check_saved_config(path, saved, config.to_dict(), out, what)
            if result is not None:
                finished[(method, seed)] = result
        else:
            _check_saved_config(path, _settings(saved), shared, out, what)
    return finished


def _experiment_record(experiment: Experiment, device: torch.device) -> dict[str, Any]:
    return {**experiment.to_dict(), "device": device.type}


def _merge_experiment(out: Path, record: dict[str, Any]) -> dict[str, Any] | None:
    """Compare ``record`` with ``out/experiment.json``: the record to write, ``None`` if unchanged.

    The settings must be equal; the grid may differ and the union is kept.
    """
    path = out / "experiment.json"
    if not path.exists():
        return record
    try:
        saved = json.loads(path.read_text())
        if not isinstance(saved, dict):
            raise TypeError("not a JSON object")
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(
            f"{path} is damaged ({type(exc).__name__}); delete it if the runs under "
            f"{out / 'runs'} are of this experiment (they are checked one by one), "
            f"or {_fresh(out)}"
        ) from None
    mine = {k: v for k, v in record.items() if k not in GRID_KEYS}
    theirs = {k: v for k, v in saved.items() if k not in GRID_KEYS}
    missing = [k for k in mine if k not in theirs]
    if missing:
        raise ValueError(
            f"{path} was written by an older advopt that did not record {', '.join(missing)}, so "
            f"its runs cannot be resumed or mixed with new ones; {_fresh(out)} "
            "(advopt report --out still reads the old runs)"
        )
    differences = config_differences(theirs, mine)
    if differences:
        raise ValueError(
            f"{out} holds another experiment ({'; '.join(differences)}); {_fresh(out)}"
        )
    per_method = {}
    for key in ("method_options", "method_lrs", "tuning"):
        kept = {m: o for m, o in saved.get(key, {}).items() if m not in record["methods"]}
        kept.update(record[key])
        per_method[key] = kept
    merged = {
        **record,
        "methods": list(saved.get("methods", []))
        + [m for m in record["methods"] if m not in saved.get("methods", [])],
        "seeds": sorted(set(saved.get("seeds", [])) | set(record["seeds"])),
        **per_method,
    }
    return None if merged == saved else merged


def _check_out_dir(out: Path, methods: Sequence[str]) -> bool:
    """``out`` is a directory this process can write in (created if missing); True if created."""
    if out.exists() and not out.is_dir():
        raise ValueError(
            f"--out {out} is an existing file, not a directory; pass a directory "
            "(it is created if missing)"
        )
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(
            f"--out {out} cannot be created ({exc.strerror or exc}); "
            "pass a directory you can write to"
        ) from None
    dirs = [out, out / "runs", out / "plots", *(out / "runs" / m for m in methods)]
    for directory in dirs:
        if directory.exists() and not directory.is_dir():
            raise ValueError(
                f"{directory} is a file where a directory is expected; move it away, "
                f"or {_fresh(out)}"
            )
        if not directory.is_dir():
            continue
        try:
            fd, probe = tempfile.mkstemp(prefix=".probe-", dir=directory)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise ValueError(
                f"--out {out}: cannot write in {directory} ({exc.strerror or exc}); make it "
                "writable (e.g. chmod -R u+w) or pass another --out"
            ) from None
    return created


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``out/.lock`` or refuse at once if another process does.

    The kernel drops the lock when its holder exits, however it dies, so a stale ``.lock`` file from
    a killed process never blocks. The file itself is left in place (deleting it would race).
    """
    if fcntl is None:  # pragma: no cover
        yield
        return
    path = out / ".lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ValueError(f"cannot create the lock file {path} ({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise ValueError(
                f"{out} is in use by another advopt compare (process {holder} holds {path}); "
                "wait for it to finish, or pass another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _remove_if_unused(out: Path) -> None:
    """Undo the creation of ``out`` when nothing was written in it (only the lock file)."""
    with contextlib.suppress(OSError):
        (out / ".lock").unlink(missing_ok=True)
        out.rmdir()


def load_runs(out_dir: str | os.PathLike, methods: Sequence[str] | None = None) -> list[RunResult]:
    """Every finished run in ``out_dir`` (optionally only ``methods``).

    Runs written before the fingerprint fields existed load with those fields ``None`` (unknown).
    A damaged run file is a ``ValueError`` naming it.
    """
    runs = []
    for path in sorted(Path(out_dir).glob("runs/*/seed*.json")):
        result = read_run_file(path)
        if methods is None or result.config.method in methods:
            runs.append(result)
    return runs
