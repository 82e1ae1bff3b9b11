"""Every script in examples/ runs in its --smoke mode (the DDP one under torch.distributed.run)."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(*args: str, timeout: float = 240) -> str:
    # one thread per process: on a small shared machine two threads per process mostly wait
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore::FutureWarning"}
    done = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=EXAMPLES.parent,
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def needs(*modules: str) -> None:
    for module in modules:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {module} (the integrations extra)")


def test_plain_loop() -> None:
    out = run(str(EXAMPLES / "plain_loop.py"), "--smoke")
    assert "fer-adam" in out and "localized-sgd" in out and "gc-adam" in out
    assert "flagged" in out and "transition 1" in out


def test_lightning() -> None:
    needs("lightning")
    out = run(str(EXAMPLES / "lightning_fer.py"), "--smoke")
    assert "fer_flagged" in out.splitlines()[-1]


def test_huggingface() -> None:
    needs("transformers", "accelerate")
    out = run(str(EXAMPLES / "huggingface_trainer.py"), "--smoke")
    lines = out.splitlines()
    assert any(line.startswith("fer-adam") and "flagged" in line for line in lines)
    assert any(line.startswith("gc-adam") for line in lines)
    assert any(line.startswith("mup-adamw") for line in lines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_ddp() -> None:
    script = str(EXAMPLES / "torchrun_ddp.py")
    out = run(
        "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
        script, "--smoke",
    )  # fmt: skip
    assert "2 rank(s): identical FER stores on every rank: True" in out
