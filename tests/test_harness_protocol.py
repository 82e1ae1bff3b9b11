"""The study protocol in the harness: validation split, test set read once, failures, profiles."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from advanced_optimizers.bench import compare as compare_mod
from advanced_optimizers.bench.cli import main
from advanced_optimizers.bench.compare import Experiment, load_runs, run_experiment
from advanced_optimizers.bench.data import Dataset
from advanced_optimizers.bench.methods import Method, register
from advanced_optimizers.bench.profiles import performance_profile
from advanced_optimizers.bench.report import markdown_table, summarize
from advanced_optimizers.bench.train import (
    RunConfig,
    RunResult,
    data_id,
    failure_check_epoch,
    train_run,
)

ROOT = Path(__file__).resolve().parents[1]
LEGACY_CNN = ROOT / "results" / "mnist-cnn-study"  # committed: no validation split, a dead sgd run


@pytest.fixture
def split(toy: Dataset) -> Dataset:
    return toy.split_validation(64)


class _Counter:
    """Counts the calls of ``Dataset.test_batches`` (the one door to the test set)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = Dataset.test_batches

        def spy(dataset, *args, **kwargs):
            self.calls += 1
            return real(dataset, *args, **kwargs)

        monkeypatch.setattr(Dataset, "test_batches", spy)


class _NaNAfterOneEpoch(Method):
    """Diverges in its second epoch (a non-finite loss)."""

    name = "test-nan"
    summary = "test only"
    default_lr = 0.05

    def build_optimizer(self, model, setup):
        return torch.optim.SGD(model.parameters(), lr=setup.lr)

    def batch_loss(self, model, optimizer, batch, info):
        loss = super().batch_loss(model, optimizer, batch, info)
        return loss * float("nan") if info.epoch >= 2 else loss


class _Frozen(Method):
    """Never learns and always answers class 0 (6 of the 64 validation labels): at chance."""

    name = "test-frozen"
    summary = "test only"
    default_lr = 1e-3

    def build_optimizer(self, model, setup):
        return torch.optim.SGD(model.parameters(), lr=1e-12)

    def predict(self, model, x):
        logits = torch.zeros(len(x), 10)
        logits[:, 0] = 1.0
        return logits


@pytest.fixture
def registered() -> None:
    """Register the test-only methods (at run time, not import: other modules list the registry
    when they are collected)."""
    register(_NaNAfterOneEpoch)
    register(_Frozen)


# -- the validation split ------------------------------------------------------------------------


def test_validation_is_the_end_of_the_training_set(toy: Dataset) -> None:
    ds = toy.split_validation(56)
    assert (ds.n_train, ds.n_val, ds.n_test) == (200, 56, toy.n_test)
    assert torch.equal(ds.x_val, toy.x_train[200:]) and torch.equal(ds.y_train, toy.y_train[:200])
    sub = ds.subset(100, 50)
    assert (sub.n_train, sub.n_val, sub.n_test) == (100, 56, 50)  # n_train: of the training part
    assert torch.equal(sub.y_val, ds.y_val)
    assert toy.split_validation(0) is toy and toy.n_val == 0
    assert data_id(sub) != data_id(toy.subset(100, 50))  # the split is in the fingerprint
    with pytest.raises(ValueError, match="--validation"):
        toy.split_validation(256)
    with pytest.raises(ValueError, match="already has a validation split"):
        ds.split_validation(10)
    with pytest.raises(ValueError, match="left after the 56-sample validation split"):
        ds.subset(201)


