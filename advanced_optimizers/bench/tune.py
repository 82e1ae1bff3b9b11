"""``advopt tune``: the same tuning budget for every method, selected on the validation split.

The protocol follows AlgoPerf's external-tuning ruleset and DeepOBS: every method — baselines,
peers and our algorithms alike — gets the same number of trials (``trials``, the *budget*) over its
learning rate and at most one option of its own, each trial is a full training run of the workload
scored on the **validation** split, and the test set is never read (the tuning data has no test
split at all: :meth:`~.data.Dataset.without_test`). The final runs are then ``advopt compare
--tuned tuning.json`` at each method's best setting, over seeds, with the test set read once per run.

**Search space** (per method, written into ``tuning.json``):

* ``lr``: log-uniform on ``[default / lr_factor, default × lr_factor]`` around the method's default
  learning rate (``lr_factor`` = 10: two decades, which holds the usual optimum of every method here;
  widen it with ``--lr-factor``);
* at most one option: the method's :attr:`~.methods.Method.tuned_option` (baselines and peers:
  none; FER: ``consistency_threshold`` ∈ {0.0, 0.9}), or ``--space METHOD:NAME=V1,V2,...`` to
  choose another categorical one (``--space METHOD:none`` for the learning rate only). Every other
  option stays at its default or at what ``--opt`` fixes.

**Sampler.** ``tpe`` (default): Optuna's TPE; the first half of the budget (at most 10 trials) is
sampled at random, the rest by TPE. ``grid``: the budget is spread over the space as a grid — ``trials
/ k`` log-spaced learning rates (``k`` = the option's number of values, 3 points for a numeric
option; ``trials`` must be a multiple of ``k``), trial ``n`` taking grid point ``n`` of the grid
(shuffled by ``seed``), so concurrent workers never run the same point. TPE is re-seeded for every
trial from ``(seed, trial number)``, so a single worker's study is reproducible and concurrent
workers never draw the same random point (during TPE's random start-up, trial ``n`` of every method
draws the same relative position in its own range: common random numbers across methods).

**Pruning.** ``median`` (default): Optuna's ``MedianPruner`` fed with each epoch's validation
accuracy; it never prunes in the first half of the epochs, before half the budget (at least 1
trial) has finished, or at the last epoch (whose value is the trial's). (A median of one or two
finished trials, and pruning from the first quarter of a cosine run, pruned 5 of 6 trials of most
methods in a first run of the study, leaving the first trial as "best": see the report.) ``none``
disables it.

**Objective**: the validation accuracy at the trial's *final* epoch — what the final runs report
(best-over-epochs would reward unstable settings that the final runs cannot stop at). Every trial
trains with the same seed (``train_seed`` = 1000, none of the final runs' seeds 0, 1, ...): same
initial weights and data order for every setting, so trials differ by their setting only.

**Failures** (a diverged run, or one still at chance — the rule of :mod:`.train`) are trials like
any other: ``COMPLETE``, with the objective set to chance (1 / classes, so TPE learns to avoid that
region), ``status = "failed"`` and the reason in the trial's attributes; they count against the
budget. Pruned trials count too.

**Storage, resuming, several workers.** Each (workload, method) is one Optuna study, named
``<workload>:<method>`` (``--study`` gives the workload's name, default ``<dataset>-<arch>``), all in
one database (``--storage``, default ``sqlite:///<out>/tune.db``). A worker runs trials of each method
in turn until that study has ``trials`` finished (complete or pruned) trials, waiting at the end for
trials that other workers are still running. Re-running the command resumes; ``advopt tune ... &``
twice on one storage (processes here; machines elsewhere, on a database server) shares the work:

* trial numbers are assigned by the storage, so they are distinct across workers;
* the budget is exact: a trial whose number comes after ``trials`` unfinished-or-finished earlier
  trials is marked ``FAIL`` (``over_budget``) without training — it can only happen when two workers
  start the last trial at once;
* a worker killed mid-trial leaves a ``RUNNING`` trial: a heartbeat (every 10 s) lets the other
  workers, or the next run, mark it failed after 40 s without one and re-queue its parameters; such
  infrastructure failures do not count against the budget;
* SQLite: 60 s busy timeout, write-ahead logging, and retries of the storage's setup when the
  database is locked;
* the workload's settings (data, model, epochs, space, sampler, seed, budget) are stored with each
  study and compared on every load: a study is only ever continued under the same settings.

**Outputs** (in ``--out``): ``tuning.json`` — the protocol, the budget, every method's space, every
trial's number, state, parameters, value, status and per-epoch validation accuracy, and the best
parameters per method — and ``plots/lr_sensitivity.png`` (:func:`~.plots.plot_lr_sensitivity`);
rewritten by every worker as it finishes (atomically, from the database).
"""

