"""The study notebook: its two paired files agree, and it runs top to bottom in quick mode.

``experiments_comparison.py`` (jupytext percent format) is the source; ``experiments_comparison.ipynb``
is its pair holding the outputs. The run goes through papermill, as ``make notebook`` does.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import jupytext
import nbformat
import papermill
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "experiments_comparison.py"
NOTEBOOK = ROOT / "experiments_comparison.ipynb"
# what draws one figure in a cell: a matplotlib figure shown, or a saved PNG displayed
FIGURE_CALL = re.compile(r"^\s*(plt\.show\(\)|display\(Image\()", re.MULTILINE)


def _cells(notebook: nbformat.NotebookNode) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source) for cell in notebook.cells]


def test_py_and_ipynb_are_in_sync() -> None:
    committed = nbformat.read(NOTEBOOK, as_version=4)
    assert committed.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    from_py = jupytext.reads(SOURCE.read_text(encoding="utf-8"), fmt="py:percent")
    assert _cells(from_py) == _cells(committed), "run `jupytext --sync experiments_comparison.py`"
    tagged = [c for c in committed.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "MODE = " in tagged[0].source


def _venv_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec running ipykernel on this interpreter (the venv's), found first on JUPYTER_PATH."""
    name = "advopt-test-python"
    spec = tmp_path / "jupyter" / "kernels" / name
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec.joinpath("kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "advopt test", "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return name


def test_notebook_runs_in_quick_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a non-interactive backend in the environment must not stop the figures from rendering
    monkeypatch.setenv("MPLBACKEND", "Agg")
    out = tmp_path / "out"
    executed = papermill.execute_notebook(
        str(NOTEBOOK),
        str(tmp_path / "executed.ipynb"),
        parameters=dict(MODE="quick", OUT_ROOT=str(out), CIFAR_DIR=str(tmp_path / "no-cifar")),
        kernel_name=_venv_kernel(tmp_path, monkeypatch),
        cwd=str(ROOT),
        execution_timeout=900,
        progress_bar=False,
    )
    code_cells = [cell for cell in executed.cells if cell.cell_type == "code"]
    outputs = [out for cell in code_cells for out in cell.get("outputs", [])]
    text = "".join(
        out.get("text", "")
        + str(out.get("data", {}).get("text/markdown", ""))
        + str(out.get("data", {}).get("text/plain", ""))
        + "".join(out.get("traceback", []))
        for out in outputs
    )
    assert "| adam |" in text  # the summary table was produced
    assert "CIFAR-10 is not on this machine" in text
    assert "Highest mean final accuracy" in text
    assert (out / "mnist-mlp-quick" / "results.json").exists()
    assert "IProgress not found" not in text

    # every figure renders as a PNG, in the cell that draws it
    per_cell = [
        (
            len(FIGURE_CALL.findall(cell.source)),
            sum("image/png" in o.get("data", {}) for o in cell.get("outputs", [])),
        )
        for cell in code_cells
    ]
    n_figures = sum(expected for expected, _ in per_cell)
    assert n_figures == 5  # MNIST samples; MLP curves, summary, flips; CNN curves (no CIFAR)
    assert [png for _, png in per_cell] == [expected for expected, _ in per_cell]
