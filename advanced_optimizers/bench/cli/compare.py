"""``advopt compare``: train methods over seeds; write results, plots and a statistics table."""

from __future__ import annotations

import argparse
from pathlib import Path

from .args import (
    EPILOG,
    _add_workload,
    _learning_rate,
    _positive_int,
    _preset_text,
    _seeds,
    _setup_device,
    _workload,
)


def _add_compare(sub: argparse._SubParsersAction) -> None:
    from ..compare import PRESETS
    from ..methods import method_summaries

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
    from ..compare import PRESETS, Experiment, apply_tuning, run_experiment
    from ..distributed import is_main
    from ..report import markdown_table, summarize

    device = _setup_device(args)
    preset = PRESETS[args.preset]
    workload = _workload(args)
    if args.tuned is not None and not workload["methods"]:
        from ..tune import read_tuning

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
        from ..compare import environment
        from ..report import write_outputs

        write_outputs(out, experiment, runs, environment(device), target=args.target)
    print(markdown_table(summarize(runs, args.target)))
    print(
        f"results: {out / 'results.json'}\n         {out / 'results.csv'}\n"
        f"table:   {out / 'summary.md'}\nplots:   {out / 'plots'}"
    )
    return 0
