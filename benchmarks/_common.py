"""What every benchmark script shares: interleaved paired timing, intervals over seeds, goals.

Each script in ``benchmarks/`` imports this module (it runs as ``python benchmarks/NAME.py``, so this
directory is on ``sys.path``).

* **Paired interleaved timing.** :func:`interleave` calls every run once per repetition, rotating the
  order by one each time (two runs: A,B, B,A, A,B, ...), in one process, so slow drifts of the shared
  machine's background load hit all runs alike. :func:`ratio_ci` turns the paired seconds into
  per-repetition ratios ``a_k / b_k`` and summarises them by their geometric mean with a Student-t
  interval computed on the log-ratios and exponentiated (``exp(mean ± t_{n-1} · sd/√n)`` of
  ``log(a_k/b_k)``, via ``advanced_optimizers.bench.stats.mean_ci``, i.e. ``scipy.stats.t``): ratios
  are multiplicative, so their logs are the scale on which the noise is closer to symmetric.
  :func:`paired_timing` is the two together for two callables that return seconds.
* **Accuracy over seeds.** :func:`paired_diff`: mean per-seed difference ``a_s − b_s``, its t-interval
  and the paired tests of ``advanced_optimizers.bench.stats.paired_test``; :func:`ci_text` prints a
  mean with its t-interval.
* **Goals.** :class:`Goal` is one goal's record; :class:`GoalReport` collects a script's goals, prints
  each as one ``MET: ...`` / ``MISSED: ...`` line, writes them atomically to
  ``<goals dir>/<name>.goals.json`` (``tools/goals.py`` builds the README table from those files) and
  gives the exit status (1 when a goal is missed, unless ``--no-fail``). :func:`add_arguments` adds
  the options every script shares: ``--smoke``, ``--goals-dir``, ``--no-fail``.
* **Data.** :func:`synthetic_mnist`: a tiny generated MNIST-shaped dataset (no files).

A full run writes its goals to ``results/benchmarks/``; a ``--smoke`` or ``--quick`` run writes to a
fresh temporary directory unless ``--goals-dir`` names another one, and is refused the committed
``results/benchmarks/``.
"""

from __future__ import annotations

import argparse
import json
import math
import operator
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from advanced_optimizers.bench.atomic import write_json
from advanced_optimizers.bench.data import Dataset
from advanced_optimizers.bench.stats import mean_ci, paired_test

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "results" / "benchmarks"
RUN_KINDS = ("full", "quick", "smoke")
COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
    "==": operator.eq,
}

T = TypeVar("T")


# ------------------------------------------------------------------------------------------------
# Paired interleaved timing
# ------------------------------------------------------------------------------------------------
def interleave(
    runs: Mapping[str, Callable[[int], T]], reps: int, *, offset: int = 0
) -> dict[str, list[T]]:
    """Call ``run(k)`` of every run for ``k = 0 .. reps-1``, rotating the order each repetition.

    Repetition ``k`` starts with the run at position ``(k + offset) % len(runs)`` and goes on in the
    given order (two runs: A,B then B,A, ...). Returns each run's results in repetition order.
    """
    if reps < 0:
        raise ValueError(f"reps must be >= 0, got {reps}")
    names = list(runs)
    if not names:
        raise ValueError("runs must name at least one run")
    out: dict[str, list[T]] = {name: [] for name in names}
    for k in range(reps):
        shift = (k + offset) % len(names)
        for name in names[shift:] + names[:shift]:
            out[name].append(runs[name](k))
    return out


@dataclass(frozen=True)
class RatioCI:
    """Paired ratios ``a_k / b_k``: geometric mean and t-interval on the log scale (NaN if n < 2)."""

    ratios: list[float]
    ratio: float
    ci_low: float
    ci_high: float
    confidence: float
    method: str = "geometric mean; Student-t interval of the log-ratios, exponentiated"

    @property
    def n(self) -> int:
        return len(self.ratios)

    def text(self, digits: int = 3) -> str:
        """``1.124 [1.011, 1.237]`` (just the ratio when there is no interval)."""
        if self.n < 2:
            return f"{self.ratio:.{digits}f}"
        return f"{self.ratio:.{digits}f} [{self.ci_low:.{digits}f}, {self.ci_high:.{digits}f}]"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "n": self.n}


