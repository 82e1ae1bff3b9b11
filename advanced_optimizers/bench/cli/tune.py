"""``advopt tune``: the same tuning budget for every method, on the validation split."""

from __future__ import annotations

import argparse
from pathlib import Path

from .args import (
    _add_workload,
    _nonnegative_int,
    _positive_int,
    _preset_text,
    _real,
    _setup_device,
    _workload,
)


def _add_tune(sub: argparse._SubParsersAction) -> None:
    from ..compare import PRESETS

    p = sub.add_parser(
        "tune",
        help="tune every method's learning rate (and one option) with the same budget (Optuna)",
        description=(
            "Give every method the same budget of --trials training runs over its learning rate\n"
            "(log-uniform in [default/F, default*F], F = --lr-factor) and at most one option of its\n"
            "own, scored by the final-epoch validation accuracy; the test set is never loaded.\n"
            "One Optuna study per (workload, method) in one database (--storage; SQLite by\n"
            "default): re-running resumes, and several workers (`advopt tune ... &` twice, or on\n"
            "other machines sharing a database server) share the budget exactly. Writes\n"
            "tuning.json (protocol, budget, spaces, sampler, every trial, best settings) and\n"
            "plots/lr_sensitivity.png into --out; then run the final runs with\n"
            "`advopt compare --tuned OUT/tuning.json --preset ...`.\n\n"
            f"presets (workload defaults):\n{_preset_text(PRESETS)}"
        ),
        epilog=(
            "examples:\n"
            "  advopt tune --methods adam,sgd --trials 20 --preset full --out results/tune-mlp\n"
            "  advopt tune --methods fer-adam --space fer-adam:consistency_threshold=0.0,0.5,0.9\n"
            "  advopt tune --trials 20 --out results/tune & advopt tune --trials 20 --out results/tune\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_workload(p, "--arch, --depth, --epochs, --n-train, --validation, --schedule")
    p.add_argument(
        "--trials",
        type=_positive_int,
        required=True,
        help="the budget: finished trials per method (the same for every method)",
    )
    p.add_argument("--sampler", choices=("tpe", "grid"), default="tpe", help="default: tpe")
    p.add_argument("--seed", type=_nonnegative_int, default=0, help="sampler seed (default: 0)")
    p.add_argument("--pruner", choices=("median", "none"), default="median", help="default: median")
    p.add_argument(
        "--lr-factor",
        type=_real,
        default=10.0,
        help="learning rates are searched in [default/F, default*F] (default: 10)",
    )
    p.add_argument(
        "--space",
        action="append",
        default=[],
        metavar="METHOD:NAME=V1,V2",
        help="tune this categorical option of METHOD instead of its declared one "
        "(METHOD:none: the learning rate only); repeatable",
    )
    p.add_argument(
        "--study",
        default=None,
        help="workload name; the studies are <study>:<method> (default: <dataset>-<arch>)",
    )
    p.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL shared by the workers (default: sqlite:///<out>/tune.db)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory for tuning.json and plots (default: results/tune-<study>)",
    )
    p.set_defaults(func=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise ValueError(
            "advopt tune needs Optuna, which comes with the bench extra: "
            "pip install 'advanced_optimizers[bench]' (or pip install optuna)"
        ) from None
    from ..tune import TuneConfig, parse_space, run_tuning, tuning_table

    device = _setup_device(args)
    workload = _workload(args)
    spaces = dict(parse_space(text) for text in args.space)
    config = TuneConfig(
        **workload,
        trials=args.trials,
        sampler=args.sampler,
        seed=args.seed,
        pruner=args.pruner,
        lr_factor=args.lr_factor,
        study=args.study,
        spaces=spaces,
        device=device.type,
    )
    out = args.out or Path("results") / f"tune-{config.study}"
    report = None if not args.no_progress else (lambda line: None)
    record = run_tuning(
        config,
        out,
        storage=args.storage,
        data_dir=args.data_dir,
        check_sums=not args.trust_local_data,
        report=report,
    )
    print(tuning_table(record))
    print(f"tuning:  {out / 'tuning.json'}\nplot:    {out / 'plots' / 'lr_sensitivity.png'}")
    print(f"storage: {record['storage']}")
    print(f"final runs: advopt compare --tuned {out / 'tuning.json'} --preset {args.preset} ...")
    return 0
