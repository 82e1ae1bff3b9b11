"""Harness overhead: Adam on the MNIST MLP through ``train_run`` vs. a bare hand-written loop.

Both train the same model (same seed) on the same tensors in the same batch order; only the
training seconds are compared (the harness's evaluation is excluded, as in its records). The two are
interleaved, alternating which goes first, so background load affects both alike.

Goal: harness / bare <= 1.10.   Run: ``python benchmarks/harness_overhead.py [--reps 3]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

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
    args = parser.parse_args(argv)

    dataset = load_dataset("mnist", progress=False).subset(args.n_train, 1000)
    config = RunConfig("adam", epochs=1, seed=0)
    harness_epoch_seconds(dataset.subset(2000, 100), config)  # warm-up both paths
    bare_epoch_seconds(dataset.subset(2000, 100), config)
    harness, bare = [], []
    for rep in range(args.reps):
        pair = [(harness, harness_epoch_seconds), (bare, bare_epoch_seconds)]
        for store, fn in pair if rep % 2 == 0 else reversed(pair):
            store.append(fn(dataset, config))
    ratio = statistics.median(harness) / statistics.median(bare)
    print(
        f"Adam, MNIST MLP 784-512-10, {dataset.n_train} samples/epoch, batch 128, "
        f"{args.reps} interleaved reps, torch threads {torch.get_num_threads()}"
    )
    print(
        f"harness s/epoch: {', '.join(f'{s:.2f}' for s in harness)}  (median "
        f"{statistics.median(harness):.2f})"
    )
    print(
        f"bare    s/epoch: {', '.join(f'{s:.2f}' for s in bare)}  (median "
        f"{statistics.median(bare):.2f})"
    )
    met = ratio <= GOAL
    print(f"harness / bare = {ratio:.3f}   goal <= {GOAL:.2f}: {'MET' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