def ratio_ci(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> RatioCI:
    """Summary of the paired ratios ``a[k] / b[k]`` (positive numbers, e.g. seconds)."""
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_arr.shape != b_arr.shape or a_arr.ndim != 1 or len(a_arr) == 0:
        raise ValueError(
            f"a and b must be 1-D, non-empty, of equal length: {a_arr.shape}, {b_arr.shape}"
        )
    if not (np.all(a_arr > 0) and np.all(b_arr > 0)):
        raise ValueError("ratios need positive values (seconds)")
    logs = np.log(a_arr / b_arr)
    s = mean_ci(logs.tolist(), confidence)
    return RatioCI(
        ratios=(a_arr / b_arr).tolist(),
        ratio=math.exp(s["mean"]),
        ci_low=math.exp(s["ci_low"]),
        ci_high=math.exp(s["ci_high"]),
        confidence=confidence,
    )


@dataclass(frozen=True)
class PairedTiming:
    """Seconds of ``a`` and ``b`` per repetition (warm-up excluded) and their ratio a / b."""

    a: list[float]
    b: list[float]
    ratio: RatioCI


def timed(fn: Callable[[], Any]) -> Callable[[int], float]:
    """A run for :func:`interleave` / :func:`paired_timing` that returns the wall seconds of ``fn()``."""

    def run(_k: int) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return run


def paired_timing(
    a: Callable[[int], float],
    b: Callable[[int], float],
    reps: int,
    *,
    warmup: int = 0,
    confidence: float = 0.95,
) -> PairedTiming:
    """Run ``a`` and ``b`` alternately (A,B, B,A, ...) for ``warmup + reps`` repetitions.

    Each callable gets the repetition index and returns the seconds to compare (its own measure,
    e.g. the harness's training seconds, or :func:`timed`'s wall time). The first ``warmup``
    repetitions are run in the same alternation and discarded.
    """
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    got = interleave({"a": a, "b": b}, warmup + reps)
    sa, sb = got["a"][warmup:], got["b"][warmup:]
    return PairedTiming(sa, sb, ratio_ci(sa, sb, confidence))


# ------------------------------------------------------------------------------------------------
# Accuracy (or any per-seed number) over seeds
# ------------------------------------------------------------------------------------------------
def paired_diff(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95
) -> dict[str, float]:
    """``a − b`` over the same seeds: mean difference, its t-interval, paired t / Wilcoxon p-values.

    Keys: ``n``, ``mean_diff``, ``ci_low``, ``ci_high`` (NaN when n < 2), ``p_value`` (paired
    t-test), ``wilcoxon_p``, ``cohens_dz`` — from ``advanced_optimizers.bench.stats``.
    """
    test = paired_test(a, b)
    diffs = (np.asarray(a, dtype=float) - np.asarray(b, dtype=float)).tolist()
    interval = mean_ci(diffs, confidence)
    return {**test, "ci_low": interval["ci_low"], "ci_high": interval["ci_high"]}


def ci_text(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    """``mean [low, high]`` of ``values × scale`` with the 95 % t-interval (just the mean if n < 2)."""
    s = mean_ci([v * scale for v in values])
    if s["n"] < 2:
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} [{s['ci_low']:.{digits}f}, {s['ci_high']:.{digits}f}]"


# ------------------------------------------------------------------------------------------------
# Goals
# ------------------------------------------------------------------------------------------------
@dataclass
class Goal:
    """One goal of one benchmark. ``description`` is the text of the goal's line and table row.

    ``comparison``: ``<=``, ``>=``, ``<``, ``>`` or ``==`` (``met`` is ``value <comparison>
    threshold``), or ``"custom"`` (a rule the benchmark states in ``details``). ``value`` is ``None``
    for a goal without one number (and after a JSON round trip of a non-finite value).
    """

    benchmark: str
    workload: str
    description: str
    value: float | None
    threshold: float | None
    comparison: str
    met: bool
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.met, bool):
            raise TypeError(f"met must be a bool, got {self.met!r}")
        if self.comparison not in COMPARISONS and self.comparison != "custom":
            raise ValueError(
                f"comparison must be one of {[*COMPARISONS, 'custom']}, got {self.comparison!r}"
            )

    @property
    def status(self) -> str:
        return "MET" if self.met else "MISSED"

    def line(self) -> str:
        return f"{self.status}: {self.description}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Goal:
        names = {f for f in cls.__dataclass_fields__}
        missing = names - {"details"} - set(data)
        if missing:
            raise ValueError(f"goal record lacks {sorted(missing)}")
        return cls(**{k: data[k] for k in names if k in data})


