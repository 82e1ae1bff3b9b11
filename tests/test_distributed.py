"""Two CPU processes (gloo, loopback) train like one process with the same global batch."""

from __future__ import annotations

import gc
import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import toy_dataset

from advanced_optimizers.bench.methods import available_methods
from advanced_optimizers.bench.report import PEERS
from advanced_optimizers.bench.train import RunConfig, train_run

# the baselines and every algorithm of the library (each with its own distributed state); the peers
# keep no extra state beyond their optimizer's, which the averaged gradients already make agree
METHODS = [m for m in available_methods() if m not in PEERS]
EPOCHS = 3  # FER's store is read from epoch 2; LoCal's transition layer moves after epoch 1
TOLERANCE = 1e-4  # on losses and algorithm metrics: float summation order differs across shards
TIMING = {"train_seconds", "eval_seconds", "epoch_seconds"}


# LoCal: Hebbian first layer from epoch 2 (static rule, no warm-up) and a gate that is neither 0
# nor 1 on this fast-falling toy loss, so both its pooled update and its averaged gate are exercised.
# FER: official τ = 0, so the store fills on this toy problem and its sync is exercised.
OPTIONS = {
    "localized-sgd": {
        "selection_mode": "static",
        "warmup_epochs": 0,
        "weak_supervision_weight": 10.0,
    },
    "fer-adam": {"consistency_threshold": 0.0},
    "fer-sgd": {"consistency_threshold": 0.0},
}
EXERCISED = {"fer-adam": "fer_flagged", "fer-sgd": "fer_flagged", "localized-sgd": "transition"}


def _config(method: str) -> RunConfig:
    return RunConfig(
        method, options=OPTIONS.get(method, {}), epochs=EPOCHS, batch_size=32, width=16
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        data = toy_dataset()
        results = {method: train_run(_config(method), data).history for method in METHODS}
        if rank == 0:
            Path(out).write_text(json.dumps(results))
    finally:
        gc.collect()  # free DDP's gloo work objects before the group goes
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_histories(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("dist") / "dist.json"
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return json.loads(out.read_text())


@pytest.mark.parametrize("method", METHODS)
def test_two_processes_match_one(method: str, two_process_histories: dict) -> None:
    """Same losses, accuracy and algorithm metrics (FER store, LoCal transition/gate, ...)."""
    data = toy_dataset()
    single = train_run(_config(method), data).history
    distributed = two_process_histories[method]
    assert len(distributed) == len(single) == EPOCHS
    if method in EXERCISED:  # the algorithm's extra state was in use, so its sync was tested
        assert max(epoch[EXERCISED[method]] for epoch in single) > 0
    for epoch, (d, s) in enumerate(zip(distributed, single, strict=True), start=1):
        assert set(d) == set(s)
        for key in sorted(set(s) - TIMING):
            if key == "test_acc":
                assert d[key] == pytest.approx(s[key], abs=1 / len(data.y_test)), (epoch, key)
            else:
                assert d[key] == pytest.approx(s[key], abs=TOLERANCE, nan_ok=True), (epoch, key)
