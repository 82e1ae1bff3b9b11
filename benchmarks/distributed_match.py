"""How closely two data-parallel CPU processes reproduce one process, for every registered method.

Runs the configuration of ``tests/test_distributed.py`` (a generated MNIST-shaped toy dataset, 3
epochs, global batch 32, two gloo processes on loopback) and prints, per method, the largest absolute
difference over epochs of every recorded metric between the 2-process run and the 1-process run.
Goal: no metric differs by more than the test's tolerance (1e-4; test accuracy: one test sample).

Usage: ``python benchmarks/distributed_match.py``; smoke: ``--smoke --no-fail`` (a smaller toy set).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
from pathlib import Path

import _common
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from advanced_optimizers.bench.methods import available_methods
from advanced_optimizers.bench.train import RunConfig, train_run

METHODS = available_methods()  # every registered algorithm, each with its own distributed state
EPOCHS = 3  # FER's store is read from epoch 2; LoCal's transition layer moves after epoch 1
TOLERANCE = 1e-4  # on losses and algorithm metrics: float summation order differs across shards
TIMING = {"train_seconds", "eval_seconds", "epoch_seconds"}
# The same options as tests/test_distributed.py, so that each algorithm's distributed state is used:
# LoCal with a static Hebbian first layer from epoch 2 and a gate strictly between 0 and 1; FER with
# the official τ = 0, so its store fills on the toy problem.
OPTIONS = {
    "localized-sgd": {
        "selection_mode": "static",
        "warmup_epochs": 0,
        "weak_supervision_weight": 10.0,
    },
    "fer-adam": {"consistency_threshold": 0.0},
    "fer-sgd": {"consistency_threshold": 0.0},
}
SIZES = {"full": (256, 128), "smoke": (128, 64)}  # toy (n_train, n_test)


def run_config(method: str) -> RunConfig:
    return RunConfig(
        method, options=OPTIONS.get(method, {}), epochs=EPOCHS, batch_size=32, width=16
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, world: int, port: int, out: str, sizes: tuple[int, int]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        data = _common.synthetic_mnist(*sizes)
        results = {method: train_run(run_config(method), data).history for method in METHODS}
        if rank == 0:
            Path(out).write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_arguments(parser)
    args = parser.parse_args(argv)
    report = _common.report_from_args("distributed_match", args)
    sizes = SIZES["smoke" if args.smoke else "full"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "dist.json"
        mp.spawn(worker, args=(2, free_port(), str(out), sizes), nprocs=2, join=True)
        two = json.loads(out.read_text())
    torch.set_num_threads(1)
    data = _common.synthetic_mnist(*sizes)
    limit = {"test_acc": 1 / len(data.y_test)}
    worst_all: dict[str, dict[str, float]] = {}
    exceeded: dict[str, list[str]] = {}
    pad = max(len(m) for m in METHODS)
    for method in METHODS:
        one = train_run(run_config(method), data).history
        worst: dict[str, float] = {}
        for a, b in zip(two[method], one, strict=True):
            for key in sorted(set(b) - TIMING - {"epoch"}):
                worst[key] = max(worst.get(key, 0.0), abs(a[key] - b[key]))
        bad = [k for k, v in worst.items() if not v <= limit.get(k, TOLERANCE)]
        worst_all[method] = worst
        if bad:
            exceeded[method] = bad
        cells = ", ".join(f"{k} {v:.1e}" for k, v in worst.items())
        print(
            f"{method:<{pad}} max |2 proc - 1 proc|: {cells}"
            f"{'  EXCEEDS: ' + str(bad) if bad else ''}"
        )
    largest = max(
        (v for w in worst_all.values() for k, v in w.items() if k != "test_acc"), default=0.0
    )
    report.add(
        f"toy MNIST-shaped data {data.n_train}/{data.n_test}, MLP width 16, {EPOCHS} epochs, "
        "global batch 32, 2 gloo processes vs 1",
        f"2 processes match 1 process for all {len(METHODS)} methods "
        f"(losses and algorithm metrics within {TOLERANCE:g}, test accuracy within 1 sample)",
        largest,
        TOLERANCE,
        "<=",
        met=not exceeded,
        exceeded=exceeded,
        max_abs_difference=worst_all,
    )
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
