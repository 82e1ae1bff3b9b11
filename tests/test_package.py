"""The package root exports the promised API and imports with torch alone."""

from __future__ import annotations

import subprocess
import sys

import advanced_optimizers


def test_root_exports() -> None:
    for name in advanced_optimizers.__all__:
        assert getattr(advanced_optimizers, name) is not None, name


def test_library_imports_without_the_harness_dependencies() -> None:
    code = (
        "import sys\n"
        "for m in ('numpy', 'scipy', 'pandas', 'matplotlib', 'tqdm'):\n"
        "    sys.modules[m] = None  # any import of them now fails\n"
        "import advanced_optimizers\n"
        "print(len(advanced_optimizers.__all__))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
