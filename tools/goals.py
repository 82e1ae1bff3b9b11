"""Print a Markdown table of every benchmark goal, met or missed, from the saved goal files.

Reads ``results/benchmarks/*.goals.json``, written by each benchmark script through
``benchmarks/_common.py``'s ``GoalReport`` (one record per goal: benchmark, workload, description,
value, threshold, comparison, met, details), and prints one row per goal in file-name order, then in
the order the benchmark recorded them; a goal the run could not measure (``config.not_measured``)
gets a row "NOT MEASURED". Only full runs belong there: a smoke or quick run's file is an
error. Standard library only, so ``python tools/goals.py`` runs with any Python 3.10+.

Usage: ``python tools/goals.py [--dir results/benchmarks]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOALS_DIR = ROOT / "results" / "benchmarks"
SUFFIX = ".goals.json"


class GoalsFileError(ValueError):
    """A goals file that is missing fields, not a full run, or not JSON."""


def load(path: Path) -> tuple[str, list[tuple[str, str]]]:
    """The script a goals file belongs to and its (description, MET/MISSED) rows."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GoalsFileError(f"{path}: cannot read it as JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("goals"), list):
        raise GoalsFileError(f"{path}: not a goals file (no list 'goals')")
    if data.get("run", "full") != "full":
        raise GoalsFileError(
            f"{path}: a {data['run']} run; only full runs' goals belong in {GOALS_DIR.name}/"
        )
    benchmark = data.get("benchmark") or path.name[: -len(SUFFIX)]
    script = data.get("script") or f"benchmarks/{benchmark}.py"
    rows = []
    for k, goal in enumerate(data["goals"]):
        if not isinstance(goal, dict) or not isinstance(goal.get("description"), str):
            raise GoalsFileError(f"{path}: goal {k} has no text 'description'")
        if not isinstance(goal.get("met"), bool):
            raise GoalsFileError(f"{path}: goal {k} has no boolean 'met'")
        rows.append((goal["description"], "MET" if goal["met"] else "MISSED"))
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    rows += [(str(note), "NOT MEASURED") for note in config.get("not_measured", [])]
    return script, rows


def cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def table(directory: Path) -> str:
    paths = sorted(directory.glob(f"*{SUFFIX}"))
    if not paths:
        raise GoalsFileError(f"no *{SUFFIX} file in {directory}")
    lines = ["| benchmark | goal | status |", "|---|---|---|"]
    for path in paths:
        script, rows = load(path)
        lines += [f"| `{cell(script)}` | {cell(text)} | {status} |" for text, status in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dir", type=Path, default=GOALS_DIR, help="directory of *.goals.json files"
    )
    args = parser.parse_args(argv)
    try:
        print(table(args.dir))
    except GoalsFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