from __future__ import annotations

import math
import os
import socket
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import check_choice, check_int
from .atomic import write_json
from .data import DATASETS, VALIDATION_DEFAULTS, Dataset, load_dataset
from .device import DEVICES, resolve_device
from .methods import Method, TuneOption, available_methods, get_method
from .models import ARCHITECTURES
from .train import SCHEDULES, RunConfig, data_id, train_run

__all__ = [
    "LR_FACTOR",
    "TRAIN_SEED",
    "TuneConfig",
    "method_space",
    "read_tuning",
    "run_tuning",
    "study_name",
    "tuning_record",
]

LR_FACTOR = 10.0
TRAIN_SEED = 1000
SAMPLERS = ("tpe", "grid")
PRUNERS = ("median", "none")
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 40
POLL_SECONDS = 2.0
SQLITE_TIMEOUT = 60
BUDGET_STATES = ("COMPLETE", "PRUNED")  # what uses up the budget


@dataclass
class TuneConfig:
    """One tuning study: the workload, the methods, the budget, the sampler."""

    methods: list[str] = field(default_factory=list)
    trials: int = 20
    dataset: str = "mnist"
    arch: str = "mlp"
    width: int | None = None
    depth: int | None = None
    epochs: int = 3
    batch_size: int = 128
    n_train: int | None = None
    validation: int | None = None
    schedule: str = "constant"
    momentum: float = 0.9
    weight_decay: float = 0.0
    sampler: str = "tpe"
    seed: int = 0
    pruner: str = "median"
    lr_factor: float = LR_FACTOR
    train_seed: int = TRAIN_SEED
    study: str | None = None
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    spaces: dict[str, TuneOption | None] = field(default_factory=dict)
    device: str = "auto"

    def __post_init__(self) -> None:
        registered = available_methods()
        if not self.methods:
            self.methods = list(registered)
        for name in self.methods:
            if name not in registered:
                raise ValueError(f"methods must be among {', '.join(registered)}; got {name!r}")
        check_int("trials", self.trials, 1)
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("arch", self.arch, ARCHITECTURES)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("sampler", self.sampler, SAMPLERS)
        check_choice("pruner", self.pruner, PRUNERS)
        check_choice("device", self.device, DEVICES)
        check_int("seed", self.seed, 0)
        check_int("train_seed", self.train_seed, 0)
        check_int("epochs", self.epochs, 1)
        if self.validation is None:
            self.validation = VALIDATION_DEFAULTS[self.dataset]
        check_int("validation", self.validation, 0)
        if self.validation == 0:
            raise ValueError(
                "advopt tune needs a validation split (--validation > 0): selecting settings on "
                "the test set is what this protocol exists to avoid"
            )
        if not (math.isfinite(self.lr_factor) and self.lr_factor > 1):
            raise ValueError(f"lr_factor must be a finite number > 1, got {self.lr_factor}")
        if self.study is None:
            self.study = f"{self.dataset}-{self.arch}"
        if not self.study or ":" in self.study:
            raise ValueError(f"study must be a non-empty name without ':', got {self.study!r}")
        for key in ("method_options", "spaces"):
            unknown = set(getattr(self, key)) - set(self.methods)
            if unknown:
                raise ValueError(f"{key} name methods not tuned here: {sorted(unknown)}")
        for name in self.methods:  # bad options and spaces fail now, not in the first trial
            method = get_method(name, **self.method_options.get(name, {}))
            method_space(self, method)

    def workload(self) -> dict[str, Any]:
        """The settings every trial of every method shares."""
        keys = (
            "dataset",
            "arch",
            "width",
            "depth",
            "epochs",
            "batch_size",
            "n_train",
            "validation",
            "schedule",
            "momentum",
            "weight_decay",
            "train_seed",
        )
        return {key: getattr(self, key) for key in keys}


