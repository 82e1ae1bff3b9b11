"""The sampler, re-seeded for every trial, and the pruner of a tuning study.

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
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import TuneConfig


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
