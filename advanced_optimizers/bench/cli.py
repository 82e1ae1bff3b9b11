"""``advopt``: the command-line front end of the harness.

Subcommands: ``compare`` (train methods over seeds, write results, plots and the statistics table),
``tune`` (the same tuning budget for every method, on the validation split: :mod:`.tune`),
``report`` (rebuild table and plots from a results directory), ``profile`` (performance profile of
time-to-target across result directories: :mod:`.profiles`), ``methods`` (list what can be
compared), ``data`` (find or download a dataset and describe it), and the μP study commands
(``mu-transfer``, ``coord-check``) of :mod:`.mup_study`.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]

EPILOG = """examples:
  advopt compare                                   # every method, bundled MNIST, MLP, quick preset
  advopt tune --preset full --trials 20 --out results/tune-mlp     # equal tuning budget per method
  advopt compare --preset full --tuned results/tune-mlp/tuning.json  # 5 seeds at the tuned settings
  advopt compare --preset full --methods sgd,adam  # 5 seeds x 10 epochs, 784-512-512-10, 10k val
  advopt compare --arch cnn --methods adam,fer-adam --epochs 5 --seeds 3
  advopt compare --opt fer-adam:fer_weight=0.2 --methods adam,fer-adam
  advopt report --out results/mnist-mlp-quick      # rebuild summary.md and plots from runs/
  advopt compare --preset full --arch cnn --width 16 --n-train 20000   # the CNN study
  advopt profile results/mnist-mlp-full results/mnist-cnn-full   # time-to-target profile
