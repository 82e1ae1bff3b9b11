"""``advopt tune``: equal budgets on validation, resumable Optuna studies, several workers."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("optuna")
import optuna
from conftest import toy_dataset, write_idx_dataset

from advanced_optimizers.bench import tune as tune_mod
from advanced_optimizers.bench.cli import main
from advanced_optimizers.bench.data import Dataset
from advanced_optimizers.bench.methods import Method, register
from advanced_optimizers.bench.tune import TuneConfig, run_tuning

TINY = {"epochs": 1, "width": 16, "validation": 64, "n_train": 128}


class _Dead(Method):
    """Always answers class 0: every trial stays at chance (a failed run)."""

    name = "test-tune-dead"
    summary = "test only"
    default_lr = 1e-3

    def build_optimizer(self, model, setup):
        return torch.optim.SGD(model.parameters(), lr=setup.lr)

    def predict(self, model, x):
        logits = torch.zeros(len(x), 10)
        logits[:, 0] = 1.0
        return logits


@pytest.fixture
def no_test_set(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the test set was read during tuning")

    monkeypatch.setattr(Dataset, "test_batches", refuse)


def _tune(tmp_path: Path, **kwargs) -> dict:
    config = TuneConfig(**{**TINY, **kwargs})
    return run_tuning(config, tmp_path / "tune", dataset=toy_dataset(), report=lambda _: None)


def test_config_is_checked_before_any_trial() -> None:
    with pytest.raises(ValueError, match="needs a validation split"):
        TuneConfig(methods=["sgd"], validation=0)
    with pytest.raises(ValueError, match="not one of its options"):
        TuneConfig(methods=["sgd"], spaces={"sgd": tune_mod.parse_space("sgd:beta=1,2")[1]})
    with pytest.raises(ValueError, match="multiple of the 2 values"):
        TuneConfig(methods=["fer-adam"], sampler="grid", trials=3)
    with pytest.raises(ValueError, match="both fixed"):
        TuneConfig(
            methods=["fer-adam"], method_options={"fer-adam": {"consistency_threshold": 0.5}}
        )
    assert tune_mod.parse_space("fer-adam:none") == ("fer-adam", None)


def test_every_method_gets_the_same_budget_and_the_test_set_is_never_read(
    tmp_path: Path, no_test_set
) -> None:
    record = _tune(tmp_path, methods=["sgd", "fer-adam"], trials=3, seed=1, epochs=2)
    assert record["budget"]["trials"] == 3
    assert record["protocol"]["test_set"].startswith("not loaded")
    sgd, fer = record["methods"]["sgd"], record["methods"]["fer-adam"]
    assert sgd["space"]["option"] is None and sgd["space"]["lr"]["low"] == pytest.approx(0.005)
    assert fer["space"]["option"] == {
        "name": "consistency_threshold",
        "type": "categorical",
        "choices": [0.0, 0.9],
    }
    for entry in (sgd, fer):
        finished = [t for t in entry["trials"] if t["state"] in ("COMPLETE", "PRUNED")]
        assert len(finished) == 3 and [t["number"] for t in entry["trials"]] == [0, 1, 2]
        low, high = entry["space"]["lr"]["low"], entry["space"]["lr"]["high"]
        assert all(low <= t["params"]["lr"] <= high for t in finished)
        assert entry["best"]["value"] == max(t["value"] for t in finished if t["value"])
    assert all("consistency_threshold" in t["params"] for t in fer["trials"])
    saved = json.loads((tmp_path / "tune" / "tuning.json").read_text())
    assert saved["methods"]["sgd"]["best"] == sgd["best"]
    assert (tmp_path / "tune" / "plots" / "lr_sensitivity.png").exists()
    table = (tmp_path / "tune" / "tuning.md").read_text()
    assert f"| sgd | {sgd['counts']['complete']} |" in table


def test_same_seed_same_study(tmp_path: Path) -> None:
    one = _tune(tmp_path / "a", methods=["sgd"], trials=3, seed=5)
    two = _tune(tmp_path / "b", methods=["sgd"], trials=3, seed=5)
    params = [[t["params"] for t in r["methods"]["sgd"]["trials"]] for r in (one, two)]
    assert params[0] == params[1]


def test_failed_trials_are_recorded_and_count_against_the_budget(tmp_path: Path) -> None:
    register(_Dead)  # at run time: other test modules list the registry when collected
    record = _tune(tmp_path, methods=["test-tune-dead"], trials=2)
    entry = record["methods"]["test-tune-dead"]
    assert entry["counts"] == {
        "complete": 2,
        "failed_runs": 2,
        "pruned": 0,
        "errors": 0,
        "running": 0,
    }
    assert all(t["value"] == pytest.approx(0.1) for t in entry["trials"])  # chance
    assert all("at chance" in t["failure"] for t in entry["trials"])
    assert entry["best"] is None


def test_an_interrupted_study_resumes_to_its_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tune_mod.train_run
    calls = itertools.count()

    def killed_in_second_trial(*args, **kwargs):
        if next(calls) == 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(tune_mod, "train_run", killed_in_second_trial)
    with pytest.raises(KeyboardInterrupt):
        _tune(tmp_path, methods=["adam"], trials=3)
    record = _tune(tmp_path, methods=["adam"], trials=3)  # the same command again
    entry = record["methods"]["adam"]
    assert entry["counts"]["complete"] == 3 and entry["counts"]["errors"] == 1
    assert [t["state"] for t in entry["trials"]] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]

    monkeypatch.setattr(tune_mod, "train_run", _no_training)
    again = _tune(tmp_path, methods=["adam"], trials=3)  # done: nothing is trained
    assert again["methods"]["adam"]["trials"] == entry["trials"]
    with pytest.raises(ValueError, match="epochs: saved 1, now 2"):
        _tune(tmp_path, methods=["adam"], trials=3, epochs=2)


def _no_training(*args, **kwargs):
    raise AssertionError("a finished study trained again")


def test_grid_sampler_covers_the_grid(tmp_path: Path) -> None:
    record = _tune(
        tmp_path, methods=["fer-adam"], trials=4, sampler="grid", pruner="none", epochs=2
    )
    entry = record["methods"]["fer-adam"]
    grid = entry["space"]["grid"]
    assert grid["consistency_threshold"] == [0.0, 0.9] and len(grid["lr"]) == 2
    assert grid["lr"][0] == pytest.approx(1e-4) and grid["lr"][1] == pytest.approx(1e-2)
    seen = {(t["params"]["lr"], t["params"]["consistency_threshold"]) for t in entry["trials"]}
    assert seen == set(itertools.product(grid["lr"], grid["consistency_threshold"]))


def test_two_worker_processes_share_one_study(tmp_path: Path) -> None:
    data = write_idx_dataset(tmp_path / "data", n_train=400, n_test=50)
    out = tmp_path / "tune"
    args = [
        sys.executable, "-m", "advanced_optimizers.bench.cli", "tune",
        "--methods", "adam", "--trials", "4", "--epochs", "1", "--width", "16",
        "--validation", "100", "--n-train", "300", "--data-dir", str(data),
        "--trust-local-data", "--threads", "1", "--out", str(out), "--study", "toy",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [w.communicate(timeout=300) for w in workers]
    for worker, (stdout, stderr) in zip(workers, results, strict=True):
        assert worker.returncode == 0, stderr
        assert "| adam | 4 |" in stdout
    storage = f"sqlite:///{out / 'tune.db'}"
    assert optuna.get_all_study_names(storage) == ["toy:adam"]  # one study
    trials = optuna.load_study(study_name="toy:adam", storage=storage).get_trials()
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4  # the budget, exactly, however the workers raced
    numbers = [t.number for t in trials]
    assert len(set(numbers)) == len(numbers) == len(trials)  # distinct numbers
    assert all(t.user_attrs.get("over_budget") for t in trials if t.state.name == "FAIL")
    record = json.loads((out / "tuning.json").read_text())
    assert len(record["methods"]["adam"]["trials"]) == len(trials)
    workers_seen = {t.user_attrs["worker"] for t in complete}
    assert 1 <= len(workers_seen) <= 2


def test_tune_then_compare_tuned_on_mnist(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    workload = ["--epochs", "1", "--n-train", "500", "--validation", "300", "--width", "16"]
    workload += ["--no-progress"]
    out = tmp_path / "tune"
    assert (
        main(["tune", "--methods", "sgd,adam", "--trials", "2", *workload, "--out", str(out)]) == 0
    )
    text = capsys.readouterr().out
    assert "| sgd | 2 |" in text and "tuning.json" in text
    tuned = out / "tuning.json"
    compare = ["compare", "--tuned", str(tuned), "--seeds", "1", "--n-test", "200", *workload]
    assert main([*compare, "--out", str(tmp_path / "final")]) == 0
    experiment = json.loads((tmp_path / "final" / "experiment.json").read_text())
    best = json.loads(tuned.read_text())["methods"]["adam"]["best"]["params"]["lr"]
    assert experiment["method_lrs"]["adam"] == best and experiment["methods"] == ["sgd", "adam"]
    assert experiment["tuning"]["adam"]["file"] == str(tuned)
    assert main([*compare, "--lr", "0.1", "--out", str(tmp_path / "x")]) == 2
    assert "exclude each other" in capsys.readouterr().err
