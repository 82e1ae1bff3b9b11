"""Compare several methods over several seeds and write results, a table and plots.

Output directory layout::

    <out>/experiment.json          what was asked (compared on resume)
    <out>/runs/<method>/seed<k>.json   one finished run (config, per-epoch history, correctness)
    <out>/runs/<method>/seed<k>.ckpt   an unfinished run's last epoch (deleted when it finishes)
    <out>/results.json             experiment, environment, every run's history and flip metrics,
                                   and the summary
    <out>/results.csv              one row per (method, seed, epoch)
    <out>/summary.md               the statistics table (mean, std, 95% CI, tests vs. baselines)
    <out>/plots/*.png              accuracy / loss against epoch and wall-clock, flips

Every file is written atomically. Re-running into the same directory resumes: finished
(method, seed) runs are loaded, not redone, and an interrupted run continues from its last epoch.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._validation import check_int
from .atomic import write_json
from .data import DATASETS, Dataset, load_dataset
from .distributed import barrier, is_main, world_size
from .methods import available_methods, get_method
from .models import ARCHITECTURES
from .train import RunConfig, RunResult, train_run

__all__ = ["PRESETS", "Experiment", "load_runs", "run_experiment"]

PRESETS: dict[str, dict[str, Any]] = {
    # About a minute on 2 CPU cores with every registered method on the MNIST MLP.
    "quick": {
        "epochs": 3,
        "seeds": [0, 1],
        "n_train": 10_000,
        "n_test": 10_000,
        "schedule": "constant",
    },
    # The study: the whole training set, 5 seeds, learning rates annealed to zero (cosine).
    "full": {
        "epochs": 15,
        "seeds": [0, 1, 2, 3, 4],
        "n_train": None,
        "n_test": None,
        "schedule": "cosine",
    },
}


@dataclass
class Experiment:
    """A grid of runs: every method in ``methods`` under every seed in ``seeds``."""

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

    def __post_init__(self) -> None:
        registered = available_methods()
        if not self.methods:
            self.methods = list(registered)
        for name in self.methods:
            if name not in registered:
                raise ValueError(f"methods must be among {', '.join(registered)}; got {name!r}")
        unknown = set(self.method_options) - set(self.methods)
        if unknown:
            raise ValueError(
                f"method_options name methods not in the experiment: {sorted(unknown)}"
            )
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {self.dataset!r}")
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {', '.join(ARCHITECTURES)}; got {self.arch!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be a non-empty list of distinct ints, got {self.seeds}")
        for seed in self.seeds:
            check_int("seed", seed, 0)
        for name in self.methods:  # fail now, not an hour in, on a bad option
            get_method(name, **self.method_options.get(name, {}))

    def run_config(self, method: str, seed: int) -> RunConfig:
        return RunConfig(
            method=method,
            options=dict(self.method_options.get(method, {})),
            arch=self.arch,
            width=self.width,
            depth=self.depth,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            seed=seed,
            schedule=self.schedule,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def environment() -> dict[str, Any]:
    """Where the numbers were measured."""
    return {
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


def _load_finished(path: Path, config: RunConfig) -> RunResult | None:
    if not path.exists():
        return None
    result = RunResult.from_dict(json.loads(path.read_text()))
    if result.config != config:
        raise ValueError(
            f"{path} holds a run with a different config ({result.config}); "
            "use another output directory or delete it"
        )
    return result


def prepare_data(experiment: Experiment, data_dir: str | None = None) -> Dataset:
    dataset = load_dataset(experiment.dataset, data_dir=data_dir)
    if experiment.n_train is not None or experiment.n_test is not None:
        dataset = dataset.subset(experiment.n_train, experiment.n_test)
    return dataset


def run_experiment(
    experiment: Experiment,
    out_dir: str | os.PathLike,
    data_dir: str | None = None,
    dataset: Dataset | None = None,
    progress: bool = True,
) -> list[RunResult]:
    """Run (or resume) every (method, seed) of ``experiment``; write all result files."""
    from tqdm.auto import tqdm

    from .report import write_outputs

    out = Path(out_dir)
    main = is_main()
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "experiment.json", experiment.to_dict())
    dataset = dataset if dataset is not None else prepare_data(experiment, data_dir)
    jobs = [(m, s) for s in experiment.seeds for m in experiment.methods]
    results: list[RunResult] = []
    bar = tqdm(
        total=len(jobs) * experiment.epochs, unit="epoch", disable=not progress, desc="compare"
    )
    for method, seed in jobs:
        config = experiment.run_config(method, seed)
        done_path, ckpt_path = _run_paths(out, method, seed)
        barrier()  # every rank decides from the same files
        result = _load_finished(done_path, config)
        if result is None:
            bar.set_description(f"{method} seed {seed}")
            shown = 0

            def show(record: dict[str, float]) -> None:
                nonlocal shown
                shown += 1
                bar.update(1)
                bar.set_postfix(acc=f"{record['test_acc']:.4f}", loss=f"{record['train_loss']:.3f}")

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
        write_outputs(out, experiment, results, environment())
    return results


def load_runs(out_dir: str | os.PathLike, methods: Sequence[str] | None = None) -> list[RunResult]:
    """Every finished run in ``out_dir`` (optionally only ``methods``)."""
    runs = []
    for path in sorted(Path(out_dir).glob("runs/*/seed*.json")):
        result = RunResult.from_dict(json.loads(path.read_text()))
        if methods is None or result.config.method in methods:
            runs.append(result)
    return runs