"""


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.replace(" ", ",").split(",") if part.strip()]


def _seeds(text: str) -> list[int]:
    """``"5"`` → seeds 0..4; ``"0,3,7"`` → those seeds."""
    parts = _csv(text)
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds takes a count or a comma list of ints, got {text!r}"
        ) from None
    if len(values) == 1 and "," not in text:
        if values[0] < 1:
            raise argparse.ArgumentTypeError(f"--seeds count must be >= 1, got {values[0]}")
        return list(range(values[0]))
    return values


def _option(text: str) -> tuple[str, str, Any]:
    """``METHOD:KEY=VALUE`` → (method, key, value); VALUE is a Python literal or a plain string."""
    try:
        method, assignment = text.split(":", 1)
        key, raw = assignment.split("=", 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--opt takes METHOD:KEY=VALUE, got {text!r}") from None
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return method.strip(), key.strip(), value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {text}")
    return value


def _real(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _learning_rate(text: str) -> float:
    value = _real(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _momentum(text: str) -> float:
    value = _real(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(
            f"must be in [0, 1) (0 = no momentum, 0.9 = the usual), got {text}"
        )
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an int >= 0, got {text}")
    return value


def _nonnegative(text: str) -> float:
    value = _real(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _device(text: str) -> str:
    """``--device``: one of auto/cpu/cuda/mps that this machine has (checked at parse time)."""
    from .device import DEVICES, available_devices

    if text not in DEVICES:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(DEVICES)}, got {text!r}")
    available = available_devices()
    if text not in available:
        raise argparse.ArgumentTypeError(
            f"{text} is not available on this machine; available: {', '.join(available)}"
        )
    return text


_TRUST_HELP = (
    "read local dataset files without checking their SHA-256 sums (your own copies, e.g. a "
    "cifar-10-batches-py unpacked by hand); CIFAR-10 batches are still read with a restricted "
    "unpickler that cannot run code"
)


def _preset_text(presets: dict[str, dict[str, Any]]) -> str:
    unset = {"n_train": "all", "n_test": "all", "validation": "dataset default", "depth": "default"}
    lines = []
    for name, preset in presets.items():
        parts = [f"{k}={unset.get(k, v) if v is None else v}" for k, v in preset.items()]
        lines.append(f"  {name:<6} " + ", ".join(parts))
    return "\n".join(lines)


def _add_workload(p: argparse.ArgumentParser, what: str) -> None:
    """The flags that define a workload (data, model, optimisation), shared by compare and tune."""
    from .compare import PRESETS
    from .data import DATASETS
    from .models import ARCHITECTURES
    from .train import SCHEDULES

    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        default="quick",
        help=f"defaults for {what} (default: quick; see the list above)",
    )
    p.add_argument(
        "--methods",
        type=_csv,
        default=None,
        help="comma-separated method names (default: all registered methods)",
    )
    p.add_argument("--dataset", choices=DATASETS, default="mnist", help="default: mnist (bundled)")
    p.add_argument(
        "--arch", choices=ARCHITECTURES, default=None, help="model (default: the preset's)"
    )
    p.add_argument(
        "--width",
        type=_positive_int,
        default=None,
        help="hidden width (mlp, default 512) or first conv channels (cnn, default 16)",
    )
    p.add_argument(
        "--depth",
        type=int,
        default=None,
        help="hidden layers (mlp: default 1, full preset 2) or conv blocks (cnn: default 2); "
        "the CNN study: --preset full --arch cnn",
    )
    p.add_argument("--epochs", type=_positive_int, default=None, help="epochs per run")
    p.add_argument("--batch-size", type=_positive_int, default=128, help="default: 128")
    p.add_argument(
        "--momentum", type=_momentum, default=0.9, help="for SGD-based methods, in [0, 1) (0.9)"
    )
    p.add_argument("--weight-decay", type=_nonnegative, default=0.0, help=">= 0 (default: 0)")
    p.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default=None,
        help="learning-rate schedule: constant, or cosine annealing to 0 per step "
        "(default: the preset's — quick: constant, full: cosine)",
    )
    p.add_argument(
        "--validation",
        type=_nonnegative_int,
        default=None,
        metavar="N",
        help="validation split: the last N training images (default: the preset's — quick 2000, "
        "full the dataset's default: 10000 for MNIST/Fashion-MNIST, 5000 for CIFAR-10); every "
        "selection is made on it. 0 = no validation split (smoke tests and legacy comparisons "
        "only: then the test set is evaluated every epoch and the report says so)",
    )
    p.add_argument(
        "--n-train",
        type=_positive_int,
        default=None,
        help="use the first N training samples left after the validation split (default: preset)",
    )
    p.add_argument(
        "--opt",
        type=_option,
        action="append",
        default=[],
        metavar="METHOD:KEY=VALUE",
        help="a method option, e.g. fer-adam:fer_weight=0.2 (repeatable)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="directory with the dataset files (default: $ADVOPT_DATA_DIR, ./data, "
        "~/.cache/advanced_optimizers, bundled MNIST, then download)",
    )
    p.add_argument(
        "--device",
        type=_device,
        default="auto",
        help="where to train: auto (cuda if available, else cpu), cpu, cuda or mps (default: auto)",
    )
    p.add_argument("--trust-local-data", action="store_true", help=_TRUST_HELP)
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="torch intra-op threads (default: torch's choice); 1 keeps timings steady "
        "while other work shares the machine",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _workload(args: argparse.Namespace) -> dict[str, Any]:
    """The workload settings of ``args`` with the preset's defaults filled in."""
    from .compare import PRESETS

    preset = PRESETS[args.preset]
    options: dict[str, dict[str, Any]] = {}
    for method, key, value in args.opt:
        options.setdefault(method, {})[key] = value
    return {
        "methods": args.methods or [],
        "dataset": args.dataset,
        "arch": args.arch or preset["arch"],
        "width": args.width,
        "depth": args.depth if args.depth is not None else preset["depth"],
        "epochs": args.epochs or preset["epochs"],
        "batch_size": args.batch_size,
        "momentum": args.momentum,
        "weight_decay": args.weight_decay,
        "n_train": args.n_train or preset["n_train"],
        "validation": args.validation if args.validation is not None else preset["validation"],
        "schedule": args.schedule or preset["schedule"],
        "method_options": options,
    }


def _setup_device(args: argparse.Namespace) -> Any:
    from .device import resolve_device
    from .distributed import init_from_env

    device = resolve_device(args.device)
    init_from_env(device)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    return device


