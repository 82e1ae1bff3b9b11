"""``advopt``: the command-line front end of the harness.

Subcommands: ``compare`` (train methods over seeds, write results, plots and the statistics table),
``tune`` (the same tuning budget for every method, on the validation split: :mod:`..tune`),
``report`` (rebuild table and plots from a results directory), ``profile`` (performance profile of
time-to-target across result directories: :mod:`..profiles`), ``methods`` (list what can be
compared), ``data`` (find or download a dataset and describe it), and the μP study commands
(``mu-transfer``, ``coord-check``) of :mod:`..mup_study`.

The subcommands' parsers and handlers live in :mod:`.compare`, :mod:`.tune`, :mod:`.results`
(``report``, ``profile``) and :mod:`.catalog` (``methods``, ``data``), the argument types and the
shared workload flags in :mod:`.args`; all are re-exported here. ``python -m
advanced_optimizers.bench.cli`` runs :func:`main` (:mod:`.__main__`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from .args import _TRUST_HELP as _TRUST_HELP
from .args import EPILOG
from .args import _add_workload as _add_workload
from .args import _csv as _csv
from .args import _device as _device
from .args import _learning_rate as _learning_rate
from .args import _momentum as _momentum
from .args import _nonnegative as _nonnegative
from .args import _nonnegative_int as _nonnegative_int
from .args import _option as _option
from .args import _positive_int as _positive_int
from .args import _preset_text as _preset_text
from .args import _real as _real
from .args import _seeds as _seeds
from .args import _setup_device as _setup_device
from .args import _workload as _workload
from .catalog import _add_data, _add_methods
from .catalog import cmd_data as cmd_data
from .catalog import cmd_methods as cmd_methods
from .compare import _add_compare
from .compare import cmd_compare as cmd_compare
from .results import _add_profile, _add_report
from .results import _read_experiment as _read_experiment
from .results import _SavedExperiment as _SavedExperiment
from .results import cmd_profile as cmd_profile
from .results import cmd_report as cmd_report
from .tune import _add_tune
from .tune import cmd_tune as cmd_tune

__all__ = ["build_parser", "main"]
# The names imported above as ``name as name`` are re-exported: they were this module's when it was
# a single file.


_EXTENSIONS = ("advanced_optimizers.bench.mup_study",)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="advopt",
        description="Train and compare advanced optimizers (FER, Gradient Correction, SigProp, "
        "LoCal+SGD, muP) against SGD and Adam, over several seeds.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_compare, _add_tune, _add_report, _add_profile, _add_methods, _add_data):
        add(sub)
    for name in _EXTENSIONS:
        importlib.import_module(name).register_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe (advopt methods | head -1) shows up here, not at exit
        return code
    except BrokenPipeError:
        # The reader went away: stop quietly. Point stdout at devnull so that the interpreter's
        # final flush does not raise again (the recipe of the Python docs, "Note on SIGPIPE").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"advopt {args.command}: error: {exc}", file=sys.stderr)
        return 2