def compare(value: float | None, threshold: float, comparison: str) -> bool:
    """``value <comparison> threshold``; a missing or NaN value never meets a goal."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return bool(COMPARISONS[comparison](value, threshold))


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


class GoalReport:
    """The goals of one benchmark run: printed, written to ``<goals_dir>/<name>.goals.json``.

    ``run``: ``"full"``, ``"quick"`` or ``"smoke"`` (recorded; ``tools/goals.py`` shows full runs
    only). ``fail``: :meth:`finish` returns 1 when a goal is missed (``False``: always 0).
    ``source`` / ``command`` / ``commit`` default to this process's command line and git commit.
    """

    def __init__(
        self,
        name: str,
        goals_dir: str | Path,
        *,
        run: str = "full",
        fail: bool = True,
        config: Mapping[str, Any] | None = None,
        script: str | None = None,
        source: str | None = None,
        command: str | None = None,
        commit: str | None = None,
    ) -> None:
        if run not in RUN_KINDS:
            raise ValueError(f"run must be one of {RUN_KINDS}, got {run!r}")
        self.name = name
        self.goals_dir = Path(goals_dir)
        self.run = run
        self.fail = fail
        self.config = dict(config or {})
        self.script = script or f"benchmarks/{name}.py"
        self.command = command or shlex.join(["python", self.script, *sys.argv[1:]])
        if commit is None and source is None:
            commit = _git("rev-parse", "HEAD")
            if commit and _git("status", "--porcelain", "--untracked-files=no"):
                commit += " (with uncommitted changes)"
        self.commit = commit
        self.source = source or f"run of {self.script} at commit {commit or 'unknown'}"
        self.goals: list[Goal] = []

    @property
    def path(self) -> Path:
        return self.goals_dir / f"{self.name}.goals.json"

    def add(
        self,
        workload: str,
        description: str,
        value: float | None,
        threshold: float | None,
        comparison: str,
        *,
        met: bool | None = None,
        **details: Any,
    ) -> Goal:
        """Record a goal; ``met`` defaults to ``value <comparison> threshold``."""
        if met is None:
            if threshold is None or comparison not in COMPARISONS:
                raise ValueError("give met= for a goal without a threshold or comparison")
            met = compare(value, threshold, comparison)
        value = None if value is None else float(value)
        threshold = None if threshold is None else float(threshold)
        goal = Goal(
            self.name, workload, description, value, threshold, comparison, bool(met), details
        )
        self.goals.append(goal)
        return goal

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "script": self.script,
            "run": self.run,
            "source": self.source,
            "command": self.command,
            "commit": self.commit,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "config": self.config,
            "met": sum(g.met for g in self.goals),
            "missed": sum(not g.met for g in self.goals),
            "goals": [g.to_dict() for g in self.goals],
        }

    def write(self) -> Path:
        """Write the goals file atomically (``advanced_optimizers.bench.atomic.write_json``)."""
        return write_json(self.path, self.to_dict())

    def finish(self) -> int:
        """Print every goal line, write the goals file, return the exit status."""
        if not self.goals:
            raise RuntimeError(f"benchmark {self.name} recorded no goal")
        print("\nGoals:")
        if self.run != "full":
            print(
                f"note: {self.run} run (reduced data): the outcomes below are not the benchmark's"
            )
        for goal in self.goals:
            print(goal.line())
        print(f"goals written to {self.write()}")
        missed = any(not g.met for g in self.goals)
        return 1 if missed and self.fail else 0

    @classmethod
    def load(cls, path: str | Path) -> tuple[dict[str, Any], list[Goal]]:
        """The header of a goals file and its goals."""
        data = json.loads(Path(path).read_text())
        return data, [Goal.from_dict(g) for g in data["goals"]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark has: ``--smoke``, ``--goals-dir``, ``--no-fail``."""
    group = parser.add_argument_group("run and goals")
    group.add_argument(
        "--smoke",
        action="store_true",
        help="tiny data, 1-2 seeds and epochs: exercises the whole script in well under a minute "
        "(goal outcomes are meaningless; the goals file goes to a temporary directory)",
    )
    group.add_argument(
        "--goals-dir",
        type=Path,
        default=None,
        help=f"where NAME.goals.json is written (full run: {RESULTS_DIR.relative_to(ROOT)}; "
        "--smoke/--quick: a new temporary directory)",
    )
    group.add_argument(
        "--no-fail", action="store_true", help="exit status 0 even when a goal is missed"
    )


