"""The study notebook runs top to bottom in quick mode (so it can never rot)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def test_notebook_runs_in_quick_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADVOPT_NOTEBOOK_MODE", "quick")
    monkeypatch.setenv("ADVOPT_NOTEBOOK_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("ADVOPT_CIFAR_DIR", str(tmp_path / "no-cifar-here"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(ROOT / "experiments_comparison.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    outputs = "".join(
        out.get("text", "") + str(out.get("data", {}).get("text/markdown", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    assert "| adam |" in outputs  # the summary table was produced
    assert "CIFAR-10 is not on this machine" in outputs
    assert "Highest mean final accuracy" in outputs
    assert (tmp_path / "out" / "mnist-mlp-quick" / "results.json").exists()
