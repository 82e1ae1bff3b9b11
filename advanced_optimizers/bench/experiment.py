"""An experiment of ``advopt compare``: a grid of runs under one protocol, its presets, tuned settings.

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
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._validation import check_choice, check_int
from .data import DATASETS, VALIDATION_DEFAULTS, Dataset
from .device import DEVICES
from .methods import get_method, resolve_methods
from .models import ARCHITECTURES
from .run_record import RunConfig, data_id

__all__ = ["PRESETS", "TUNING_MUST_MATCH", "Experiment", "apply_tuning"]

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
        self.methods = resolve_methods(self.methods)
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
