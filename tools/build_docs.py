"""Build the API reference from the docstrings with pdoc, failing on any pdoc warning.

    python tools/build_docs.py [--out build/api]

Documents every public module of ``advanced_optimizers`` (the library and ``advanced_optimizers.bench``;
modules whose name starts with ``_`` are skipped). pdoc has no strict mode: it reports problems
(a module that fails to import, an annotation it cannot resolve, an ``.. include::`` it cannot read, ...)
as Python warnings, printed as ``Warn: ...`` lines, and still exits 0. Here every warning raised from
pdoc's code or from this package's code is collected, all are printed, and the build fails if there
was any. Warnings that third-party libraries raise while being imported are printed but do not fail.
"""

from __future__ import annotations

import argparse
import pkgutil
import shutil
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "advanced_optimizers"


def public_modules(package: str = PACKAGE) -> list[str]:
    """The package and its submodules, without any whose dotted name has a ``_``-prefixed part."""
    root = __import__(package)
    names = [package]
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def counts(warning: warnings.WarningMessage) -> bool:
    """Whether a warning fails the build: raised from pdoc itself or from this package."""
    path = Path(warning.filename).resolve()
    import pdoc

    pdoc_dir = Path(pdoc.__file__).resolve().parent
    package_dir = (ROOT / PACKAGE).resolve()
    return path.is_relative_to(pdoc_dir) or path.is_relative_to(package_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "build" / "api"), help="output directory")
    args = parser.parse_args(argv)

    import pdoc
    import pdoc.extract
    import pdoc.render

    sys.path.insert(0, str(ROOT))  # the checkout's package, also when the venv install is elsewhere
    out = Path(args.out)
    if (out / "index.html").is_file() and (out / "search.js").is_file():
        shutil.rmtree(out)  # an earlier pdoc build: no pages of since-removed modules stay behind
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        modules = public_modules()
        # pdoc walks each spec's submodules, except where a package's __all__ leaves them out (the
        # root's does): give it the fewest specs that reach every public module, and drop private ones
        specs: list[str] = []
        reached: set[str] = set()
        for name in modules:
            if name not in reached:
                specs.append(name)
                reached.update(pdoc.extract.walk_specs([name]))
        specs.append(r"!.*\._")
        pdoc.render.configure(docformat="restructuredtext", show_source=True)
        pdoc.pdoc(*specs, output_directory=out)

    failing = [w for w in caught if counts(w)]
    for w in caught:
        tag = "error" if w in failing else "ignored (third-party)"
        print(f"pdoc warning [{tag}]: {w.category.__name__}: {w.message}", file=sys.stderr)
    pages = sorted(out.rglob("*.html"))
    print(f"{len(modules)} modules, {len(pages)} pages in {out}; {len(failing)} warning(s) counted")
    if failing:
        print("docs: FAILED (fix the warnings above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
