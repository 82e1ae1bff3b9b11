"""The training loop, resume, the comparison's outputs, statistics and flip metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats as sps

from advanced_optimizers.bench import compare as compare_mod
from advanced_optimizers.bench.compare import Experiment, load_runs, run_experiment
from advanced_optimizers.bench.methods import Method, available_methods, get_method, register
from advanced_optimizers.bench.metrics import flip_metrics
from advanced_optimizers.bench.models import ModelSpec
from advanced_optimizers.bench.stats import holm, mean_ci, paired_test, time_to_target
from advanced_optimizers.bench.train import RunConfig, RunResult, train_run

STABLE = ("epoch", "train_loss", "test_loss", "test_acc")
VAL_STABLE = (*STABLE, "val_loss", "val_acc", "train_ce")


def _stable(history: list[dict]) -> list[tuple]:
    keys = VAL_STABLE if "val_acc" in history[0] else STABLE
    return [tuple(h[k] for k in keys) for h in history]


def test_baselines_learn(toy) -> None:
    for method in ("sgd", "adam"):
        result = train_run(RunConfig(method, epochs=4, batch_size=32, width=64), toy)
        assert result.final["test_acc"] > 0.8, (method, result.history)
        assert result.correct.shape == (4, toy.n_test) and result.correct.dtype == torch.bool
        assert all(h["train_seconds"] > 0 for h in result.history)


def test_same_seed_same_run_other_seed_other_run(toy) -> None:
    config = RunConfig("adam", epochs=2, width=32, seed=1)
    a, b = train_run(config, toy), train_run(config, toy)
    c = train_run(RunConfig("adam", epochs=2, width=32, seed=2), toy)
    assert _stable(a.history) == _stable(b.history)
    assert _stable(a.history) != _stable(c.history)


class _Crash(RuntimeError):
    pass


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_resume_from_checkpoint_equals_uninterrupted(toy, tmp_path: Path, schedule: str) -> None:
    config = RunConfig("sgd", epochs=3, width=32, seed=0, schedule=schedule)
    reference = train_run(config, toy)

    def crash_after_two(record: dict) -> None:
        if record["epoch"] == 2:
            raise _Crash

    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(_Crash):
        train_run(config, toy, checkpoint=ckpt, on_epoch=crash_after_two)
    assert ckpt.exists()
    resumed = train_run(config, toy, checkpoint=ckpt)
    assert _stable(resumed.history) == _stable(reference.history)
    assert torch.equal(resumed.correct, reference.correct)


def test_cosine_schedule_anneals_every_group_to_zero(toy, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    real_step = torch.optim.SGD.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    train_run(RunConfig("sgd", epochs=2, width=16, lr=0.1, batch_size=32, schedule="cosine"), toy)
    total = len(seen)
    assert total == 2 * toy.n_train // 32
    expected = [0.05 * (1 + math.cos(math.pi * s / total)) for s in range(total)]
    assert seen == pytest.approx(expected)
    with pytest.raises(ValueError, match="schedule must be one of"):
        RunConfig("sgd", schedule="linear")


def test_checkpoint_of_another_config_is_refused(toy, tmp_path: Path) -> None:
    ckpt = tmp_path / "run.ckpt"
    train_run(RunConfig("sgd", epochs=1, width=16), toy, checkpoint=ckpt)
    with pytest.raises(ValueError, match="different config"):
        train_run(RunConfig("sgd", epochs=1, width=16, lr=0.1), toy, checkpoint=ckpt)


def test_run_result_json_roundtrip(toy) -> None:
    result = train_run(RunConfig("sgd", epochs=2, width=16), toy)
    again = RunResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again.config == result.config and torch.equal(again.correct, result.correct)


def test_run_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="epochs"):
        RunConfig("sgd", epochs=0)
    with pytest.raises(ValueError, match="lr"):
        RunConfig("sgd", lr=-1.0)
    with pytest.raises(TypeError, match="batch_size"):
        RunConfig("sgd", batch_size=1.5)


def test_registry() -> None:
    assert available_methods()[:2] == ["sgd", "adam"]
    with pytest.raises(ValueError, match="method must be one of"):
        get_method("nope")
    with pytest.raises(TypeError, match="takes no options"):
        get_method("sgd", momentum=0.5)


def test_a_new_method_plugs_in_without_touching_the_loop(toy) -> None:
    @register
    class HalfLoss(Method):
        name = "test-half-loss"
        summary = "test only"

        def build_optimizer(self, model, setup):
            return torch.optim.SGD(model.parameters(), lr=setup.lr)

        def batch_loss(self, model, optimizer, batch, info):
            return 0.5 * super().batch_loss(model, optimizer, batch, info)

        def end_epoch(self, model, optimizer, info, train_loss):
            return {"seen_epoch": info.epoch}

    result = train_run(RunConfig("test-half-loss", epochs=2, lr=0.1, width=16), toy)
    assert [h["seen_epoch"] for h in result.history] == [1.0, 2.0]


def test_models_shapes() -> None:
    x = torch.zeros(2, 1, 28, 28)
    assert ModelSpec("mlp").build()(x).shape == (2, 10)
    assert [m.out_features for m in ModelSpec("mlp").build() if hasattr(m, "out_features")] == [
        512,
        10,
    ]
    assert ModelSpec("cnn", (1, 28, 28)).build()(x).shape == (2, 10)
    assert ModelSpec("cnn", (3, 32, 32), depth=3).build()(torch.zeros(2, 3, 32, 32)).shape == (
        2,
        10,
    )
    with pytest.raises(ValueError, match="divisible"):
        ModelSpec("cnn", (1, 28, 28), depth=3).build()
    with pytest.raises(ValueError, match="arch must be one of"):
        ModelSpec("transformer")


def test_experiment_writes_everything_and_resumes(
    toy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = Experiment(methods=["sgd", "adam"], epochs=2, seeds=[0, 1], width=16, validation=64)
    out = tmp_path / "out"
    first = run_experiment(exp, out, dataset=toy, progress=False)
    for name in (
        "results.json",
        "results.csv",
        "summary.md",
        "plots/curves.png",
        "plots/objectives.png",
        "plots/flips.png",
        "runs/adam/seed1.json",
    ):
        assert (out / name).exists(), name
    results = json.loads((out / "results.json").read_text())
    assert {r["config"]["method"] for r in results["runs"]} == {"sgd", "adam"}
    assert "wfs" in results["runs"][0]["flips"]
    assert results["runs"][0]["flips_split"] == "val"
    assert results["summary"]["selection"] == "validation"
    summary = (out / "summary.md").read_text()
    assert "| sgd | 2 |" in summary and "Selection: **validation**" in summary
    assert len((out / "results.csv").read_text().splitlines()) == 1 + 2 * 2 * 2
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("*.ckpt"))

    calls = []
    monkeypatch.setattr(compare_mod, "train_run", lambda *a, **k: calls.append(a))
    again = run_experiment(exp, out, dataset=toy, progress=False)
    assert calls == []  # finished runs are kept, not redone
    assert [r.history for r in again] == [r.history for r in first]
    assert len(load_runs(out)) == 4


def test_experiment_resumes_an_interrupted_run(
    toy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = Experiment(methods=["sgd"], epochs=3, seeds=[0], width=16, validation=64)
    reference = run_experiment(exp, tmp_path / "ref", dataset=toy, progress=False)
    real = compare_mod.train_run

    def crashing(config, dataset, checkpoint=None, on_epoch=None, **kwargs):
        def hook(record):
            if record["epoch"] == 2:
                raise _Crash

        return real(config, dataset, checkpoint=checkpoint, on_epoch=hook, **kwargs)

    monkeypatch.setattr(compare_mod, "train_run", crashing)
    with pytest.raises(_Crash):
        run_experiment(exp, tmp_path / "out", dataset=toy, progress=False)
    assert (tmp_path / "out/runs/sgd/seed0.ckpt").exists()
    monkeypatch.setattr(compare_mod, "train_run", real)
    resumed = run_experiment(exp, tmp_path / "out", dataset=toy, progress=False)
    assert _stable(resumed[0].history) == _stable(reference[0].history)
    assert torch.equal(resumed[0].test_correct, reference[0].test_correct)


def test_experiment_validation() -> None:
    with pytest.raises(ValueError, match="methods must be among"):
        Experiment(methods=["sgd", "bogus"])
    with pytest.raises(ValueError, match="seeds"):
        Experiment(methods=["sgd"], seeds=[1, 1])
    with pytest.raises(ValueError, match="dataset must be one of"):
        Experiment(methods=["sgd"], dataset="svhn")
    with pytest.raises(TypeError, match="takes no options"):
        Experiment(methods=["sgd"], method_options={"sgd": {"x": 1}})


def test_mean_ci_matches_t_interval() -> None:
    values = [0.9, 0.92, 0.95, 0.91]
    s = mean_ci(values)
    half = sps.t.ppf(0.975, 3) * np.std(values, ddof=1) / 2
    assert s["mean"] == pytest.approx(np.mean(values))
    assert s["ci_high"] - s["mean"] == pytest.approx(half)
    assert math.isnan(mean_ci([1.0])["ci_low"])


def test_paired_test_and_holm() -> None:
    a = [0.95, 0.96, 0.97, 0.96, 0.955]
    b = [0.94, 0.95, 0.955, 0.95, 0.945]
    res = paired_test(a, b)
    assert res["p_value"] == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert res["mean_diff"] > 0 and res["cohens_dz"] > 0 and res["reason"] is None
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(holm([float("nan"), 0.01])[0])


def test_time_to_target() -> None:
    assert time_to_target([0.5, 0.9, 0.95], [1.0, 2.0, 3.0], 0.9) == (2.0, 3.0)
    assert time_to_target([0.5], [1.0], 0.9) == (math.inf, math.inf)


def test_flip_metrics_by_hand() -> None:
    correct = torch.tensor(
        [
            [1, 0, 1, 0],
            [0, 1, 1, 0],
            [0, 1, 0, 1],
        ],
        dtype=torch.bool,
    )
    m = flip_metrics(correct)
    # sample 0: correct then wrong (flipped); sample 2: correct twice then wrong (flipped)
    assert m["errors"] == 2 and m["wfs"] == 2 and m["rfe"] == 1.0
    assert m["flips_per_epoch"] == [1, 1]
    with pytest.raises(ValueError, match="bool tensor"):
        flip_metrics(correct.int())


def test_atomic_files_get_the_usual_permissions(tmp_path) -> None:
    import os
    import stat

    from advanced_optimizers.bench import atomic
    from advanced_optimizers.bench.atomic import write_text

    path = write_text(tmp_path / "a.txt", "x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~atomic._UMASK
    assert atomic._UMASK == os.umask(atomic._UMASK)  # the process's umask
