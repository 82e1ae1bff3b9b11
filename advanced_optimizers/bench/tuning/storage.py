"""The tuning storage: one Optuna study per (workload, method), shared by several workers.

Each (workload, method) is one Optuna study, named ``<workload>:<method>`` (``--study`` gives the
workload's name, default ``<dataset>-<arch>``), all in one database (``--storage``, default
``sqlite:///<out>/tune.db``). What the storage gives the workers of :func:`~..tune.run_tuning`:

* trial numbers are assigned by the storage, so they are distinct across workers;
* a worker killed mid-trial leaves a ``RUNNING`` trial: a heartbeat (every 10 s) lets the other
  workers, or the next run, mark it failed after 40 s without one and re-queue its parameters; such
  infrastructure failures do not count against the budget;
* SQLite: 60 s busy timeout, write-ahead logging, and retries of the storage's setup when the
  database is locked;
* the workload's settings (data, model, epochs, space, sampler, seed, budget) are stored with each
  study and compared on every load: a study is only ever continued under the same settings.
"""

from __future__ import annotations

import os
import sqlite3
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import TuneConfig, study_name
from .sampling import _make_pruner, _make_sampler

__all__ = ["default_storage", "open_storage"]

HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 40
SQLITE_TIMEOUT = 60


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
        from ..train import config_differences

        differences = config_differences(saved or {}, wanted)
        raise ValueError(
            f"study {name!r} in the tuning storage was created with other settings "
            f"({'; '.join(differences)}); pass another --study or --storage to start a new one"
        )
    return study