def test_run_measures_validation_every_epoch_and_test_once(
    split: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = _Counter(monkeypatch)
    seen = []

    def on_epoch(record):
        seen.append((record["epoch"], counter.calls))

    result = train_run(RunConfig("adam", epochs=3, width=32, n_val=64), split, on_epoch=on_epoch)
    assert seen == [(1, 0), (2, 0), (3, 0)]  # not touched before the last epoch
    assert counter.calls == 1  # then read exactly once
    assert result.ok and result.selection_split == "val"
    for h in result.history[:-1]:
        assert h["test_acc"] is None and h["test_loss"] is None
        assert {"train_loss", "train_ce", "train_acc", "val_loss", "val_acc"} <= set(h)
    assert 0 < result.final["test_acc"] <= 1 and result.final["val_acc"] > 0.5
    assert result.correct.shape == (3, 64)  # flips are on the validation samples
    assert result.test_correct.shape == (split.n_test,)
    assert result.test_correct.float().mean().item() == pytest.approx(result.final["test_acc"])
    again = RunResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert torch.equal(again.test_correct, result.test_correct) and again.status == "ok"


def test_train_ce_is_plain_cross_entropy_for_every_method(split: Dataset) -> None:
    """FER's objective differs from CE; train_ce is the same measurement for both methods."""
    config = {"epochs": 2, "width": 32, "batch_size": 32}
    adam = train_run(RunConfig("adam", **config), split)
    fer = train_run(RunConfig("fer-adam", options={"fer_weight": 0.5}, **config), split)
    assert fer.history[1]["train_loss"] != pytest.approx(fer.history[1]["train_ce"])
    assert adam.history[0]["train_ce"] == pytest.approx(fer.history[0]["train_ce"])  # warm-up
    for run in (adam, fer):
        assert all(math.isfinite(h["train_ce"]) for h in run.history)


def test_tuning_runs_never_touch_the_test_set(
    split: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = _Counter(monkeypatch)
    result = train_run(RunConfig("sgd", epochs=2, width=16), split, evaluate_test=False)
    assert counter.calls == 0 and result.test_correct is None
    assert result.final["test_acc"] is None


def test_without_a_validation_split_the_legacy_loop_is_unchanged(toy: Dataset) -> None:
    result = train_run(RunConfig("sgd", epochs=2, width=16), toy)
    assert result.selection_split == "test" and result.test_correct is None
    assert set(result.history[0]) == {
        "epoch",
        "train_loss",
        "test_loss",
        "test_acc",
        "train_seconds",
    }
    assert result.correct.shape == (2, toy.n_test)


# -- failures ------------------------------------------------------------------------------------


def test_a_diverged_run_stops_and_is_a_failure(split: Dataset, monkeypatch, registered) -> None:
    counter = _Counter(monkeypatch)
    result = train_run(RunConfig("test-nan", epochs=5, width=16), split)
    assert result.status == "failed" and len(result.history) == 2
    assert result.failure.startswith("diverged: training loss is nan at epoch 2")
    assert counter.calls == 0 and result.test_correct is None  # a failed run is not tested


def test_a_run_at_chance_stops_at_the_check_epoch(split: Dataset, registered) -> None:
    assert [failure_check_epoch(e) for e in (1, 2, 3, 8, 15, 40)] == [1, 2, 2, 2, 4, 10]
    result = train_run(RunConfig("test-frozen", epochs=8, width=16), split)
    assert result.status == "failed" and len(result.history) == 2
    assert "at chance: validation accuracy" in result.failure and "1.5 x chance" in result.failure


def test_a_failure_found_at_the_last_checkpoint_is_found_again_on_resume(
    split: Dataset, tmp_path: Path, registered
) -> None:
    config = RunConfig("test-nan", epochs=4, width=16)
    ckpt = tmp_path / "run.ckpt"
    reference = train_run(config, split)

    class _Killed(Exception):
        pass

    def killed(record):
        if record["epoch"] == 2:
            raise _Killed  # after the checkpoint of the failing epoch, before the verdict

    with pytest.raises(_Killed):
        train_run(config, split, checkpoint=ckpt, on_epoch=killed)
    resumed = train_run(config, split, checkpoint=ckpt)
    assert resumed.status == "failed" and resumed.failure == reference.failure
    assert len(resumed.history) == 2


def test_failed_runs_are_counted_final_and_not_tested(
    split: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registered
) -> None:
    exp = Experiment(
        methods=["sgd", "test-frozen"], epochs=3, seeds=[0, 1], width=16, validation=64
    )
    out = tmp_path / "out"
    run_experiment(exp, out, dataset=split, progress=False)
    summary = summarize(load_runs(out))
    frozen = summary["methods"]["test-frozen"]
    assert frozen["failed"] == 2 and frozen["runs"] == 2 and frozen["final_acc"]["n"] == 0
    assert all("at chance" in f["reason"] for f in frozen["failures"])
    verdicts = {(c["method"], c["baseline"]): c["verdict"] for c in summary["comparisons"]}
    assert verdicts == {("test-frozen", "sgd"): "not tested (2/2 runs of test-frozen failed)"}
    table = markdown_table(summary)
    assert "| test-frozen | 2 | 2/2 |" in table and "Failed runs" in table
    saved = json.loads((out / "runs" / "test-frozen" / "seed0.json").read_text())
    assert saved["status"] == "failed" and len(saved["history"]) == 2

    calls = []
    real = compare_mod.train_run
    monkeypatch.setattr(
        compare_mod, "train_run", lambda c, *a, **k: calls.append(c) or real(c, *a, **k)
    )
    run_experiment(exp, out, dataset=split, progress=False)
    assert calls == []  # a failed run's file is final
    run_experiment(exp, out, dataset=split, progress=False, retry_failed=True)
    assert sorted((c.method, c.seed) for c in calls) == [("test-frozen", 0), ("test-frozen", 1)]


def test_no_interval_leaves_the_metric_range_and_small_samples_give_ranges(split: Dataset) -> None:
    runs = [train_run(RunConfig("sgd", epochs=2, width=16, seed=s), split) for s in range(4)]
    stats = summarize(runs)["methods"]["sgd"]
    acc = stats["final_acc"]
    assert acc["ci"] == "bootstrap" and 0 <= acc["ci_low"] <= acc["mean"] <= acc["ci_high"] <= 1
    assert acc["min"] <= acc["ci_low"] and acc["ci_high"] <= acc["max"]
    two = summarize(runs[:2])["methods"]["sgd"]["final_acc"]
    assert two["ci"] == "range" and math.isnan(two["ci_low"])
    assert f"({100 * two['min']:.2f}–{100 * two['max']:.2f})" in markdown_table(summarize(runs[:2]))


# -- experiments ---------------------------------------------------------------------------------


def test_experiment_validation_default_and_fingerprint(
    split: Dataset, tmp_path: Path, toy: Dataset
) -> None:
    assert Experiment(methods=["sgd"]).validation == 10_000
    assert Experiment(methods=["sgd"], dataset="cifar10").validation == 5_000
    exp = Experiment(methods=["sgd"], epochs=1, seeds=[0], width=16, validation=64)
    run_experiment(exp, tmp_path / "a", dataset=toy, progress=False)  # carved here
    run = json.loads((tmp_path / "a" / "runs" / "sgd" / "seed0.json").read_text())
    assert run["config"]["n_val"] == 64 and run["config"]["n_train"] == 192
    run_experiment(exp, tmp_path / "b", dataset=split, progress=False)  # already carved
    with pytest.raises(ValueError, match="validation split of 64 samples"):
        other = Experiment(methods=["sgd"], epochs=1, seeds=[0], width=16, validation=32)
        run_experiment(other, tmp_path / "c", dataset=split, progress=False)
    exp0 = Experiment(methods=["sgd"], epochs=1, seeds=[0], width=16, validation=0)
    runs = run_experiment(exp0, tmp_path / "d", dataset=toy, progress=False)
    summary = (tmp_path / "d" / "summary.md").read_text()
    assert runs[0].selection_split == "test" and "no validation split" in summary


def test_tuned_settings_are_applied_and_recorded(tmp_path: Path) -> None:
    tuning = {
        "protocol": {
            "dataset": "mnist",
            "arch": "mlp",
            "width": 16,
            "depth": None,
            "validation": 64,
            "batch_size": 128,
            "schedule": "constant",
            "momentum": 0.9,
            "weight_decay": 0.0,
        },
        "budget": {"trials": 4},
        "methods": {
            "sgd": {"study": "w:sgd", "best": {"number": 2, "params": {"lr": 0.2}, "value": 0.9}},
            "fer-adam": {
                "study": "w:fer-adam",
                "best": {
                    "number": 1,
                    "params": {"lr": 0.003, "consistency_threshold": 0.0},
                    "value": 0.8,
                },
            },
        },
    }
    path = tmp_path / "tuning.json"
    path.write_text(json.dumps(tuning))
    base = Experiment(methods=["sgd", "fer-adam"], width=16, validation=64, epochs=1, seeds=[0])
    exp = compare_mod.apply_tuning(base, path)
    assert exp.method_lrs == {"sgd": 0.2, "fer-adam": 0.003}
    assert exp.method_options == {"fer-adam": {"consistency_threshold": 0.0}}
    assert exp.tuning["fer-adam"]["trial"] == 1 and exp.tuning["sgd"]["budget"] == 4
    assert exp.run_config("sgd", 0).lr == 0.2
    with pytest.raises(ValueError, match="was not tuned"):
        compare_mod.apply_tuning(Experiment(methods=["adam"], width=16, validation=64), path)
    with pytest.raises(ValueError, match="width: tuned 16, now 32"):
        compare_mod.apply_tuning(Experiment(methods=["sgd"], width=32, validation=64), path)


# -- reports on legacy results -------------------------------------------------------------------


def test_legacy_results_are_labelled_and_dead_runs_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    legacy = tmp_path / "legacy"
    shutil.copytree(LEGACY_CNN, legacy)
    assert main(["report", "--out", str(legacy), "--no-write"]) == 0
    out = capsys.readouterr().out
    assert "Selection: **legacy: selection on test**" in out
    assert "| sgd | 3 | 1/3 |" in out  # the run that died at chance
    assert "not tested (1/3 runs of sgd failed)" in out
    assert "-55.9" not in out and "195.4" not in out
    assert main(["report", "--out", str(legacy)]) == 0
    assert (legacy / "plots" / "objectives.png").exists()


# -- performance profile -------------------------------------------------------------------------


def _fake_run(method: str, seed: int, accs: list[float], secs: float = 1.0, status="ok"):
    history = [
        {
            "epoch": e,
            "train_loss": 1.0,
            "train_ce": 1.0,
            "val_loss": 1.0,
            "val_acc": a,
            "test_loss": None,
            "test_acc": None,
            "train_seconds": secs,
        }
        for e, a in enumerate(accs, start=1)
    ]
    history[-1].update(test_loss=1.0, test_acc=accs[-1])
    config = RunConfig(method, seed=seed, epochs=len(accs), n_val=4)
    correct = torch.ones(len(accs), 4, dtype=torch.bool)
    return RunResult(
        config, history, correct, status=status, failure=None if status == "ok" else "x"
    )


def _workload(out: Path, runs: list[RunResult]) -> Path:
    for run in runs:
        path = out / "runs" / run.config.method / f"seed{run.config.seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(run.to_dict()))
    return out


def test_performance_profile(tmp_path: Path) -> None:
    # workload A: target 0.9 (sgd's median); sgd reaches it at 2 s, adam at 1 s, fer-adam never
    a = _workload(
        tmp_path / "a",
        [
            *[_fake_run("sgd", s, [0.5, 0.9]) for s in range(3)],
            *[_fake_run("adam", s, [0.9, 0.8]) for s in range(3)],
            *[_fake_run("fer-adam", s, [0.5, 0.6]) for s in range(3)],
        ],
    )
    # workload B: target 0.8 (adam's median, the better baseline); fer-adam fastest, sgd failed
    b = _workload(
        tmp_path / "b",
        [
            *[_fake_run("sgd", s, [0.5, 0.7], status="failed") for s in range(3)],
            *[_fake_run("adam", s, [0.5, 0.6, 0.8]) for s in range(3)],
            *[_fake_run("fer-adam", s, [0.8, 0.8, 0.8], secs=2.0) for s in range(3)],
        ],
    )
    profile = performance_profile([a, b])
    wa, wb = profile["workloads"]
    assert (wa["target"], wa["reference"]) == (0.9, "sgd")
    assert (wb["target"], wb["reference"]) == (0.8, "adam")
    assert wa["ratios"] == {"sgd": 2.0, "adam": 1.0, "fer-adam": math.inf}
    assert wb["ratios"] == {"sgd": math.inf, "adam": 1.5, "fer-adam": 1.0}
    taus = profile["taus"]
    at = {tau: i for i, tau in enumerate(taus)}
    curves = profile["curves"]
    assert curves["adam"][at[1.0]] == 0.5 and curves["adam"][at[1.5]] == 1.0
    assert curves["sgd"][at[1.0]] == 0.0 and curves["sgd"][at[2.0]] == 0.5
    assert curves["fer-adam"][-1] == 0.5  # never reached on A: never counted
    assert main(["profile", str(a), str(b), "--out", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "profile.png").exists()