def run_kind(args: argparse.Namespace) -> str:
    if getattr(args, "smoke", False):
        return "smoke"
    return "quick" if getattr(args, "quick", False) else "full"


def goals_dir(args: argparse.Namespace, name: str) -> Path:
    """The goals directory of this run (see :func:`add_arguments`); a reduced run never gets ours."""
    kind = run_kind(args)
    if args.goals_dir is None:
        if kind == "full":
            return RESULTS_DIR
        return Path(tempfile.mkdtemp(prefix=f"advopt-{name}-{kind}-"))
    if kind != "full" and args.goals_dir.resolve() == RESULTS_DIR.resolve():
        raise SystemExit(
            f"error: a --{kind} run must not write its goals to {RESULTS_DIR} (the committed "
            "results of full runs); give another --goals-dir"
        )
    return args.goals_dir


def report_from_args(
    name: str, args: argparse.Namespace, *, script: str | None = None, directory: Path | None = None
) -> GoalReport:
    """A :class:`GoalReport` for this script's parsed ``args`` (recorded as its config)."""
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    return GoalReport(
        name,
        directory if directory is not None else goals_dir(args, name),
        run=run_kind(args),
        fail=not args.no_fail,
        config=config,
        script=script,
    )


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------
def _class_images(labels: np.ndarray, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """Learnable toy images: class k lights up a bar at row 2k+3, plus noise."""
    images = rng.integers(0, 60, size=(len(labels), size, size), dtype=np.uint8)
    for k in range(10):
        images[labels == k, 2 * k + 3 : 2 * k + 5, :] = 255
    return images


def synthetic_mnist(n_train: int = 256, n_test: int = 128, seed: int = 0) -> Dataset:
    """An in-memory MNIST-shaped dataset (10 classes, 1x28x28) that an MLP learns in a few epochs.

    The same generator as the test suite's toy dataset, so the same arguments give the same tensors.
    """
    rng = np.random.default_rng(seed)
    y_train = rng.integers(0, 10, n_train)
    y_test = rng.integers(0, 10, n_test)
    x_train = torch.from_numpy(_class_images(y_train, rng)).float()[:, None] / 255.0
    x_test = torch.from_numpy(_class_images(y_test, rng)).float()[:, None] / 255.0
    return Dataset("toy", x_train, torch.from_numpy(y_train), x_test, torch.from_numpy(y_test), 10)


# ------------------------------------------------------------------------------------------------
# Step timing of harness methods
# ------------------------------------------------------------------------------------------------
def mnist_batches(n: int, batch_size: int = 128) -> list[Any]:
    """The first ``n`` real MNIST training batches, each with its samples' dataset indices."""
    from advanced_optimizers.bench.data import load_dataset
    from advanced_optimizers.bench.methods import Batch

    data = load_dataset("mnist", progress=False)
    return [
        Batch(
            data.x_train[k * batch_size : (k + 1) * batch_size],
            data.y_train[k * batch_size : (k + 1) * batch_size],
            torch.arange(k * batch_size, (k + 1) * batch_size),
        )
        for k in range(n)
    ]


def harness_stepper(
    name: str, spec: Any, options: Mapping[str, Any], batches: Sequence[Any], epoch: int = 1
) -> tuple[Callable[[], None], torch.nn.Module]:
    """``(run, model)``: ``run()`` is one pass of training steps of a harness method over ``batches``
    (zero_grad, the method's batch loss, backward, step: the loop of ``train_run`` without data
    loading), at epoch ``epoch`` — the passes of the epochs before it are run first (FER's warm-up
    fills its store), so what is timed is the method's steady state."""
    from advanced_optimizers.bench.methods import EpochInfo, Setup, get_method

    torch.manual_seed(0)
    method = get_method(name, **options)
    model = method.build_model(spec)
    setup = Setup(
        lr=1e-3, epochs=epoch + 1, steps_per_epoch=len(batches), n_train=60000, num_classes=10
    )
    optimizer = method.build_optimizer(model, setup)
    model.train()
    info = [EpochInfo(1, epoch + 1)]

    def run() -> None:
        for batch in batches:
            optimizer.zero_grad()
            method.batch_loss(model, optimizer, batch, info[0]).backward()
            optimizer.step()

    for e in range(1, epoch + 1):
        info[0] = EpochInfo(e, epoch + 1)
        method.start_epoch(model, optimizer, info[0])
        if e < epoch:
            run()
    return run, model
