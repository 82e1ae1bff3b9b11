"""The ``tuning.json`` record of a tuning study, read back, and its Markdown table.

**Outputs** (in ``--out``): ``tuning.json`` — the protocol, the budget, every method's space, every
trial's number, state, parameters, value, status and per-epoch validation accuracy, and the best
parameters per method —, ``tuning.md`` (:func:`tuning_table`, the best setting per method) and
``plots/lr_sensitivity.png`` (:func:`~..plots.plot_lr_sensitivity`);
rewritten by every worker as it finishes (atomically, from the database).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..data import Dataset
from ..device import resolve_device
from .config import TuneConfig, study_name
from .sampling import _pruner_record, _sampler_record

__all__ = ["read_tuning", "trial_counts", "tuning_record", "tuning_table"]


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


def trial_counts(record: dict[str, Any]) -> dict[str, int]:
    """Finished trials (complete + pruned) per method, from a ``tuning.json`` record."""
    return {
        name: m["counts"]["complete"] + m["counts"]["pruned"]
        for name, m in record["methods"].items()
    }
