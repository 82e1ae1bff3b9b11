"""Compare several methods over several seeds and write results, a table and plots.

Output directory layout::

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

Every file is written atomically. Re-running into the same directory resumes: finished
(method, seed) runs are loaded, not redone, and an interrupted run continues from its last epoch.
A run that failed (diverged, or stayed at chance; see :mod:`.train`) is finished too: its file is
final and it is not retried unless ``retry_failed`` (``advopt compare --retry-failed``) asks.

**Protocol.** The experiment carves a validation split off the end of the training set
(``validation``: by default the dataset's ``VALIDATION_DEFAULTS`` — 10 000 images for MNIST and
Fashion-MNIST, 5 000 for CIFAR-10; 0 only for smoke tests and legacy comparisons, then labelled "no
validation split"); ``n_train`` takes the first samples of what is left. Every run is measured on the
validation split each epoch and on the test set once, after its last epoch. Learning rates and
options are per method: ``method_lrs`` / ``method_options``, set from ``advopt tune``'s
``tuning.json`` by :func:`apply_tuning` (``advopt compare --tuned``); ``tuning`` records where each
method's settings came from.

Presets (``PRESETS``): ``quick`` is the CI-fast smoke comparison (``make run``: every method on
the MLP 784-512-10, 3 epochs, 2 seeds, 10 000 training images, a 2 000-image validation split);
``full`` is the study's protocol: the MLP 784-512-512-10 (two hidden layers), 10 000 validation
images, the remaining 50 000 for training, 5 seeds, 10 epochs, cosine schedule. The CNN study is the
same protocol with ``--arch cnn`` (``advopt compare --preset full --arch cnn``: the preset's depth 2
is the CNN's two conv blocks); size it with ``--width`` (first conv channels), ``--depth`` (blocks),
``--n-train`` and ``--epochs``.

Resuming is only ever done into the same experiment. Every run file and checkpoint records the
run's full fingerprint (:class:`~.train.RunConfig`: method and options, model, optimisation settings,
dataset, numbers of samples, a digest of the labels, device), and ``experiment.json`` the shared
settings. Before anything is trained, :func:`run_experiment` checks, and refuses with one message
naming the file, what differs and how to start fresh:

* the output directory: a directory (not a file) that can be written to (probed with a temporary
  file), not in use by another ``compare`` (an exclusive ``flock`` on ``<out>/.lock``, which the
  kernel releases when the holder exits or is killed, so a stale lock never blocks);
* ``experiment.json``: the same settings (only the grid — methods, seeds, per-method options — may
  grow; the file then lists the union);
* every run file and checkpoint under ``runs/``: readable, complete, and of this experiment. Files
  written before the fingerprint existed are refused for resuming (``advopt report`` still reads
  them).

Under ``torchrun`` rank 0 does the checks that write (probe, lock, ``experiment.json``) and every
rank the read-only ones; a failure on any rank stops every rank before training.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._validation import check_choice, check_int
from .atomic import write_json
from .data import DATASETS, VALIDATION_DEFAULTS, Dataset, load_dataset
from .device import DEVICES, resolve_device
from .distributed import barrier, is_main, raise_together, world_size
from .methods import available_methods, get_method
from .models import ARCHITECTURES
from .train import (
    FINGERPRINT_FIELDS,
    RunConfig,
    RunResult,
    config_differences,
    data_id,
    read_checkpoint,
    train_run,
)

try:  # POSIX; elsewhere the output directory is not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["PRESETS", "Experiment", "apply_tuning", "load_runs", "run_experiment"]

PRESETS: dict[str, dict[str, Any]] = {
    # About a minute on 2 CPU cores with every registered method on the MNIST MLP (784-512-10).
    "quick": {
        "arch": "mlp",
        "depth": None,
        "epochs": 3,
        "seeds": [0, 1],
        "n_train": 10_000,
        "n_test": 10_000,
        "validation": 2_000,
        "schedule": "constant",
    },
    # The study's protocol: MLP 784-512-512-10, 10k validation images, the other 50k for
    # training, 5 seeds, learning rates annealed to zero (cosine).
    "full": {
        "arch": "mlp",
        "depth": 2,
        "epochs": 10,
        "seeds": [0, 1, 2, 3, 4],
        "n_train": None,
        "n_test": None,
        "validation": None,  # the dataset's default: 10k for MNIST
        "schedule": "cosine",
    },
}


@dataclass
class Experiment:
    """A grid of runs: every method in ``methods`` under every seed in ``seeds``.

    ``validation``: images carved off the end of the training set (``None``: the dataset's default,
    resolved here; 0: no validation split). ``lr``: one learning rate for every method (``None``:
    each method's default) unless ``method_lrs`` names the method. ``tuning``: per method, where its
    ``method_lrs`` / ``method_options`` came from (set by :func:`apply_tuning`).
    """

    methods: list[str] = field(default_factory=list)
    dataset: str = "mnist"
    arch: str = "mlp"
    width: int | None = None
    depth: int | None = None
    epochs: int = 3
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    batch_size: int = 128
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 0.0
    n_train: int | None = None
    n_test: int | None = None
    schedule: str = "constant"
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    device: str = "auto"
    validation: int | None = None
    method_lrs: dict[str, float] = field(default_factory=dict)
    tuning: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        registered = available_methods()
        if not self.methods:
            self.methods = list(registered)
        for name in self.methods:
            if name not in registered:
                raise ValueError(f"methods must be among {', '.join(registered)}; got {name!r}")
        for name in ("method_options", "method_lrs", "tuning"):
            unknown = set(getattr(self, name)) - set(self.methods)
            if unknown:
                raise ValueError(f"{name} name methods not in the experiment: {sorted(unknown)}")
        for method, lr in self.method_lrs.items():
            if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
                raise ValueError(f"method_lrs[{method!r}] must be a finite number > 0, got {lr!r}")
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {self.dataset!r}")
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {', '.join(ARCHITECTURES)}; got {self.arch!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be a non-empty list of distinct ints, got {self.seeds}")
        for seed in self.seeds:
            check_int("seed", seed, 0)
        check_choice("device", self.device, DEVICES)
        for name in ("n_train", "n_test"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 1)
        if self.validation is None:
            self.validation = VALIDATION_DEFAULTS[self.dataset]
        check_int("validation", self.validation, 0)
        for name in self.methods:  # fail now, not an hour in, on a bad option
            get_method(name, **self.method_options.get(name, {}))
        self.run_config(self.methods[0], self.seeds[0])  # checks epochs, lr, momentum, ...

    def run_config(
        self,
        method: str,
        seed: int,
        dataset: Dataset | None = None,
        device: torch.device | str | None = None,
    ) -> RunConfig:
        """The config of one run; with ``dataset`` and ``device``, including its fingerprint."""
        data: dict[str, Any] = {}
        if dataset is not None:
            data = {
                "dataset": dataset.name,
                "n_train": dataset.n_train,
                "n_val": dataset.n_val,
                "n_test": dataset.n_test,
                "data_id": data_id(dataset),
            }
        if device is not None:
            data["device"] = torch.device(device).type
        return RunConfig(
            method=method,
            options=dict(self.method_options.get(method, {})),
            arch=self.arch,
            width=self.width,
            depth=self.depth,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.method_lrs.get(method, self.lr),
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            seed=seed,
            schedule=self.schedule,
            **data,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# What a tuning study and the final runs at its settings must share (epochs, n_train, n_test and
# seeds may differ: tuning on a shorter or smaller budget is the user's documented choice).
TUNING_MUST_MATCH = (
    "dataset",
    "arch",
    "width",
    "depth",
    "validation",
    "batch_size",
    "schedule",
    "momentum",
    "weight_decay",
)


def apply_tuning(experiment: Experiment, tuning_file: str | os.PathLike) -> Experiment:
    """``experiment`` with each method's tuned learning rate and option from ``tuning_file``.

    ``tuning_file`` is the ``tuning.json`` of ``advopt tune``; every method of the experiment must
    have been tuned there (equal budgets: a method cannot be compared at a tuned setting against
    one at a default), under the same workload (``TUNING_MUST_MATCH``). Options given explicitly in
    ``experiment.method_options`` are kept unless they are the tuned option.
    """
    import hashlib

    path = Path(tuning_file)
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
        protocol, methods = data["protocol"], data["methods"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"--tuned {path} is not a readable tuning.json of advopt tune ({type(exc).__name__}: "
            f"{str(exc)[:80]})"
        ) from None
    wanted = experiment.to_dict()
    differ = [
        f"{key}: tuned {protocol.get(key)!r}, now {wanted[key]!r}"
        for key in TUNING_MUST_MATCH
        if protocol.get(key) != wanted[key]
    ]
    if differ:
        raise ValueError(f"--tuned {path} was tuned on another workload ({'; '.join(differ)})")
    if experiment.lr is not None:
        raise ValueError("--lr and --tuned exclude each other: the tuned learning rates are used")
    lrs = dict(experiment.method_lrs)
    options = {m: dict(o) for m, o in experiment.method_options.items()}
    provenance = dict(experiment.tuning)
    digest = hashlib.sha256(raw).hexdigest()[:16]
    for method in experiment.methods:
        entry = methods.get(method)
        if entry is None:
            raise ValueError(
                f"method {method!r} was not tuned in {path} (tuned: {', '.join(methods)}); every "
                "method of a tuned comparison needs the same tuning budget"
            )
        best = entry.get("best")
        if not best:
            raise ValueError(
                f"method {method!r} has no completed trial in {path}; run advopt tune to its budget"
            )
        params = dict(best["params"])
        lrs[method] = float(params.pop("lr"))
        if params:
            options.setdefault(method, {}).update(params)
        provenance[method] = {
            "file": str(path),
            "sha256": digest,
            "study": entry.get("study"),
            "trial": best.get("number"),
            "val_acc": best.get("value"),
            "params": best["params"],
            "budget": data.get("budget", {}).get("trials"),
        }
    return dataclasses.replace(
        experiment, method_lrs=lrs, method_options=options, tuning=provenance
    )


def environment(device: torch.device | str | None = None) -> dict[str, Any]:
    """Where the numbers were measured (``device``: the one trained on, if known)."""
    return {
        "device": str(device) if device is not None else "unknown",
        "world_size": world_size(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


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


def prepare_data(
    experiment: Experiment,
    data_dir: str | None = None,
    check_sums: bool = True,
    dataset: Dataset | None = None,
) -> Dataset:
    """The experiment's data: validation split carved off the training set, then the subsets.

    ``dataset``: these tensors instead of loading ``experiment.dataset``. If it already has a
    validation split, that split must be ``experiment.validation`` samples; otherwise the last
    ``experiment.validation`` training samples become it.
    """
    if dataset is None:
        dataset = load_dataset(experiment.dataset, data_dir=data_dir, check_sums=check_sums)
    if dataset.n_val:
        if dataset.n_val != experiment.validation:
            raise ValueError(
                f"the dataset given has a validation split of {dataset.n_val} samples, the "
                f"experiment asks for {experiment.validation} (--validation)"
            )
    else:
        dataset = dataset.split_validation(experiment.validation)
    return dataset.subset(experiment.n_train, experiment.n_test)


def run_experiment(
    experiment: Experiment,
    out_dir: str | os.PathLike,
    data_dir: str | None = None,
    dataset: Dataset | None = None,
    progress: bool = True,
    check_sums: bool = True,
    retry_failed: bool = False,
) -> list[RunResult]:
    """Run (or resume) every (method, seed) of ``experiment``; write all result files.

    ``dataset``: use these tensors instead of loading ``experiment.dataset`` (see
    :func:`prepare_data`: the validation split is carved off it, then its first
    ``experiment.n_train`` / ``n_test`` samples are used when those are set). ``check_sums``: see
    :func:`~.data.load_dataset`. ``retry_failed``: train again the runs whose file records a
    failure (by default a failed run is final). Every check described in the module docstring runs
    before the first epoch; on failure nothing in ``out_dir`` has changed.
    """
    out = Path(out_dir)
    with contextlib.ExitStack() as stack:
        finished, configs, dataset = _prepare(stack, experiment, out, data_dir, dataset, check_sums)
        if retry_failed:
            finished = {key: run for key, run in finished.items() if run.ok}
        return _run_all(experiment, out, configs, finished, dataset, progress)


def _prepare(
    stack: contextlib.ExitStack,
    experiment: Experiment,
    out: Path,
    data_dir: str | None,
    dataset: Dataset | None,
    check_sums: bool,
) -> tuple[dict[tuple[str, int], RunResult], dict[tuple[str, int], RunConfig], Dataset]:
    """Every check before training (see the module docstring), together on every rank."""
    main = is_main()
    error: BaseException | None = None
    created = False
    finished: dict[tuple[str, int], RunResult] = {}
    configs: dict[tuple[str, int], RunConfig] = {}
    try:
        device = resolve_device(experiment.device)
        record = _experiment_record(experiment, device)
        update = None
        if main:
            created = _check_out_dir(out, experiment.methods)
            stack.enter_context(output_lock(out))
            update = _merge_experiment(out, record)
        dataset = prepare_data(experiment, data_dir, check_sums, dataset)
        configs = {
            (m, s): experiment.run_config(m, s, dataset, device)
            for s in experiment.seeds
            for m in experiment.methods
        }
        finished = _check_runs(out, configs)
        if main and update is not None:
            write_json(out / "experiment.json", update)
    except (ValueError, TypeError, OSError) as exc:
        error = exc
        if created:
            stack.close()  # release the lock before removing the directory we made
            _remove_if_unused(out)
    raise_together(error)
    return finished, configs, dataset  # type: ignore[return-value]


def _run_all(
    experiment: Experiment,
    out: Path,
    configs: dict[tuple[str, int], RunConfig],
    finished: dict[tuple[str, int], RunResult],
    dataset: Dataset,
    progress: bool,
) -> list[RunResult]:
    from tqdm.auto import tqdm

    from .report import write_outputs

    main = is_main()
    device = resolve_device(experiment.device)
    results: list[RunResult] = []
    bar = tqdm(
        total=len(configs) * experiment.epochs, unit="epoch", disable=not progress, desc="compare"
    )
    for (method, seed), config in configs.items():
        done_path, ckpt_path = _run_paths(out, method, seed)
        result = finished.get((method, seed))
        if result is None:
            bar.set_description(f"{method} seed {seed}")
            shown = 0

            def show(record: dict[str, Any]) -> None:
                nonlocal shown
                shown += 1
                bar.update(1)
                acc = record["val_acc"] if "val_acc" in record else record["test_acc"]
                bar.set_postfix(acc=f"{acc:.4f}", loss=f"{record['train_loss']:.3f}")

            barrier()  # every rank starts from the same checkpoint
            result = train_run(config, dataset, checkpoint=ckpt_path, on_epoch=show)
            if main:
                write_json(done_path, result.to_dict())
                ckpt_path.unlink(missing_ok=True)
            bar.update(experiment.epochs - shown)  # epochs restored from a checkpoint
        else:
            bar.update(experiment.epochs)
        results.append(result)
    bar.close()
    barrier()
    if main:
        resolved = dataclasses.replace(experiment, device=device.type)
        write_outputs(out, resolved, results, environment(device))
    return results


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
