"""The peers (nadam, schedulefree-adamw, adan, mars, lookahead-adam) as harness methods."""

from __future__ import annotations

import importlib
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from advanced_optimizers.bench import train as train_mod
from advanced_optimizers.bench.cli import main
from advanced_optimizers.bench.methods import available_methods, get_method
from advanced_optimizers.bench.models import ModelSpec
from advanced_optimizers.bench.report import BASELINES, PEERS, markdown_table, summarize
from advanced_optimizers.bench.stats import holm
from advanced_optimizers.bench.train import RunConfig, RunResult, read_checkpoint, train_run

# load the plugins in the registry's own order (baselines first) before using one of them
available_methods()
peers = importlib.import_module("advanced_optimizers.bench.plugins.peers")
PEER_METHODS = peers.PEER_METHODS
MissingPeerPackage = peers.MissingPeerPackage
ScheduleFreeAdamW = peers.ScheduleFreeAdamW
NAMES = [cls.name for cls in PEER_METHODS]
SMALL = {"batch_size": 32, "width": 32}


class _Crash(RuntimeError):
    pass


def test_every_peer_is_registered_with_its_library_default_lr() -> None:
    assert NAMES == ["nadam", "schedulefree-adamw", "adan", "mars", "lookahead-adam"]
    assert tuple(NAMES) == PEERS
    assert set(NAMES) <= set(available_methods())
    for cls in PEER_METHODS:
        assert cls.default_lr == peers.library_default_lr(cls), cls.name


def test_options_come_from_the_library_signatures() -> None:
    assert get_method("schedulefree-adamw").options["warmup_steps"] == 0
    assert get_method("lookahead-adam").options == {
        "k": 5,
        "alpha": 0.5,
        "pullback_momentum": "none",
    }
    assert get_method("adan", max_grad_norm=1.0).options["max_grad_norm"] == 1.0
    assert get_method("mars").options["gamma"] == 0.025
    for name in NAMES:  # the harness supplies these itself
        assert not {"params", "lr", "weight_decay", "optimizer"} & set(get_method(name).options)
    with pytest.raises(TypeError, match=r"its options are: .*warmup_steps"):
        get_method("schedulefree-adamw", momentum=0.9)
    with pytest.raises(ValueError, match="k"):  # checked now, by the library
        get_method("lookahead-adam", k=0)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
@pytest.mark.parametrize("method", NAMES)
def test_every_peer_trains(toy, method: str, schedule: str) -> None:
    result = train_run(RunConfig(method, epochs=2, schedule=schedule, **SMALL), toy)
    losses = [h["train_loss"] for h in result.history]
    assert losses[1] < losses[0], (method, result.history)
    assert result.final["test_acc"] > 0.5, (method, result.history)
    assert all(math.isfinite(h["test_loss"]) for h in result.history)


def _final_state(path: Path) -> dict:
    state = read_checkpoint(path)
    return {"model": state["model"], "optimizer": state["optimizer"], "rng": state["rng"]}


