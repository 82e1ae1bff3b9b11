"""Killing ``advopt compare`` mid-run (SIGKILL) and starting it again gives the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ARGS = [
    "compare",
    "--methods",
    "sgd",
    "--epochs",
    "12",
    "--seeds",
    "1",
    "--n-train",
    "4000",
    "--n-test",
    "500",
    "--width",
    "32",
    "--no-progress",
]


def _command(out: Path) -> list[str]:
    return [sys.executable, "-m", "advanced_optimizers.bench.cli", *ARGS, "--out", str(out)]


def _history(out: Path) -> list[tuple]:
    run = json.loads((out / "runs" / "sgd" / "seed0.json").read_text())
    keys = ("epoch", "train_loss", "test_loss", "test_acc")
    return [tuple(h[k] for k in keys) for h in run["history"]]


def test_sigkill_then_restart_matches_uninterrupted(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_command(tmp_path / "ref"), check=True, env=env, capture_output=True)

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        _command(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ckpt = out / "runs" / "sgd" / "seed0.ckpt"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists() and not (out / "runs" / "sgd" / "seed0.json").exists(), "killed too late"

    subprocess.run(_command(out), check=True, env=env, capture_output=True)
    assert _history(out) == _history(tmp_path / "ref")
    assert not list(out.rglob("*.tmp")) and not ckpt.exists()
