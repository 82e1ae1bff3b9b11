"""``advopt mu-study``: the μTransfer study's stages, resumable, and its outputs.

Stages (``--stages``, in this order; ``report`` alone writes only the report): ``tune`` (both
routes' studies, :mod:`.routes`), ``final`` (each route's best setting over the final seeds, the
test set read once per run), ``widths`` (the μP route's setting at every width, ours and the oracle,
:mod:`.widths`), ``check`` (the step-by-step trajectory comparison with the oracle), then the report
(always): ``study.json`` (every number), ``study.md`` (the tables), ``widths.png`` and
``tuning.png``. Files under ``--out``: ``config.json`` (the study's settings; a re-run with other
settings is refused), ``study.db`` (Optuna, SQLite), ``tuning.json``, ``finals/<route>_seed<s>.json``
(harness run records), ``widths/<impl>_w<width>_s<seed>.json``, ``trajectory.json``. Every stage
reuses what is there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..atomic import write_json, write_text
from ..data import Dataset, load_dataset
from ..methods import get_method
from .routes import (
    METHOD,
    ROUTES,
    StudyConfig,
    _open_study,
    final_runs,
    route_record,
    run_config,
    summarize_routes,
    tune_route,
)
from .widths import trajectory_check, width_summary, width_sweep

__all__ = ["STAGES", "load_tuning", "run_study", "study_data"]

STAGES = ("tune", "final", "widths", "check")


def study_data(
    config: StudyConfig, dataset: Dataset | None = None, data_dir: str | None = None
) -> Dataset:
    """The study's data: validation split carved off the training set, ``n_train`` of the rest,
    ``n_test`` test samples (all by default). Tuning and the width sweep use it ``without_test()``."""
    if dataset is None:
        dataset = load_dataset(config.dataset, data_dir=data_dir, progress=False)
    if not dataset.n_val:
        dataset = dataset.split_validation(config.validation)
    elif dataset.n_val != config.validation:
        raise ValueError(
            f"the dataset has {dataset.n_val} validation samples, not {config.validation}"
        )
    return dataset.subset(config.n_train, config.n_test)


def _storage(out: Path) -> str:
    return f"sqlite:///{(out / 'study.db').resolve()}"


def load_tuning(config: StudyConfig, out: Path, data: Dataset) -> dict[str, dict[str, Any]]:
    """The routes' tuning records from ``out/study.db`` (routes without a study are left out)."""
    import optuna

    if not (out / "study.db").exists():
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = {s.study_name for s in optuna.get_all_study_summaries(_storage(out))}
    return {
        route: route_record(_open_study(config, route, _storage(out), data, None))
        for route in ROUTES
        if route in names
    }


def _saved_finals(config: StudyConfig, out: Path, route: str, setting: dict, data: Dataset) -> list:
    rows = []
    for seed in config.seeds:
        path = out / "finals" / f"{route}_seed{seed}.json"
        if path.exists():
            row = json.loads(path.read_text())
            wanted = json.loads(json.dumps(run_config(config, route, setting, config.target_width,
                                                      seed, data).to_dict()))  # fmt: skip
            if row["run"]["config"] == wanted:
                rows.append(row)
    return rows


def _check_config(config: StudyConfig, out: Path) -> None:
    path = out / "config.json"
    wanted = config.to_dict()
    if path.exists():
        saved = json.loads(path.read_text())
        if saved != wanted:
            diff = [f"{k}: saved {saved.get(k)!r}, now {v!r}" for k, v in wanted.items()
                    if saved.get(k) != v]  # fmt: skip
            raise ValueError(
                f"{out} holds a study with other settings ({'; '.join(diff)}); use another --out"
            )
    else:
        write_json(path, wanted)