def _assert_identical(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_identical(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_identical(x, y, f"{where}/{i}")
    else:
        assert a == b, where


@pytest.mark.parametrize(
    ("method", "schedule"),
    [(name, "constant") for name in NAMES] + [("schedulefree-adamw", "cosine")],
)
def test_resume_is_bit_identical(toy, tmp_path: Path, method: str, schedule: str) -> None:
    """Killed after epoch 1 and resumed: same history, same final model and optimizer state."""
    config = RunConfig(method, epochs=3, schedule=schedule, **SMALL)
    reference = train_run(config, toy, checkpoint=tmp_path / "whole.ckpt")

    def crash_after_one(record: dict) -> None:
        if record["epoch"] == 1:
            raise _Crash

    ckpt = tmp_path / "resumed.ckpt"
    with pytest.raises(_Crash):
        train_run(config, toy, checkpoint=ckpt, on_epoch=crash_after_one)
    if method == "schedulefree-adamw":  # saved after evaluation: eval mode, averaged weights
        assert all(not g["train_mode"] for g in read_checkpoint(ckpt)["optimizer"]["param_groups"])
    resumed = train_run(config, toy, checkpoint=ckpt)
    keys = ("epoch", "train_loss", "test_loss", "test_acc")
    assert [[h[k] for k in keys] for h in resumed.history] == [
        [h[k] for k in keys] for h in reference.history
    ]
    assert torch.equal(resumed.correct, reference.correct)
    _assert_identical(_final_state(ckpt), _final_state(tmp_path / "whole.ckpt"))


def test_schedulefree_evaluates_the_averaged_weights(toy, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop calls train_mode before training and eval_mode before evaluation; what is
    evaluated is exactly what ``optimizer.eval()`` gives after the same epoch trained by hand."""
    events: list[str] = []
    evaluated: list[list[torch.Tensor]] = []
    real_evaluate, real_train, real_eval = (
        train_mod.evaluate,
        ScheduleFreeAdamW.train_mode,
        ScheduleFreeAdamW.eval_mode,
    )

    def spy_evaluate(method, model, dataset, *args, **kwargs):
        events.append("evaluate")
        evaluated.append([p.detach().clone() for p in model.parameters()])
        return real_evaluate(method, model, dataset, *args, **kwargs)

    def spy_train(self, model, optimizer):
        events.append("train_mode")
        real_train(self, model, optimizer)

    def spy_eval(self, model, optimizer):
        events.append("eval_mode")
        real_eval(self, model, optimizer)

    monkeypatch.setattr(train_mod, "evaluate", spy_evaluate)
    monkeypatch.setattr(ScheduleFreeAdamW, "train_mode", spy_train)
    monkeypatch.setattr(ScheduleFreeAdamW, "eval_mode", spy_eval)
    train_run(RunConfig("schedulefree-adamw", epochs=2, seed=3, **SMALL), toy)
    assert events == ["train_mode", "eval_mode", "evaluate"] * 2

    # the first epoch by hand, with the package's own calls
    from schedulefree import AdamWScheduleFree

    torch.manual_seed(3)
    model = ModelSpec("mlp", toy.input_shape, toy.num_classes, width=32).build()
    optimizer = AdamWScheduleFree(model.parameters(), lr=ScheduleFreeAdamW.default_lr)
    model.train()
    optimizer.train()
    for batch in toy.train_batches(32, 3, 1):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(batch.x), batch.y).backward()
        optimizer.step()
    y = [p.detach().clone() for p in model.parameters()]
    optimizer.eval()
    x = [p.detach().clone() for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(evaluated[0], x, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(evaluated[0], y, strict=True))


def test_advopt_methods_lists_the_peers(capsys: pytest.CaptureFixture) -> None:
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in NAMES:
        assert f"{name} " in out
    assert "lr=0.0025" in out and "lr=0.002 " in out


def test_missing_packages_give_a_clear_error(toy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "schedulefree", None)  # import now fails as if uninstalled
    monkeypatch.setitem(sys.modules, "pytorch_optimizer", None)
    assert main(["methods"]) == 0  # still listed
    for name in ("schedulefree-adamw", "adan", "mars", "lookahead-adam"):
        method = get_method(name)
        assert method.options == {}
        with pytest.raises(MissingPeerPackage, match=r"advanced_optimizers\[bench\]"):
            train_run(RunConfig(name, epochs=1, **SMALL), toy)
    with pytest.raises(MissingPeerPackage, match="needs the package 'pytorch-optimizer'"):
        get_method("adan", max_grad_norm=1.0)
    assert isinstance(MissingPeerPackage("x"), ValueError)  # advopt prints it without a traceback
    train_run(RunConfig("nadam", epochs=1, **SMALL), toy)  # torch's peer is unaffected


def test_plugin_imports_without_the_packages() -> None:
    code = (
        "import sys; sys.modules.update(schedulefree=None, pytorch_optimizer=None)\n"
        "from advanced_optimizers.bench.methods import available_methods\n"
        "assert {'schedulefree-adamw', 'adan', 'mars', 'lookahead-adam'} <= set(available_methods())\n"
        "from advanced_optimizers.bench.methods import get_method\n"
        "assert get_method('schedulefree-adamw').options == {}\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _run(method: str, seed: int, acc: float) -> RunResult:
    history = [
        {"epoch": 1, "train_loss": 1.0, "test_loss": 1.0, "test_acc": acc, "train_seconds": 1.0}
    ]
    correct = torch.zeros(1, 4, dtype=torch.bool)
    return RunResult(RunConfig(method, seed=seed), history, correct)


def test_ours_are_compared_with_baselines_and_peers_in_one_holm_family() -> None:
    accs = {"sgd": 0.90, "adam": 0.92, "nadam": 0.93, "mars": 0.91, "fer-adam": 0.94}
    runs = [
        _run(m, s, a + 0.003 * s * (i + 1))
        for i, (m, a) in enumerate(accs.items())
        for s in range(3)
    ]
    comparisons = summarize(runs)["comparisons"]
    pairs = [(c["method"], c["baseline"]) for c in comparisons]
    expected = [(m, b) for b in BASELINES for m in ("nadam", "mars", "fer-adam")]
    expected += [("fer-adam", "nadam"), ("fer-adam", "mars")]
    assert sorted(pairs) == sorted(expected)
    p_holm = holm([c["p_value"] for c in comparisons])
    assert [c["p_holm"] for c in comparisons] == p_holm
    table = markdown_table(summarize(runs))
    assert "| fer-adam | nadam |" in table and "| nadam | mars |" not in table


def test_schedulefree_is_not_given_the_runs_schedule(toy) -> None:
    """Schedule-free schedules itself: a cosine run anneals every other method, not this one."""
    for method, annealed in (("schedulefree-adamw", False), ("nadam", True)):
        config = RunConfig(method, epochs=2, batch_size=32, width=16, schedule="cosine")
        _, _, _, scheduler = train_mod._build(config, toy, torch.device("cpu"))
        assert (scheduler is not None) is annealed, method
