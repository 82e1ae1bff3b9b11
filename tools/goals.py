"""Print a Markdown table of every benchmark goal, met or missed, from the saved benchmark outputs.

Reads ``results/benchmarks/*.txt`` (each the output of the benchmark named on its first line) and
keeps the lines that state a goal as met or missed. Usage: ``python tools/goals.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATUS = re.compile(r"\b(MET|MISSED|met)\b")


def goals(path: Path) -> list[tuple[str, str]]:
    rows = []
    for line in path.read_text().splitlines():
        match = STATUS.search(line)
        if match and ("goal" in line.lower() or line.strip().startswith(match.group(1))):
            text = STATUS.sub("", line).replace("GOAL", "").strip(" :->")
            text = re.sub(r"^goal\s*:?\s*", "", text, flags=re.IGNORECASE)
            rows.append((text.strip(), match.group(1).upper()))
    return rows


def main() -> int:
    print("| benchmark | goal | status |")
    print("|---|---|---|")
    for path in sorted((ROOT / "results" / "benchmarks").glob("*.txt")):
        for text, status in goals(path):
            print(f"| `benchmarks/{path.stem}.py` | {text} | {status} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
