"""Regenerate the generated blocks of README.md and coursework_report.md from real outputs.

A block is delimited by two HTML comments, so the command that produced it stands beside it:

    <!-- BEGIN run: advopt report --out results/mnist-mlp/final --no-write -->
    ... replaced by the command's standard output ...
    <!-- END -->

    <!-- BEGIN file: results/benchmarks/fer.txt -->
    ... replaced by that file (the saved output of a benchmark, as a text block) ...
    <!-- END -->

    <!-- BEGIN include: docs/algorithms/fer.md -->
    ... replaced by that Markdown file, its headings one level deeper (a file under results/,
    a command's report, two levels: it sits inside a section of the document) ...
    <!-- END -->

Usage: ``python tools/update_docs.py [FILE ...]`` (default: README.md coursework_report.md);
``--check`` exits 1 if a block is out of date instead of writing.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- BEGIN (run|file|include): (.+?) -->\n)(.*?)(<!-- END -->)", re.DOTALL)


def render(kind: str, what: str) -> str:
    if kind == "include":
        text = (ROOT / what).read_text().rstrip("\n")
        return demote_headings(text, 2 if what.startswith("results/") else 1) + "\n"
    if kind == "file":
        text = (ROOT / what).read_text().rstrip("\n")
        return f"```text\n{text}\n```\n"
    argv = shlex.split(what)
    if argv[0] == "advopt":
        argv = [sys.executable, "-m", "advanced_optimizers.bench.cli", *argv[1:]]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout.rstrip("\n") + "\n"


def demote_headings(text: str, levels: int = 1) -> str:
    """Markdown ``text`` with every heading ``levels`` deeper (code fences left alone)."""
    lines, in_fence = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        elif not in_fence and line.startswith("#"):
            line = "#" * levels + line
        lines.append(line)
    return "\n".join(lines)


def update(path: Path) -> tuple[str, str]:
    old = path.read_text()
    new = BLOCK.sub(lambda m: m.group(1) + render(m.group(2), m.group(3)) + m.group(5), old)
    return old, new


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", default=["README.md", "coursework_report.md"])
    parser.add_argument("--check", action="store_true", help="fail if a block is out of date")
    args = parser.parse_args()
    stale = []
    for name in args.files:
        path = ROOT / name
        if not path.exists():
            continue
        old, new = update(path)
        if old != new:
            stale.append(name)
            if not args.check:
                path.write_text(new)
    if stale:
        print(("out of date: " if args.check else "updated: ") + ", ".join(stale))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