def _add_compare(sub: argparse._SubParsersAction) -> None:
    from .compare import PRESETS
    from .methods import method_summaries

    listing = "\n".join(f"  {name:<14} {text}" for name, text in method_summaries().items())
    p = sub.add_parser(
        "compare",
        help="train methods over seeds; write results, plots and a statistics table",
        description=(
            "Train every chosen method under every seed on one dataset and model, then write\n"
            "results.json, results.csv, summary.md (failures counted; bootstrap CIs; paired tests\n"
            "against the sgd/adam baselines and the peers) and plots/*.png into --out. Every run is\n"
            "measured on the validation split each epoch and on the test set once, after its last\n"
            "epoch. With --tuned, each method runs at its best setting from advopt tune.\n"
            "Re-running into the same --out resumes: finished runs are kept (a failed run too,\n"
            "unless --retry-failed), an interrupted run continues from its last epoch.\n\n"
            f"methods:\n{listing}\n\npresets:\n{_preset_text(PRESETS)}"
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_workload(
        p, "--arch, --depth, --epochs, --seeds, --n-train, --n-test, --validation, --schedule"
    )
    p.add_argument(
        "--seeds",
        type=_seeds,
        default=None,
        help="a count N (seeds 0..N-1) or a comma list of seeds",
    )
    p.add_argument(
        "--lr",
        type=_learning_rate,
        default=None,
        help="learning rate (> 0) for every method (default: each method's own default, or "
        "its tuned one with --tuned)",
    )
    p.add_argument(
        "--tuned",
        type=Path,
        default=None,
        metavar="TUNING_JSON",
        help="run every method at its best learning rate and option from this tuning.json of "
        "advopt tune (default --methods: the tuned ones); recorded in experiment.json",
    )
    p.add_argument(
        "--n-test",
        type=_positive_int,
        default=None,
        help="use the first N test samples (default: preset)",
    )
    p.add_argument(
        "--target",
        type=float,
        default=None,
        help="target validation accuracy for time-to-target (default: the best baseline's median "
        "final validation accuracy)",
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="train again the runs recorded as failed (by default a failed run's file is final)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default: results/<dataset>-<arch>-<preset>); one compare "
        "at a time may write into it, and it only ever resumes the same experiment",
    )
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import PRESETS, Experiment, apply_tuning, run_experiment
    from .distributed import is_main
    from .report import markdown_table, summarize

    device = _setup_device(args)
    preset = PRESETS[args.preset]
    workload = _workload(args)
    if args.tuned is not None and not workload["methods"]:
        from .tune import read_tuning

        try:
            workload["methods"] = list(read_tuning(args.tuned)["methods"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"--tuned {args.tuned} cannot be read ({exc})") from None
    experiment = Experiment(
        **workload,
        seeds=args.seeds or preset["seeds"],
        lr=args.lr,
        n_test=args.n_test or preset["n_test"],
        device=device.type,
    )
    if args.tuned is not None:
        experiment = apply_tuning(experiment, args.tuned)
    out = args.out or Path("results") / f"{args.dataset}-{experiment.arch}-{args.preset}"
    runs = run_experiment(
        experiment,
        out,
        data_dir=args.data_dir,
        progress=not args.no_progress,
        check_sums=not args.trust_local_data,
        retry_failed=args.retry_failed,
    )
    if not is_main():
        return 0
    if args.target is not None:
        from .compare import environment
        from .report import write_outputs

        write_outputs(out, experiment, runs, environment(device), target=args.target)
    print(markdown_table(summarize(runs, args.target)))
    print(
        f"results: {out / 'results.json'}\n         {out / 'results.csv'}\n"
        f"table:   {out / 'summary.md'}\nplots:   {out / 'plots'}"
    )
    return 0


def _add_tune(sub: argparse._SubParsersAction) -> None:
    from .compare import PRESETS

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
    from .tune import TuneConfig, parse_space, run_tuning, tuning_table

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
    from .atomic import write_json, write_text
    from .plots import plot_profile
    from .profiles import performance_profile, profile_table

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
    from .compare import environment, load_runs
    from .report import markdown_table, summarize, write_outputs

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


def _add_methods(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "methods",
        help="list the registered methods",
        description="List every method compare can train, with a one-line summary.",
    )
    p.set_defaults(func=cmd_methods)


def cmd_methods(args: argparse.Namespace) -> int:
    from .methods import get_method, method_summaries

    summaries = method_summaries()
    width = max(map(len, summaries))
    for name, summary in summaries.items():
        print(f"{name:<{width}}  lr={get_method(name).default_lr:<8g} {summary}")
    return 0


def _add_data(sub: argparse._SubParsersAction) -> None:
    from .data import DATASETS

    p = sub.add_parser(
        "data",
        help="find (or download) a dataset and describe it",
        description="Locate a dataset as compare would (downloading it if allowed) "
        "and print its sizes.",
    )
    p.add_argument("--dataset", choices=DATASETS, default="mnist")
    p.add_argument("--data-dir", default=None, help="see compare --data-dir")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading")
    p.add_argument("--trust-local-data", action="store_true", help=_TRUST_HELP)
    p.set_defaults(func=cmd_data)


def cmd_data(args: argparse.Namespace) -> int:
    from .data import load_dataset

    ds = load_dataset(
        args.dataset,
        data_dir=args.data_dir,
        download_ok=not args.no_download,
        check_sums=not args.trust_local_data,
    )
    print(
        f"{ds.name}: train {tuple(ds.x_train.shape)}, test {tuple(ds.x_test.shape)}, "
        f"{ds.num_classes} classes"
    )
    return 0


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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
