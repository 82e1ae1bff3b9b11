"""``advopt tune``: the same tuning budget for every method, selected on the validation split.

The protocol follows AlgoPerf's external-tuning ruleset and DeepOBS: every method — baselines,
peers and our algorithms alike — gets the same number of trials (``trials``, the *budget*) over its
learning rate and at most one option of its own, each trial is a full training run of the workload
scored on the **validation** split, and the test set is never read (the tuning data has no test
split at all: :meth:`~.data.Dataset.without_test`). The final runs are then ``advopt compare
--tuned tuning.json`` at each method's best setting, over seeds, with the test set read once per run.

This module runs the trials; the parts live in :mod:`.tuning` and are re-exported here: the
**search space** and the study's settings (:mod:`.tuning.config`), the **sampler** and the
**pruning** (:mod:`.tuning.sampling`), the **storage** shared by several workers
(:mod:`.tuning.storage`) and the **outputs** (:mod:`.tuning.record`).

**Objective**: the validation accuracy at the trial's *final* epoch — what the final runs report
(best-over-epochs would reward unstable settings that the final runs cannot stop at). Every trial
trains with the same seed (``train_seed`` = 1000, none of the final runs' seeds 0, 1, ...): same
initial weights and data order for every setting, so trials differ by their setting only.

**Failures** (a diverged run, or one still at chance — the rule of :mod:`.train`) are trials like
any other: ``COMPLETE``, with the objective set to chance (1 / classes, so TPE learns to avoid that
region), ``status = "failed"`` and the reason in the trial's attributes; they count against the
budget. Pruned trials count too.

**Resuming, several workers.** A worker runs trials of each method in turn until that method's
study has ``trials`` finished (complete or pruned) trials, waiting at the end for trials that other
workers are still running. Re-running the command resumes; ``advopt tune ... &`` twice on one
storage (processes here; machines elsewhere, on a database server) shares the work. The budget is
exact: a trial whose number comes after ``trials`` unfinished-or-finished earlier trials is marked
``FAIL`` (``over_budget``) without training — it can only happen when two workers start the last
trial at once. What the storage guarantees (distinct trial numbers, killed workers' trials
re-queued, SQLite care, a study continued only under the same settings): :mod:`.tuning.storage`.
"""

from __future__ import annotations

import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .._validation import check_choice as check_choice
from .._validation import check_int as check_int
from .atomic import write_json, write_text
from .data import DATASETS as DATASETS
from .data import VALIDATION_DEFAULTS as VALIDATION_DEFAULTS
from .data import Dataset, load_dataset
from .device import DEVICES as DEVICES
from .device import resolve_device
from .methods import Method, get_method
from .methods import TuneOption as TuneOption
from .methods import available_methods as available_methods
from .models import ARCHITECTURES as ARCHITECTURES
from .train import SCHEDULES as SCHEDULES
from .train import RunConfig, data_id, train_run
from .tuning.config import LR_FACTOR as LR_FACTOR
from .tuning.config import PRUNERS as PRUNERS
from .tuning.config import SAMPLERS as SAMPLERS
from .tuning.config import TRAIN_SEED as TRAIN_SEED
from .tuning.config import TuneConfig, method_space
from .tuning.config import _lr_grid as _lr_grid
from .tuning.config import _option_grid as _option_grid
from .tuning.config import parse_space as parse_space
from .tuning.config import study_name as study_name
from .tuning.record import _public_url as _public_url
from .tuning.record import read_tuning as read_tuning
from .tuning.record import trial_counts as trial_counts
from .tuning.record import tuning_record
from .tuning.record import tuning_table as tuning_table
from .tuning.sampling import _make_pruner as _make_pruner
from .tuning.sampling import _make_sampler as _make_sampler
from .tuning.sampling import _pruner_record as _pruner_record
from .tuning.sampling import _sampler_record as _sampler_record
from .tuning.sampling import _startup_trials as _startup_trials
from .tuning.sampling import _trial_seed as _trial_seed
from .tuning.sampling import _warmup_epochs as _warmup_epochs
from .tuning.storage import GRACE_SECONDS as GRACE_SECONDS
from .tuning.storage import HEARTBEAT_SECONDS as HEARTBEAT_SECONDS
from .tuning.storage import SQLITE_TIMEOUT as SQLITE_TIMEOUT
from .tuning.storage import _load_study, _protocol, default_storage, open_storage
from .tuning.storage import _retry as _retry
from .tuning.storage import _sqlite_path as _sqlite_path

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
# The names imported above as ``name as name`` are re-exported: this module held them before its
# parts moved to :mod:`.tuning`, and other code imports them from here.

POLL_SECONDS = 2.0
BUDGET_STATES = ("COMPLETE", "PRUNED")  # what uses up the budget


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
    dataset = dataset.with_validation(config.validation, "the tuning")  # type: ignore[arg-type]
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
    write_text(out / "tuning.md", tuning_table(record))
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
