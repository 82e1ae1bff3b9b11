"""The advopt command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from advanced_optimizers.bench.cli import main


def test_help_lists_commands_and_methods(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "compare" in out and "report" in out
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    out = capsys.readouterr().out
    for word in ("--preset", "--methods", "--seeds", "--data-dir", "sgd", "adam", "resumes"):
        assert word in out


def test_compare_on_real_mnist_subset_then_report(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "compare",
            "--methods",
            "sgd,adam",
            "--epochs",
            "1",
            "--seeds",
            "2",
            "--n-train",
            "600",
            "--n-test",
            "200",
            "--width",
            "32",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "| adam | 2 |" in text and str(out / "summary.md") in text
    saved = json.loads((out / "experiment.json").read_text())
    assert saved["seeds"] == [0, 1] and saved["n_train"] == 600
    assert main(["report", "--out", str(out)]) == 0


def test_bad_arguments_are_reported(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert main(["compare", "--methods", "sgd,nope", "--out", str(tmp_path)]) == 2
    assert "methods must be among" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compare", "--seeds", "zero"])
    with pytest.raises(SystemExit):
        main(["compare", "--dataset", "svhn"])
    assert main(["compare", "--opt", "sgd:foo=1", "--methods", "sgd", "--out", str(tmp_path)]) == 2


def test_methods_lists_baselines(capsys: pytest.CaptureFixture) -> None:
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sgd") and "adam" in out


def test_methods_into_a_closed_pipe_exits_quietly() -> None:
    """``advopt methods | head -1``: the reader is gone before the output is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails with EPIPE, as after head has exited
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "advanced_optimizers.bench.cli", "methods"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert proc.stderr == ""
    assert proc.returncode == 1
