"""``advopt report`` and ``advopt profile``: tables and plots rebuilt from result directories."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .args import _csv


def _add_profile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="performance profile of time-to-target across result directories (workloads)",
        description=(
            "AlgoPerf-style performance profile: for each method, the fraction of workloads\n"
            "(compare result directories, e.g. the MLP and the CNN study) on which its median time\n"
            "to the workload's validation target is within tau x the fastest method's, as a step\n"
            "function of tau; never reached (or failed in most runs) = infinity. Writes\n"
            "profile.png, profile.json and profile.md into --out."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dirs", nargs="+", type=Path, help="results directories written by compare")
    p.add_argument(
        "--time",
        choices=("seconds", "epochs"),
        default="seconds",
        help="training seconds (default) or epochs to target",
    )
    p.add_argument(
        "--out", type=Path, default=Path("results") / "profile", help="default: results/profile"
    )
    p.set_defaults(func=cmd_profile)


def cmd_profile(args: argparse.Namespace) -> int:
    from ..atomic import write_json, write_text
    from ..plots import plot_profile
    from ..profiles import performance_profile, profile_table

    profile = performance_profile(args.dirs, args.time)
    table = profile_table(profile)
    write_json(args.out / "profile.json", profile)
    write_text(args.out / "profile.md", table)
    plot_profile(profile, args.out / "profile.png")
    print(table)
    print(f"profile: {args.out / 'profile.png'}\n         {args.out / 'profile.json'}")
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="rebuild summary.md, results.json/csv and plots from runs/",
        description="Recompute the statistics table and plots of a results "
        "directory from its finished runs (runs/*/seed*.json).",
    )
    p.add_argument("--out", type=Path, required=True, help="a directory written by compare")
    p.add_argument("--target", type=float, default=None, help="target accuracy (see compare)")
    p.add_argument(
        "--methods",
        type=_csv,
        default=None,
        help="only these methods (comma-separated; default: every finished run)",
    )
    p.add_argument(
        "--no-write",
        action="store_true",
        help="only print the table; leave the directory's files as they are",
    )
    p.set_defaults(func=cmd_report)


class _SavedExperiment(dict):
    """``experiment.json`` as saved, for ``report``: no re-validation against today's registry,
    so results whose methods were since renamed or removed can still be summarised."""

    def to_dict(self) -> dict[str, Any]:
        return dict(self)


def _read_experiment(out: Path) -> _SavedExperiment:
    import json

    path = out / "experiment.json"
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} is missing; rebuild it by re-running compare, or use --no-write"
        ) from None
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"{path} is damaged ({type(exc).__name__}); use --no-write, or re-run compare"
        ) from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path} is not a JSON object; use --no-write, or re-run compare")
    return _SavedExperiment(saved)


def cmd_report(args: argparse.Namespace) -> int:
    from ..compare import environment, load_runs
    from ..report import markdown_table, summarize, write_outputs

    runs = load_runs(args.out, args.methods)
    if not runs:
        print(f"no finished runs under {args.out / 'runs'}", file=sys.stderr)
        return 1
    if args.no_write:
        print(markdown_table(summarize(runs, args.target)))
        return 0
    experiment = _read_experiment(args.out)
    device = experiment.get("device")
    summary = write_outputs(args.out, experiment, runs, environment(device), target=args.target)
    print(markdown_table(summary))
    return 0
