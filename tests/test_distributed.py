"""Two CPU processes (gloo, loopback) train like one process with the same global batch."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import toy_dataset

from advanced_optimizers.bench.train import RunConfig, train_run

METHODS = ["sgd", "adam"]
TOLERANCE = 1e-4  # on test loss and training loss: float summation order differs across shards


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
        results = {}
        for method in METHODS:
            run = train_run(RunConfig(method, epochs=2, batch_size=32, width=16), data)
            results[method] = run.history
        if rank == 0:
            Path(out).write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one(tmp_path: Path) -> None:
    out = tmp_path / "dist.json"
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    distributed = json.loads(out.read_text())
    data = toy_dataset()
    for method in METHODS:
        single = train_run(RunConfig(method, epochs=2, batch_size=32, width=16), data).history
        for d, s in zip(distributed[method], single, strict=True):
            assert abs(d["test_loss"] - s["test_loss"]) < TOLERANCE, (method, d, s)
            assert abs(d["train_loss"] - s["train_loss"]) < TOLERANCE, (method, d, s)
            assert d["test_acc"] == pytest.approx(s["test_acc"], abs=1 / len(data.y_test))
