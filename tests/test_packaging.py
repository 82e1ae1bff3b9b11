"""The package as shipped: the wheel's contents, the single-sourced version, CITATION.cff, CHANGELOG.md.

The wheel is built offline from a clean copy of the sources (``tools/install_check.py``'s
``build_wheel``: ``pip wheel --no-deps --no-build-isolation``, so setuptools from the ``dev`` extra).
``make install-check`` goes further: it installs that wheel in a clean venv and runs ``advopt`` from it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import zipfile
from pathlib import Path

import pytest

import advanced_optimizers

ROOT = Path(__file__).resolve().parent.parent
MNIST_DIR = "advanced_optimizers/bench/data/_bundled/mnist"
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    pytest.importorskip("setuptools", reason="the dev extra installs setuptools")
    path = _load_tool("install_check").build_wheel(tmp_path_factory.mktemp("dist"))
    with zipfile.ZipFile(path) as zf:
        yield zf


def _dist_info(zf: zipfile.ZipFile) -> str:
    (name,) = {n.split("/", 1)[0] for n in zf.namelist() if ".dist-info/" in n}
    return name


def test_wheel_carries_the_bundled_mnist(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for name in (*MNIST_FILES, "SHA256SUMS"):
        assert f"{MNIST_DIR}/{name}" in names, f"{name} missing from the wheel"
    # every bundled file made it, and the copies in the wheel match the sums shipped beside them
    shipped = {p.name for p in (ROOT / MNIST_DIR).iterdir()}
    assert shipped <= {n.rsplit("/", 1)[1] for n in names if n.startswith(MNIST_DIR + "/")}
    sums = dict(
        reversed(line.split())
        for line in wheel.read(f"{MNIST_DIR}/SHA256SUMS").decode().splitlines()
    )
    assert set(sums) == set(MNIST_FILES)
    for name, digest in sums.items():
        assert hashlib.sha256(wheel.read(f"{MNIST_DIR}/{name}")).hexdigest() == digest, name


def test_wheel_metadata_license_typing_and_cli(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    info = _dist_info(wheel)
    assert "advanced_optimizers/py.typed" in names
    assert "advanced_optimizers/_version.py" in names
    licenses = [n for n in names if n.startswith(f"{info}/") and n.endswith("/LICENSE")]
    assert licenses, "LICENSE missing from the dist-info"
    assert "MIT License" in wheel.read(licenses[0]).decode()
    entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    assert "[console_scripts]" in entry_points
    assert "advopt = advanced_optimizers.bench.cli:main" in entry_points
    metadata = wheel.read(f"{info}/METADATA").decode().splitlines()
    assert f"Version: {advanced_optimizers.__version__}" in metadata
    assert "License-Expression: MIT" in metadata
    # no test, tool or benchmark code in the wheel
    assert all(n.startswith(("advanced_optimizers/", info + "/")) for n in names)


def test_version_is_single_sourced() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "advanced_optimizers._version.__version__"
    from advanced_optimizers._version import __version__

    assert advanced_optimizers.__version__ == __version__


def test_citation_cff_cites_the_software_and_the_five_papers() -> None:
    yaml = pytest.importorskip("yaml", reason="the dev extra installs PyYAML")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert cff["type"] == "software"
    assert cff["title"] and cff["message"] and cff["authors"]
    assert str(cff["version"]) == advanced_optimizers.__version__
    assert cff["license"] == "MIT"
    refs = cff["references"]
    assert len(refs) == 5
    for ref in refs:
        assert ref["type"] and ref["title"] and ref["authors"] and ref["year"], ref.get("title")
    by_title = {ref["title"]: ref for ref in refs}
    expected = {
        "Reducing Flipping Errors in Deep Neural Networks": ("Deng", "2203.08390"),
        "Gradient Correction beyond Gradient Descent": ("Li", "2203.08345"),
        "Signal Propagation: The Framework for Learning and Inference in a Forward Pass": (
            "Kohan",
            "2204.01723",
        ),
        "Accelerating DNN Training Through Selective Localized Learning": ("Krithivasan", None),
        "Tensor Programs V: Tuning Large Neural Networks via Zero-Shot Hyperparameter Transfer": (
            "Yang",
            "2203.03466",
        ),
    }
    assert set(by_title) == set(expected)
    for title, (first_author, arxiv) in expected.items():
        ref = by_title[title]
        assert ref["authors"][0]["family-names"] == first_author, title
        if arxiv:
            assert arxiv in yaml.safe_dump(ref), title
    assert "withdrawn" in by_title["Gradient Correction beyond Gradient Descent"]["notes"].lower()


def test_changelog_has_unreleased_and_the_current_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in text
    assert f"## [{advanced_optimizers.__version__}]" in text
