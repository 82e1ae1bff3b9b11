"""μTransfer as the paper claims it: tune a narrow proxy, transfer to the target width, and compare
with SP tuned *at the target width* under the same budget (``advopt mu-study``).

**Workload** (:class:`StudyConfig`): the harness MLP ``784-w-w-10`` (depth 2) on a training subset of
MNIST, with a validation split carved off the end of the official training set
(:meth:`~..data.Dataset.split_validation`), Adam (harness method ``mup-adam``), batch 128, a constant
learning rate, a few epochs.

**Routes**, each with the same number of trials over the same space ``{lr, readout_multiplier,
init_scale}`` (all log-uniform), the same seeded TPE sampler and the same objective:

* ``mup`` (μTransfer): μP, tuned at the proxy width (``base_width`` = proxy width, so the proxy *is*
  an SP model with the two multipliers), the best setting then used unchanged at the target width;
* ``sp``: standard parametrization with the same two multipliers
  (``mup-adam`` with ``parametrization="sp"``), tuned directly at the target width.

**Tuning protocol.** Every trial is a full training run with seed ``train_seed`` (1000, as ``advopt
tune``: none of the final runs' seeds), scored by its final-epoch **validation** accuracy; the tuning
data has no test split (:meth:`~..data.Dataset.without_test`). A failed run (diverged, or at chance:
the rule of :mod:`..train`) scores chance. No pruning: every trial costs a full run, so the compute
of a route is the sum of its trials. Sampler: Optuna's multivariate TPE, its first ``trials // 2``
trials random; re-seeded for the *n*-th trial from ``(sampler_seed, n)``, so both routes draw the
same random start-up points (common random numbers) and a resumed study draws what an
uninterrupted one would. The trials live in an SQLite file (``study.db``): a re-run continues; a
trial left ``RUNNING`` by a killed process is marked ``FAIL`` and run again (one worker at a time).

**Final runs**: each route's best setting at the target width, ``seeds`` (0..4), the test set read
once at the end of each run (:func:`~..train.train_run` with ``evaluate_test=True``). Reported:
validation / test accuracy and training loss (mean ± std over seeds), the paired difference μP − SP
over the shared seeds, and each route's tuning compute — wall seconds of its trials (training and
per-epoch evaluation) and FLOPs (:func:`run_flops`) — with their ratio, the "fraction of the tuning
cost" of μTransfer.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_json
from ..data import Dataset
from ..stats import mean_ci, paired_test
from ..train import RunConfig, RunResult, data_id, train_run
from ..tune import TRAIN_SEED

__all__ = [
    "METHOD",
    "ROUTES",
    "StudyConfig",
    "final_runs",
    "param_count",
    "route_options",
    "run_flops",
    "summarize_routes",
    "tune_route",
]

METHOD = "mup-adam"
ROUTES = ("mup", "sp")
SPACE = ("lr", "readout_multiplier", "init_scale")


@dataclass(frozen=True)
class StudyConfig:
    """The μTransfer study: workload, space, budget, seeds (see the module docstring)."""

    dataset: str = "mnist"
    n_train: int = 10_000
    validation: int = 10_000
    n_test: int | None = None
    depth: int = 2
    epochs: int = 5
    batch_size: int = 128
    proxy_width: int = 64
    target_width: int = 2048
    trials: int = 12
    lr: tuple[float, float] = (2.0**-14, 2.0**-4)
    readout_multiplier: tuple[float, float] = (2.0**-4, 2.0**4)
    init_scale: tuple[float, float] = (2.0**-2, 2.0**2)
    sampler_seed: int = 0
    train_seed: int = TRAIN_SEED
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    widths: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    width_seeds: tuple[int, ...] = (0, 1, 2)
    long_epochs: int = 15
    oracle: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # recorded, not used (notes)

    def __post_init__(self) -> None:
        for name in ("lr", "readout_multiplier", "init_scale"):
            low, high = getattr(self, name)
            if not 0 < low < high:
                raise ValueError(f"{name} range must be 0 < low < high, got {(low, high)}")
        if self.trials < 1 or self.epochs < 1 or self.long_epochs < self.epochs:
            raise ValueError("trials >= 1, epochs >= 1 and long_epochs >= epochs are needed")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))  # tuples as lists: as stored

    def tune_width(self, route: str) -> int:
        return self.proxy_width if route == "mup" else self.target_width


def route_options(config: StudyConfig, route: str, setting: dict[str, float]) -> dict[str, Any]:
    """The ``mup-adam`` options of ``route`` at ``setting`` (``readout_multiplier``, ``init_scale``)."""
    return {
        "parametrization": "mup" if route == "mup" else "sp",
        "base_width": config.proxy_width,  # not used by SP
        "readout_multiplier": float(setting["readout_multiplier"]),
        "init_scale": float(setting["init_scale"]),
    }


def run_config(
    config: StudyConfig,
    route: str,
    setting: dict[str, float],
    width: int,
    seed: int,
    data: Dataset,
    epochs: int | None = None,
) -> RunConfig:
    return RunConfig(
        METHOD,
        options=route_options(config, route, setting),
        arch="mlp",
        width=width,
        depth=config.depth,
        epochs=epochs or config.epochs,
        batch_size=config.batch_size,
        lr=float(setting["lr"]),
        seed=seed,
        dataset=data.name,
        n_train=data.n_train,
        n_val=data.n_val,
        n_test=data.n_test if data.n_test else None,
        data_id=data_id(data),
    )


def param_count(width: int, depth: int, n_in: int = 784, n_out: int = 10) -> int:
    """Parameters of the MLP ``n_in-w-…-w-n_out`` with biases."""
    fan, total = n_in, 0
    for _ in range(depth):
        total += fan * width + width
        fan = width
    return total + fan * n_out + n_out


def run_flops(
    width: int, depth: int, n_train: int, n_val: int, epochs_run: int, train_eval: int = 10_000
) -> dict[str, float]:
    """Estimated FLOPs of a run: training ``6·N·samples``, evaluation ``2·N·samples`` (per epoch the
    harness evaluates the first ``min(train_eval, n_train)`` training samples and the validation
    split), ``N`` the parameter count."""
    n = param_count(width, depth)
    train = 6.0 * n * n_train * epochs_run
    evaluation = 2.0 * n * (min(train_eval, n_train) + n_val) * epochs_run
    return {"train": train, "eval": evaluation, "total": train + evaluation}


# -- tuning -------------------------------------------------------------------------------------


def _trial_seed(seed: int, n: int) -> int:
    return int(np.random.SeedSequence([seed, n]).generate_state(1)[0])


def _protocol(config: StudyConfig, route: str, data: Dataset) -> dict[str, Any]:
    keep = ("n_train", "validation", "depth", "epochs", "batch_size", "proxy_width",
            "target_width", "trials", "lr", "readout_multiplier", "init_scale", "sampler_seed",
            "train_seed")  # fmt: skip
    full = config.to_dict()
    return {
        "route": route,
        "method": METHOD,
        "width": config.tune_width(route),
        "data_id": data_id(data),
        **{k: full[k] for k in keep},
    }


def _open_study(config: StudyConfig, route: str, url: str, data: Dataset, sampler: Any) -> Any:
    import optuna

    study = optuna.create_study(
        study_name=route, storage=url, direction="maximize", sampler=sampler, load_if_exists=True
    )
    wanted = _protocol(config, route, data)
    saved = study.user_attrs.get("protocol")
    if saved is None:
        study.set_user_attr("protocol", wanted)
    elif saved != wanted:
        diff = [
            f"{k}: saved {saved.get(k)!r}, now {v!r}"
            for k, v in wanted.items()
            if saved.get(k) != v
        ]
        raise ValueError(
            f"study {route!r} in {url} was started with other settings ({'; '.join(diff)}); "
            "use another --out directory"
        )
    return study


def _objective(
    config: StudyConfig, route: str, data: Dataset, say: Callable[[str], None]
) -> Callable[[Any], float]:
    chance = 1.0 / data.num_classes
    width = config.tune_width(route)

    def objective(trial: Any) -> float:
        setting = {
            name: trial.suggest_float(name, *getattr(config, name), log=True) for name in SPACE
        }
        run = run_config(config, route, setting, width, config.train_seed, data)
        start = time.perf_counter()
        result = train_run(run, data, evaluate_test=False)
        wall = time.perf_counter() - start
        final = result.final
        flops = run_flops(width, config.depth, data.n_train, data.n_val, len(result.history))
        attrs = {
            "status": result.status,
            "failure": result.failure,
            "wall_seconds": wall,
            "train_seconds": sum(h["train_seconds"] for h in result.history),
            "flops": flops["total"],
            "train_flops": flops["train"],
            "val_acc": [h["val_acc"] for h in result.history],
            "val_loss": final["val_loss"],
            "train_loss": final["train_loss"],
            "train_ce": final["train_ce"],
        }
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        value = float(final["val_acc"]) if result.ok else chance
        text = ", ".join(f"{k}={v:.4g}" for k, v in setting.items())
        say(
            f"{route} trial {trial.number} (width {width}): {text} -> val acc {value:.4f} "
            f"({result.status}, {wall:.1f} s)"
        )
        return value

    return objective


def tune_route(
    config: StudyConfig,
    route: str,
    data: Dataset,
    url: str,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run (or continue) ``route``'s study to ``config.trials`` complete trials; return its record.

    ``data``: the tuning data (validation split, no test split). ``url``: the Optuna storage.
    """
    import optuna
    from optuna.trial import TrialState

    if data.n_test:
        raise ValueError("the tuning data must have no test split (Dataset.without_test())")
    if not data.n_val:
        raise ValueError("the tuning data needs a validation split (Dataset.split_validation)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _open_study(config, route, url, data, None)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)  # left by a killed process
        say(f"{route} trial {trial.number}: left running by an interrupted run, marked FAIL")
    objective = _objective(config, route, data, say)
    while True:
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        if done >= config.trials:
            break
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(
                seed=_trial_seed(config.sampler_seed, done),
                n_startup_trials=max(1, config.trials // 2),
                multivariate=True,
            )
            study = _open_study(config, route, url, data, sampler)
            study.optimize(objective, n_trials=1)
    return route_record(study)


def route_record(study: Any) -> dict[str, Any]:
    """Trials (complete ones), the best one (highest validation accuracy among runs that did not
    fail; ties: the earlier), and the route's compute: sums over its complete trials."""
    from optuna.trial import TrialState

    trials = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if t.state != TrialState.COMPLETE:
            continue
        trials.append(
            {"number": t.number, "params": dict(t.params), "value": t.value, **t.user_attrs}
        )
    ok = [t for t in trials if t["status"] == "ok"]
    best = max(ok, key=lambda t: (t["value"], -t["number"]), default=None)
    return {
        "protocol": study.user_attrs.get("protocol"),
        "trials": trials,
        "best": best,
        "compute": {
            key: float(sum(t[key] for t in trials))
            for key in ("wall_seconds", "train_seconds", "flops", "train_flops")
        },
        "failed_runs": sum(t["status"] != "ok" for t in trials),
    }


# -- final runs ---------------------------------------------------------------------------------


def final_runs(
    config: StudyConfig,
    route: str,
    setting: dict[str, float],
    data: Dataset,
    out: Path,
    say: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Each seed's run of ``route`` at ``setting`` and the target width, the test set read once at
    its end; one JSON file per run under ``out`` (an existing file of the same config is reused)."""
    rows = []
    for seed in config.seeds:
        run = run_config(config, route, setting, config.target_width, seed, data)
        path = out / f"{route}_seed{seed}.json"
        saved = json.loads(path.read_text()) if path.exists() else None
        if saved is not None and saved["run"]["config"] == json.loads(json.dumps(run.to_dict())):
            rows.append(saved)
            continue
        start = time.perf_counter()
        result = train_run(run, data, evaluate_test=True)
        row = {"route": route, "seed": seed, "wall_seconds": time.perf_counter() - start,
               "run": result.to_dict()}  # fmt: skip
        write_json(path, row)
        final = result.final
        say(
            f"final {route} seed {seed}: val acc {final['val_acc']:.4f}, test acc "
            f"{final['test_acc'] if final['test_acc'] is None else round(final['test_acc'], 4)}, "
            f"train loss {final['train_loss']:.4f} ({row['wall_seconds']:.0f} s)"
        )
        rows.append(row)
    return rows


_METRICS = ("val_acc", "test_acc", "train_loss", "train_ce", "val_loss")


def _finals_metrics(rows: list[dict[str, Any]]) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {m: {} for m in _METRICS}
    for row in rows:
        result = RunResult.from_dict(row["run"])
        for metric in _METRICS:
            value = result.final.get(metric)
            out[metric][row["seed"]] = math.nan if value is None else float(value)
    return out


def summarize_routes(
    tuning: dict[str, dict[str, Any]], finals: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """Per route: budget, compute, chosen setting, final metrics (mean, std, n); the paired μP − SP
    differences over shared seeds; the cost fractions μP / SP."""
    routes: dict[str, Any] = {}
    metrics = {route: _finals_metrics(rows) for route, rows in finals.items()}
    failed = {r: sum(row["run"]["status"] != "ok" for row in rows) for r, rows in finals.items()}
    for route, record in tuning.items():
        entry = {
            "trials": len(record["trials"]),
            "failed_runs": record["failed_runs"],
            "compute": record["compute"],
            "setting": record["best"]["params"] if record["best"] else None,
            "tuning_val_acc": record["best"]["value"] if record["best"] else None,
            "final_runs": len(finals.get(route, [])),
            "final_failed": failed.get(route, 0),
        }
        for metric, per_seed in metrics.get(route, {}).items():
            values = [v for v in per_seed.values() if math.isfinite(v)]
            if values:
                stats = mean_ci(values)
                entry[metric] = {"mean": stats["mean"], "std": stats["std"], "n": len(values)}
        routes[route] = entry
    out: dict[str, Any] = {"routes": routes}
    if "mup" in tuning and "sp" in tuning:
        a, b = tuning["mup"]["compute"], tuning["sp"]["compute"]
        out["cost_fraction"] = {
            key: a[key] / b[key] if b[key] else math.nan
            for key in ("wall_seconds", "train_seconds", "flops", "train_flops")
        }
    if "mup" in metrics and "sp" in metrics:
        paired = {}
        for metric in _METRICS:
            seeds = sorted(set(metrics["mup"][metric]) & set(metrics["sp"][metric]))
            x = [metrics["mup"][metric][s] for s in seeds]
            y = [metrics["sp"][metric][s] for s in seeds]
            if seeds and all(math.isfinite(v) for v in x + y):
                test = paired_test(x, y)
                paired[metric] = {"seeds": seeds, **test}
        out["paired_mup_minus_sp"] = paired
    return out
