"""``advopt compare --device``: resolution, the clear error for a missing device, the model and every
batch on the device, the device in the run's fingerprint, and nccl only for CUDA under torchrun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from advanced_optimizers.bench import distributed, train
from advanced_optimizers.bench.cli import build_parser, main
from advanced_optimizers.bench.device import available_devices, backend_for, resolve_device
from advanced_optimizers.bench.train import RunConfig, train_run

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


@needs_no_cuda
def test_auto_resolves_to_cpu_without_a_gpu() -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert build_parser().parse_args(["compare"]).device == "auto"


@needs_no_cuda
def test_unavailable_cuda_is_a_clear_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["compare", "--device", "cuda"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --device: cuda is not available on this machine" in err
    assert "available: auto, cpu" in err
    with pytest.raises(ValueError, match=r"device 'cuda' is not available.*available: auto, cpu"):
        resolve_device("cuda")


def test_unknown_device_names_the_choices() -> None:
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda, mps; got 'tpu'"):
        resolve_device("tpu")


def test_auto_prefers_cuda_and_the_backend_follows_the_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert "cuda" in available_devices()
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert backend_for(resolve_device("auto")) == "nccl"
    assert backend_for(resolve_device("cpu")) == "gloo"  # a GPU machine training on the CPU
    assert backend_for("mps") == "gloo"


@pytest.mark.parametrize(
    "device, backend, cuda_set",
    [("cuda", "nccl", True), ("cpu", "gloo", False), (None, "nccl", True)],
)
def test_init_from_env_picks_nccl_only_for_cuda(
    monkeypatch: pytest.MonkeyPatch, device: str | None, backend: str, cuda_set: bool
) -> None:
    """Under torchrun (WORLD_SIZE=2) with CUDA present: nccl for cuda (and auto), gloo for cpu."""
    calls: dict[str, object] = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.setdefault("set_device", d))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(
        dist, "init_process_group", lambda backend: calls.setdefault("backend", backend)
    )
    assert distributed.init_from_env(device) is True
    assert calls["backend"] == backend
    assert ("set_device" in calls) == cuda_set
    if cuda_set:
        assert calls["set_device"] == torch.device("cuda", 1)


def test_model_and_every_batch_are_on_the_run_device(toy, monkeypatch: pytest.MonkeyPatch) -> None:
    moved = []
    real = train.move_batch

    def spy(batch, device):
        moved.append(torch.device(device))
        out = real(batch, device)
        assert out.x.device.type == out.y.device.type == out.index.device.type == device.type
        return out

    monkeypatch.setattr(train, "move_batch", spy)
    result = train_run(RunConfig("sgd", epochs=1, width=16, batch_size=64, device="cpu"), toy)
    assert moved and set(moved) == {torch.device("cpu")}
    assert len(moved) == toy.n_train // 64
    assert result.correct.device.type == "cpu"


def test_compare_on_cpu_records_the_device(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    args = ["compare", "--methods", "sgd", "--seeds", "1", "--epochs", "1", "--n-train", "256"]
    args += ["--n-test", "128", "--width", "16", "--device", "cpu", "--no-progress"]
    assert main([*args, "--out", str(out)]) == 0
    run = json.loads((out / "runs" / "sgd" / "seed0.json").read_text())
    assert run["config"]["device"] == "cpu"
    assert run["config"]["n_train"] == 256 and run["config"]["dataset"] == "mnist"
    assert json.loads((out / "experiment.json").read_text())["device"] == "cpu"
    assert json.loads((out / "results.json").read_text())["environment"]["device"] == "cpu"
