"""Check that the built wheel works on its own: a clean venv, a non-editable install, an offline run.

    python tools/install_check.py [--keep]

1. builds the wheel from a clean copy of the sources (no stale ``build/`` can leak into it) and prints
   its file list (the data files and metadata; the Python modules are counted);
2. creates a fresh venv in a temporary directory, installs torch==2.13.0 there with
   ``constraints.txt`` (from this machine's disk), then the wheel with the ``bench`` extra, again
   under the constraints so pip never picks another torch;
3. from an empty directory outside the checkout, with ``HOME`` pointed at an empty directory and
   ``$ADVOPT_DATA_DIR`` unset (so the only MNIST there is the copy inside the installed wheel), runs
   ``advopt data --no-download`` and a very small ``advopt compare``, and checks that ``results.json``
   appears and that nothing was downloaded.

``build_wheel`` is also used by ``tests/test_packaging.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# what `pip install .` needs from the checkout (pyproject.toml names README.md and LICENSE)
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "advanced_optimizers")


def build_wheel(out_dir: Path, python: str = sys.executable) -> Path:
    """Build the wheel offline from a copy of the sources; returns its path.

    The copy keeps setuptools' ``build/lib`` out of the checkout: files left there by an earlier build
    (a renamed module, say) would otherwise end up in the wheel. Needs setuptools in ``python``'s
    environment (the ``dev`` extra has it).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="advopt-src-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in SOURCES:
            path = ROOT / name
            if path.is_dir():
                ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
                shutil.copytree(path, src / name, ignore=ignore)
            else:
                shutil.copy2(path, src / name)
        cmd = [python, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation"]
        done = subprocess.run([*cmd, "-q", "-w", str(out_dir)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"wheel build failed:\n{done.stdout}\n{done.stderr}")
    wheels = sorted(out_dir.glob("advanced_optimizers-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one wheel in {out_dir}, found {wheels}")
    return wheels[0]


def wheel_files(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def run(cmd: list[str], **kwargs) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)

    start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="advopt-install-check-"))
    ok = False
    try:
        wheel = build_wheel(tmp / "dist")
        names = wheel_files(wheel)
        print(f"wheel: {wheel.name} ({wheel.stat().st_size / 1e6:.1f} MB, {len(names)} files)")
        for name in names:
            if not name.endswith(".py"):
                print(f"  {name}")
        print(f"  ... and {sum(n.endswith('.py') for n in names)} .py modules", flush=True)

        venv = tmp / "venv"
        py = venv / "bin" / "python"
        constraints = str(ROOT / "constraints.txt")
        run([sys.executable, "-m", "venv", str(venv)])
        pip = [str(py), "-m", "pip", "install", "--quiet", "--constraint", constraints]
        run([*pip, "torch==2.13.0"])
        run([*pip, f"{wheel}[bench]"])

        work, home, out = tmp / "run", tmp / "home", tmp / "out"
        work.mkdir()
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in ("ADVOPT_DATA_DIR", "PYTHONPATH")}
        env.update(HOME=str(home), PYTHONNOUSERSITE="1")
        where = subprocess.run(
            [str(py), "-c", "import advanced_optimizers as a; print(a.__version__, a.__file__)"],
            cwd=work,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        print(f"installed: advanced_optimizers {where}")
        if not where.split(" ", 1)[1].startswith(str(venv)):
            raise RuntimeError("the package was not imported from the clean venv")
        advopt = str(venv / "bin" / "advopt")
        # nothing else on the search path: this finds MNIST only if the wheel carries it
        run([advopt, "data", "--dataset", "mnist", "--no-download"], cwd=work, env=env)
        small = ["--seeds", "1", "--epochs", "1", "--n-train", "512", "--n-test", "256"]
        run(
            [advopt, "compare", "--methods", "adam", *small, "--no-progress", "--out", str(out)],
            cwd=work,
            env=env,
        )
        if not (out / "results.json").is_file():
            raise RuntimeError(f"no results.json in {out}")
        fetched = [
            p for p in (home / ".cache" / "advanced_optimizers", work / "data") if p.exists()
        ]
        if fetched:
            raise RuntimeError(f"data was fetched instead of the bundled MNIST used: {fetched}")
        elapsed = time.monotonic() - start
        print(f"install-check: OK ({out / 'results.json'} written; {elapsed:.0f} s)")
        ok = True
        return 0
    finally:
        if args.keep:
            print(f"install-check: files kept in {tmp}", file=sys.stderr)
        elif ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:  # keep the wheel and the run's output for a look, not the venv (over 1 GB)
            shutil.rmtree(tmp / "venv", ignore_errors=True)
            print(f"install-check: FAILED; wheel and output kept in {tmp}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
