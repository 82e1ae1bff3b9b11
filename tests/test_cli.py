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
    out = main_help = capsys.readouterr().out
    assert "compare" in out and "report" in out
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    out = capsys.readouterr().out
    for word in ("--preset", "--methods", "--seeds", "--data-dir", "sgd", "adam", "resumes"):
        assert word in out
    for word in ("--validation", "--tuned", "--retry-failed", "test set once"):
        assert word in out
    assert "tune" in main_help and "profile" in main_help
    with pytest.raises(SystemExit):
        main(["tune", "--help"])
    out = capsys.readouterr().out
    for word in ("--trials", "--sampler", "--storage", "--space", "--lr-factor", "--pruner"):
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
    assert saved["validation"] == 2000  # the quick preset's validation split
    run = json.loads((out / "runs" / "adam" / "seed0.json").read_text())
    assert run["config"]["n_val"] == 2000 and run["status"] == "ok"
    assert "Selection: **validation**" in text
    assert main(["report", "--out", str(out)]) == 0


def test_bad_arguments_are_reported(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert main(["compare", "--methods", "sgd,nope", "--out", str(tmp_path)]) == 2
    assert "methods must be among" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compare", "--seeds", "zero"])
    with pytest.raises(SystemExit):
        main(["compare", "--dataset", "svhn"])
    assert main(["compare", "--opt", "sgd:foo=1", "--methods", "sgd", "--out", str(tmp_path)]) == 2
    capsys.readouterr()
    assert main(["tune", "--trials", "2", "--validation", "0", "--out", str(tmp_path)]) == 2
    assert "needs a validation split" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compare", "--validation", "-1"])


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