def run_study(
    config: StudyConfig,
    out: str | os.PathLike,
    *,
    dataset: Dataset | None = None,
    data_dir: str | None = None,
    stages: Sequence[str] = STAGES,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run ``stages`` (each resumes from what ``out`` holds), then write the report; return it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stages = [s for s in stages if s != "report"]  # the report is always written
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; stages are {list(STAGES)}")
    _check_config(config, out)
    data = study_data(config, dataset, data_dir)
    tuning_data = data.without_test()
    if "tune" in stages:
        _warm_up()
        for route in ROUTES:
            tune_route(config, route, tuning_data, _storage(out), say)
    tuning = load_tuning(config, out, tuning_data)
    write_json(out / "tuning.json", tuning)
    best = {r: rec["best"]["params"] for r, rec in tuning.items() if rec["best"] is not None}
    finals = {}
    for route, setting in best.items():
        if "final" in stages:
            finals[route] = final_runs(config, route, setting, data, out / "finals", say)
        else:
            finals[route] = _saved_finals(config, out, route, setting, data)
    widths: list[dict[str, Any]] = []
    trajectory: list[dict[str, Any]] = []
    if "mup" in best:
        implementations = ("ours", "oracle") if config.oracle else ("ours",)
        if "widths" in stages:
            widths = width_sweep(config, best["mup"], tuning_data, out / "widths", say,
                                 implementations)  # fmt: skip
        else:
            widths = [json.loads(p.read_text()) for p in sorted((out / "widths").glob("*.json"))]
            widths = [w for w in widths if w["key"]["setting"] == best["mup"]]
        if "check" in stages and config.oracle:
            trajectory = trajectory_check(config, best["mup"], tuning_data)
            write_json(out / "trajectory.json", trajectory)
        elif (out / "trajectory.json").exists():
            trajectory = json.loads((out / "trajectory.json").read_text())
    from .report import plot_tuning, plot_widths, study_markdown

    report = {
        "config": config.to_dict(),
        "data": {"n_train": data.n_train, "n_val": data.n_val, "n_test": data.n_test},
        **summarize_routes(tuning, {r: f for r, f in finals.items() if f}),
        "widths": width_summary(widths, (config.epochs, config.long_epochs)) if widths else None,
        "trajectory": trajectory,
        "consistency": _consistency(finals.get("mup", []), widths, config),
    }
    write_json(out / "study.json", report)
    write_text(out / "study.md", study_markdown(report, tuning))
    if tuning:
        plot_tuning(tuning, out / "tuning.png")
    if report["widths"]:
        plot_widths(report["widths"], out / "widths.png")
    return report


def _warm_up() -> None:
    """One step of a tiny model: the one-time imports (the harness's plugins, torch's lazily
    imported compiler modules, ~2 s) happen here, not inside the first trial's clock."""
    import torch
    import torch.nn.functional as F

    from ..methods import Setup
    from ..models import ModelSpec

    method = get_method(METHOD)
    model = method.build_model(ModelSpec("mlp", (1, 4, 4), 3, width=4, depth=2))
    setup = Setup(lr=1e-3, epochs=1, steps_per_epoch=1, n_train=2, num_classes=3)
    optimizer = method.build_optimizer(model, setup)
    F.cross_entropy(model(torch.zeros(2, 1, 4, 4)), torch.zeros(2, dtype=torch.long)).backward()
    optimizer.step()


def _consistency(finals: list, widths: list, config: StudyConfig) -> list[dict[str, Any]]:
    """μP route's final runs (harness ``train_run``) against the width sweep's ``ours`` runs (the
    study's loop) at the target width and a shared seed: the same training loss at epoch
    ``epochs`` when the two loops agree."""
    rows = []
    for row in widths:
        key = row["key"]
        if key["impl"] != "ours" or key["width"] != config.target_width:
            continue
        for final in finals:
            if final["seed"] == key["seed"] and len(row["history"]) >= config.epochs:
                a = final["run"]["history"][-1]["train_loss"]
                b = row["history"][config.epochs - 1]["train_loss"]
                rows.append({"seed": key["seed"], "train_run": a, "study_loop": b, "diff": a - b})
    return rows
