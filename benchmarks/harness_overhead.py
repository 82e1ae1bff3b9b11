"""Harness overhead: Adam on the MNIST MLP through ``train_run`` vs. a bare hand-written loop.

Both train the same model (same seed) on the same tensors in the same batch order; only the
training seconds are compared (the harness's evaluation is excluded, as in its records). The two are
interleaved, alternating which goes first (``_common.paired_timing``), so background load affects
both alike; the ratio is the geometric mean of the per-repetition ratios with a 95 % t-interval on
the log scale.

Goal: harness / bare <= 1.10.
Run: ``python benchmarks/harness_overhead.py [--reps 3]``; smoke: ``--smoke --no-fail``.
"""

from __future__ import annotations

import argparse
import sys
import time

import _common
import torch
import torch.nn.functional as F

from advanced_optimizers.bench.data import load_dataset
from advanced_optimizers.bench.models import ModelSpec
from advanced_optimizers.bench.train import RunConfig, train_run

GOAL = 1.10


def bare_epoch_seconds(dataset, config: RunConfig) -> float:
    torch.manual_seed(config.seed)
    model = ModelSpec("mlp", dataset.input_shape, dataset.num_classes).build()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    start = time.perf_counter()
    for batch in dataset.train_batches(config.batch_size, config.seed, 1):
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(batch.x), batch.y)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def harness_epoch_seconds(dataset, config: RunConfig) -> float:
    return train_run(config, dataset).history[0]["train_seconds"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions (3)")
    parser.add_argument("--n-train", type=int, default=None, help="training subset (all)")
    _common.add_arguments(parser)
    args = parser.parse_args(argv)
    n_test = 1000
    if args.smoke:
        args.reps, args.n_train, n_test = 2, 1024, 256
    report = _common.report_from_args("harness_overhead", args)

    dataset = load_dataset("mnist", progress=False).subset(args.n_train, n_test)
    config = RunConfig("adam", epochs=1, seed=0)
    warm = dataset.subset(min(2000, dataset.n_train), 100)
    harness_epoch_seconds(warm, config)  # warm-up both paths
    bare_epoch_seconds(warm, config)
    timing = _common.paired_timing(
        lambda _k: harness_epoch_seconds(dataset, config),
        lambda _k: bare_epoch_seconds(dataset, config),
        args.reps,
    )
    workload = (
        f"Adam, MNIST MLP 784-512-10, {dataset.n_train} samples/epoch, batch 128, "
        f"{args.reps} interleaved reps, torch threads {torch.get_num_threads()}"
    )
    print(workload)
    print(f"harness s/epoch: {', '.join(f'{s:.2f}' for s in timing.a)}")
    print(f"bare    s/epoch: {', '.join(f'{s:.2f}' for s in timing.b)}")
    ratio = timing.ratio
    print(f"harness / bare = {ratio.text()} (geometric mean of paired ratios, 95% CI)")
    report.add(
        workload,
        f"harness / bare = {ratio.ratio:.3f}   goal <= {GOAL:.2f}",
        ratio.ratio,
        GOAL,
        "<=",
        harness_seconds=timing.a,
        bare_seconds=timing.b,
        ratio=ratio.as_dict(),
    )
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