def study_name(config: TuneConfig, method: str) -> str:
    """``<workload>:<method>``: one Optuna study per (workload, method)."""
    return f"{config.study}:{method}"


def method_space(config: TuneConfig, method: Method) -> dict[str, Any]:
    """The search space of ``method`` under ``config``: the learning rate and at most one option."""
    option = config.spaces.get(method.name, method.tuned_option)
    if option is not None:
        if option.name not in method.options:
            known = ", ".join(method.options) or "none"
            raise ValueError(
                f"{method.name}: the tuned option {option.name!r} is not one of its options "
                f"({known})"
            )
        if option.name in config.method_options.get(method.name, {}):
            raise ValueError(
                f"{method.name}: option {option.name!r} is both fixed (--opt) and tuned (--space)"
            )
    default = method.default_lr
    space = {
        "lr": {
            "low": default / config.lr_factor,
            "high": default * config.lr_factor,
            "log": True,
            "default": default,
        },
        "option": option.to_dict() if option is not None else None,
    }
    if config.sampler == "grid":
        k = len(_option_grid(option)) if option is not None else 1
        if config.trials % k:
            raise ValueError(
                f"{method.name}: --sampler grid needs --trials to be a multiple of the {k} values "
                f"of its option {option.name!r}, got {config.trials}"  # type: ignore[union-attr]
            )
        space["grid"] = {"lr": _lr_grid(space["lr"], config.trials // k)}
        if option is not None:
            space["grid"][option.name] = _option_grid(option)
    return space


def _lr_grid(lr: dict[str, float], n: int) -> list[float]:
    if n == 1:
        return [lr["default"]]
    points = np.geomspace(lr["low"], lr["high"], n)
    return [float(min(max(p, lr["low"]), lr["high"])) for p in points]


def _option_grid(option: TuneOption) -> list[Any]:
    if option.choices:
        return list(option.choices)
    low, high = float(option.low), float(option.high)  # type: ignore[arg-type]
    points = np.geomspace(low, high, 3) if option.log else np.linspace(low, high, 3)
    if option.integer:
        return sorted({round(p) for p in points})
    return [float(p) for p in points]


# -- the sampler, re-seeded per trial -----------------------------------------------------------


def _trial_seed(seed: int, number: int) -> int:
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def _make_sampler(config: TuneConfig, space: dict[str, Any]) -> Any:
    import optuna

    def make(seed: int) -> optuna.samplers.BaseSampler:
        if config.sampler == "grid":
            return optuna.samplers.GridSampler(space["grid"], seed=seed)
        startup = max(1, min(10, config.trials // 2))
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)

    class TrialSeeded(optuna.samplers.BaseSampler):
        """Delegates to a fresh sampler seeded by ``(seed, trial number)`` for every trial."""

        def __init__(self) -> None:
            self._inner = make(config.seed)

        def before_trial(self, study: Any, trial: Any) -> None:
            if config.sampler != "grid":  # a grid's point order depends on its seed: keep one
                self._inner = make(_trial_seed(config.seed, trial.number))
            self._inner.before_trial(study, trial)

        def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
            return self._inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
            return self._inner.sample_relative(study, trial, search_space)

        def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
            return self._inner.sample_independent(study, trial, name, dist)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            self._inner.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:
            self._inner.reseed_rng()

    return TrialSeeded()


def _make_pruner(config: TuneConfig) -> Any:
    import optuna

    if config.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=_startup_trials(config), n_warmup_steps=_warmup_epochs(config)
    )


def _startup_trials(config: TuneConfig) -> int:
    """Trials that finish before any is pruned: half the budget (a median of fewer prunes good
    settings whose early epochs lag, as a higher learning rate's do under a cosine schedule)."""
    return max(1, config.trials // 2)


def _warmup_epochs(config: TuneConfig) -> int:
    """Epochs never pruned: the first half of the run."""
    return max(1, config.epochs // 2)


def _pruner_record(config: TuneConfig) -> dict[str, Any]:
    if config.pruner == "none":
        return {"name": "none"}
    return {
        "name": "median",
        "n_startup_trials": _startup_trials(config),
        "n_warmup_epochs": _warmup_epochs(config),
        "reports": "validation accuracy after every epoch; never pruned at the last epoch",
    }


def _sampler_record(config: TuneConfig) -> dict[str, Any]:
    record: dict[str, Any] = {"name": config.sampler, "seed": config.seed}
    if config.sampler == "tpe":
        record["per_trial_seed"] = "SeedSequence([seed, trial number])"
        record["n_startup_trials"] = max(1, min(10, config.trials // 2))
    else:
        record["order"] = "trial n evaluates point n of the grid shuffled by seed"
    return record


# -- storage ------------------------------------------------------------------------------------


def default_storage(out: Path) -> str:
    return f"sqlite:///{(out / 'tune.db').resolve()}"


def _sqlite_path(url: str) -> Path | None:
    prefix = "sqlite:///"
    if url.startswith(prefix) and url != prefix + ":memory:":
        return Path(url[len(prefix) :])
    return None


def _retry(what: str, action: Callable[[], Any], attempts: int = 12) -> Any:
    """``action()``, retried with backoff while the database is locked or being set up."""
    import sqlalchemy.exc

    delay = 0.2
    for attempt in range(attempts):
        try:
            return action()
        except (
            sqlalchemy.exc.OperationalError,
            sqlalchemy.exc.IntegrityError,
            sqlite3.OperationalError,
        ) as exc:
            if attempt == attempts - 1:
                raise ValueError(f"{what} failed: {str(exc).splitlines()[0][:200]}") from None
            time.sleep(delay * (1 + (os.getpid() % 7) / 7))  # workers back off differently
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")  # pragma: no cover


def open_storage(url: str) -> Any:
    """Optuna's RDB storage at ``url`` with heartbeats, re-queueing of killed trials, SQLite care."""
    import optuna

    engine_kwargs: dict[str, Any] = {}
    path = _sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT}

        def wal() -> None:
            # Switching the journal mode takes an exclusive lock: only the first worker does it.
            with sqlite3.connect(path, timeout=SQLITE_TIMEOUT) as db:
                if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    db.execute("PRAGMA journal_mode=WAL")

        _retry(f"opening {path}", wal)

    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    retry = retry or optuna.storages.RetryFailedTrialCallback  # its name before Optuna 4.9

    def build() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=GRACE_SECONDS,
                heartbeat_stale_trial_callback=retry(max_retry=3),
            )

    return _retry(f"opening the tuning storage {url}", build)


def _protocol(config: TuneConfig, method: str, space: dict[str, Any], data: str) -> dict[str, Any]:
    """What a study is bound to: compared on every load (see the module docstring)."""
    return {
        **config.workload(),
        "data_id": data,
        "method": method,
        "options": config.method_options.get(method, {}),
        "space": space,
        "trials": config.trials,
        "sampler": config.sampler,
        "seed": config.seed,
        "pruner": config.pruner,
    }


def _load_study(config: TuneConfig, storage: Any, method: str, protocol: dict[str, Any]) -> Any:
    import json

    import optuna

    name = study_name(config, method)

    def create() -> Any:
        return optuna.create_study(
            storage=storage,
            study_name=name,
            direction="maximize",
            sampler=_make_sampler(config, protocol["space"]),
            pruner=_make_pruner(config),
            load_if_exists=True,
        )

    study = _retry(f"creating study {name}", create)
    wanted = json.loads(json.dumps(protocol))  # as stored: tuples become lists
    saved = study.user_attrs.get("protocol")
    if saved is None:
        _retry(f"recording the protocol of {name}", lambda: study.set_user_attr("protocol", wanted))
        saved = optuna.load_study(study_name=name, storage=storage).user_attrs.get("protocol")
    if saved != wanted:
        from .train import config_differences

        differences = config_differences(saved or {}, wanted)
        raise ValueError(
            f"study {name!r} in the tuning storage was created with other settings "
            f"({'; '.join(differences)}); pass another --study or --storage to start a new one"
        )
    return study


# -- one trial ----------------------------------------------------------------------------------


class _OverBudget(Exception):
    """This trial would exceed the budget (two workers started the last trial at once)."""


def _states(study: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def _objective(
    config: TuneConfig,
    method: Method,
    space: dict[str, Any],
    dataset: Dataset,
    data: str,
    device: str,
    report: Callable[[str], None],
) -> Callable[[Any], float]:
    import optuna
    from optuna.trial import TrialState

    counted = {TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING}
    chance = 1.0 / dataset.num_classes

    def objective(trial: Any) -> float:
        earlier = [
            t
            for t in trial.study.get_trials(deepcopy=False)
            if t.number < trial.number and t.state in counted
        ]
        if len(earlier) >= config.trials:
            trial.set_user_attr("over_budget", True)
            raise _OverBudget(f"trial {trial.number} is over the budget of {config.trials}")
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        lr_space = space["lr"]
        lr = trial.suggest_float("lr", lr_space["low"], lr_space["high"], log=True)
        options = dict(config.method_options.get(method.name, {}))
        option = space["option"]
        if option is not None:
            if option["type"] == "categorical":
                value = trial.suggest_categorical(option["name"], option["choices"])
            elif option["type"] == "int":
                value = trial.suggest_int(
                    option["name"], int(option["low"]), int(option["high"]), log=option["log"]
                )
            else:
                value = trial.suggest_float(
                    option["name"], option["low"], option["high"], log=option["log"]
                )
            options[option["name"]] = value
        run = RunConfig(
            method.name,
            options=options,
            arch=config.arch,
            width=config.width,
            depth=config.depth,
            epochs=config.epochs,
            batch_size=config.batch_size,
            lr=lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            seed=config.train_seed,
            schedule=config.schedule,
            dataset=dataset.name,
            n_train=dataset.n_train,
            n_val=dataset.n_val,
            data_id=data,
            device=device,
        )
        accs: list[float] = []

        def on_epoch(record: dict[str, Any]) -> None:
            acc = record["val_acc"]
            accs.append(acc)
            trial.set_user_attr("val_acc", accs)
            last = record["epoch"] == config.epochs
            if math.isfinite(acc) and not last:
                trial.report(acc, record["epoch"])
                if trial.should_prune():
                    trial.set_user_attr("status", "pruned")
                    report(
                        f"{method.name} trial {trial.number}: {_params(trial.params)} pruned "
                        f"at epoch {record['epoch']} (val acc {acc:.4f})"
                    )
                    raise optuna.TrialPruned()

        result = train_run(run, dataset, on_epoch=on_epoch, evaluate_test=False)
        trial.set_user_attr("status", result.status)
        trial.set_user_attr("seconds", sum(h["train_seconds"] for h in result.history))
        if not result.ok:
            trial.set_user_attr("failure", result.failure)
            report(
                f"{method.name} trial {trial.number}: {_params(trial.params)} FAILED "
                f"({result.failure}); objective = chance {chance:.3f}"
            )
            return chance
        value = float(result.final["val_acc"])
        report(
            f"{method.name} trial {trial.number}: {_params(trial.params)} -> val acc {value:.4f}"
        )
        return value

    return objective


def _params(params: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


# -- the worker ---------------------------------------------------------------------------------


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            yield
        finally:
            optuna.logging.set_verbosity(level)


def prepare_tuning_data(
    config: TuneConfig,
    data_dir: str | None = None,
    check_sums: bool = True,
    dataset: Dataset | None = None,
) -> Dataset:
    """The tuning data: validation split carved off, ``n_train`` of the rest, and no test split."""
    if dataset is None:
        dataset = load_dataset(config.dataset, data_dir=data_dir, check_sums=check_sums)
    if dataset.n_val:
        if dataset.n_val != config.validation:
            raise ValueError(
                f"the dataset given has a validation split of {dataset.n_val} samples, the "
                f"tuning asks for {config.validation} (--validation)"
            )
    else:
        dataset = dataset.split_validation(config.validation)  # type: ignore[arg-type]
    return dataset.subset(config.n_train, None).without_test()


def run_tuning(
    config: TuneConfig,
    out_dir: str | os.PathLike,
    storage: str | None = None,
    data_dir: str | None = None,
    dataset: Dataset | None = None,
    check_sums: bool = True,
    report: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run (or continue, or help another worker with) the study of every method; write outputs.

    Returns the ``tuning.json`` record. ``dataset``: these tensors instead of loading
    ``config.dataset`` (see :func:`prepare_tuning_data`). ``report``: called with one line per
    finished trial (default: print).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    url = storage or default_storage(out)
    say = report or (lambda line: print(line, flush=True))
    device = resolve_device(config.device).type
    data = prepare_tuning_data(config, data_dir, check_sums, dataset)
    digest = data_id(data)
    with _quiet_optuna():
        store = open_storage(url)
        studies = {}
        for name in config.methods:  # every study checked before any training
            method = get_method(name, **config.method_options.get(name, {}))
            space = method_space(config, method)
            protocol = _protocol(config, name, space, digest)
            studies[name] = (method, space, _load_study(config, store, name, protocol))
        for wait in (False, True):  # run what is free; then wait for other workers' trials
            for method, space, study in studies.values():
                objective = _objective(config, method, space, data, digest, device, say)
                _work(config, study, objective, wait)
        record = tuning_record(config, store, url, digest, data)
    write_json(out / "tuning.json", record)
    from .plots import plot_lr_sensitivity

    plot_lr_sensitivity(record, out / "plots" / "lr_sensitivity.png")
    return record


def _work(config: TuneConfig, study: Any, objective: Callable[[Any], float], wait: bool) -> None:
    """Run trials of ``study`` while its budget has room; with ``wait``, until it is used up."""
    import optuna

    while True:
        counts = _states(study)
        done = sum(counts.get(s, 0) for s in BUDGET_STATES)
        if done >= config.trials:
            return
        if done + counts.get("RUNNING", 0) < config.trials:
            study.optimize(objective, n_trials=1, catch=(_OverBudget,))
            continue
        if not wait:
            return
        optuna.storages.fail_stale_trials(study)  # a killed worker's trial: re-queued after grace
        time.sleep(POLL_SECONDS)


def tuning_record(
    config: TuneConfig, storage: Any, url: str, digest: str, dataset: Dataset
) -> dict[str, Any]:
    """The ``tuning.json`` record, read from the storage (every worker's trials)."""
    import optuna

    chance = 1.0 / dataset.num_classes
    methods = {}
    for name in config.methods:
        study = optuna.load_study(study_name=study_name(config, name), storage=storage)
        space = study.user_attrs["protocol"]["space"]
        trials = []
        for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
            accs = t.user_attrs.get("val_acc", [])
            trials.append(
                {
                    "number": t.number,
                    "state": t.state.name,
                    "params": dict(t.params),
                    "value": t.value,
                    "status": t.user_attrs.get(
                        "status", "over budget" if t.user_attrs.get("over_budget") else None
                    ),
                    "failure": t.user_attrs.get("failure"),
                    "val_acc": accs,
                    "last_val_acc": accs[-1] if accs else None,
                    "seconds": t.user_attrs.get("seconds"),
                    "worker": t.user_attrs.get("worker"),
                }
            )
        complete = [t for t in trials if t["state"] == "COMPLETE" and t["status"] == "ok"]
        best = max(complete, key=lambda t: (t["value"], -t["number"]), default=None)
        methods[name] = {
            "study": study_name(config, name),
            "space": space,
            "options": config.method_options.get(name, {}),
            "counts": {
                "complete": sum(t["state"] == "COMPLETE" for t in trials),
                "failed_runs": sum(t["status"] == "failed" for t in trials),
                "pruned": sum(t["state"] == "PRUNED" for t in trials),
                "errors": sum(t["state"] == "FAIL" for t in trials),
                "running": sum(t["state"] == "RUNNING" for t in trials),
            },
            "trials": trials,
            "best": (
                {"number": best["number"], "params": best["params"], "value": best["value"]}
                if best
                else None
            ),
        }
    return {
        "protocol": {
            **config.workload(),
            "workload": config.study,
            "data_id": digest,
            "n_train_used": dataset.n_train,
            "n_val": dataset.n_val,
            "test_set": "not loaded: tuning never reads it",
            "chance": chance,
            "device": resolve_device(config.device).type,
        },
        "budget": {
            "trials": config.trials,
            "per": "method (the same for every method)",
            "counts_against_it": "completed trials (failed runs included, objective = chance) "
            "and pruned trials; infrastructure failures (killed workers) are re-queued",
        },
        "objective": "validation accuracy at the final epoch (failed run: chance)",
        "lr_factor": config.lr_factor,
        "sampler": _sampler_record(config),
        "pruner": _pruner_record(config),
        "storage": _public_url(url),
        "methods": methods,
    }


def _public_url(url: str) -> str:
    """``url`` without a password, if it has one."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def read_tuning(path: str | os.PathLike) -> dict[str, Any]:
    """A ``tuning.json`` (for reports and ``advopt compare --tuned``)."""
    import json

    return json.loads(Path(path).read_text())


def tuning_table(record: dict[str, Any]) -> str:
    """A Markdown table of the best settings per method."""
    lines = [
        f"Budget: {record['budget']['trials']} trials per method, sampler "
        f"{record['sampler']['name']} (seed {record['sampler']['seed']}), pruner "
        f"{record['pruner']['name']}; objective: {record['objective']}.",
        "",
        "| method | complete | failed runs | pruned | lr range | option | best lr | best option "
        "| best val acc % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in record["methods"].items():
        lr = m["space"]["lr"]
        option = m["space"]["option"]
        best = m["best"]
        opt_text = "—"
        if option:
            values = option.get("choices") or f"{option['low']}..{option['high']}"
            opt_text = f"{option['name']} ∈ {values}"
        best_opt = "—"
        if best and option:
            best_opt = f"{best['params'].get(option['name'])}"
        lines.append(
            f"| {name} | {m['counts']['complete']} | {m['counts']['failed_runs']} | "
            f"{m['counts']['pruned']} | {lr['low']:.2g}–{lr['high']:.2g} | {opt_text} | "
            f"{best['params']['lr']:.3g} | {best_opt} | {100 * best['value']:.2f} |"
            if best
            else f"| {name} | {m['counts']['complete']} | {m['counts']['failed_runs']} | "
            f"{m['counts']['pruned']} | {lr['low']:.2g}–{lr['high']:.2g} | {opt_text} | — | — | — |"
        )
    return "\n".join(lines) + "\n"


def parse_space(text: str) -> tuple[str, TuneOption | None]:
    """``METHOD:NAME=V1,V2,...`` → (method, categorical option); ``METHOD:none`` → (method, None)."""
    import ast

    try:
        method, rest = text.split(":", 1)
    except ValueError:
        raise ValueError(f"--space takes METHOD:NAME=V1,V2 or METHOD:none, got {text!r}") from None
    if rest.strip() == "none":
        return method.strip(), None
    try:
        name, raw = rest.split("=", 1)
    except ValueError:
        raise ValueError(f"--space takes METHOD:NAME=V1,V2 or METHOD:none, got {text!r}") from None
    values: list[Any] = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            values.append(ast.literal_eval(part))
        except (ValueError, SyntaxError):
            values.append(part)
    if len(values) < 2:
        raise ValueError(f"--space {text!r}: give at least two values to choose from")
    return method.strip(), TuneOption(name.strip(), choices=tuple(values))


def trial_counts(record: dict[str, Any]) -> dict[str, int]:
    """Finished trials (complete + pruned) per method, from a ``tuning.json`` record."""
    return {
        name: m["counts"]["complete"] + m["counts"]["pruned"]
        for name, m in record["methods"].items()
    }
