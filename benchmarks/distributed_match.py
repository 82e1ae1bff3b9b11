"""How closely two data-parallel CPU processes reproduce one process, for every registered method.

Runs the configuration of ``tests/test_distributed.py`` (toy data, 3 epochs, global batch 32, two
gloo processes on loopback) and prints, per method, the largest absolute difference over epochs of
every recorded metric between the 2-process run and the 1-process run. Exit status 1 if any metric
differs by more than the test's tolerance (1e-4; test accuracy: one test sample).

Usage: ``python benchmarks/distributed_match.py``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_distributed as td
from conftest import toy_dataset

from advanced_optimizers.bench.train import train_run


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "dist.json"
        mp.spawn(td._worker, args=(2, td._free_port(), str(out)), nprocs=2, join=True)
        two = json.loads(out.read_text())
    data = toy_dataset()
    failed = False
    for method in td.METHODS:
        one = train_run(td._config(method), data).history
        worst: dict[str, float] = {}
        for a, b in zip(two[method], one, strict=True):
            for key in sorted(set(b) - td.TIMING - {"epoch"}):
                worst[key] = max(worst.get(key, 0.0), abs(a[key] - b[key]))
        limit = {"test_acc": 1 / len(data.y_test)}
        bad = [k for k, v in worst.items() if v > limit.get(k, td.TOLERANCE)]
        failed |= bool(bad)
        cells = ", ".join(f"{k} {v:.1e}" for k, v in worst.items())
        print(
            f"{method:<10} max |2 proc - 1 proc|: {cells}{'  EXCEEDS: ' + str(bad) if bad else ''}"
        )
    status = "MISSED" if failed else "MET"
    print("Goals:")
    print(
        f"  {status:<6} 2 processes match 1 process for all {len(td.METHODS)} methods "
        f"(losses and algorithm metrics within {td.TOLERANCE:g}, test accuracy within 1 sample)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
