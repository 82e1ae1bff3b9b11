"""The ``advopt`` commands of the μP studies: ``mu-transfer`` (LR sweep), ``coord-check`` and
``mu-study`` (μTransfer against SP tuned at the target width, and wider-is-better against
microsoft/mup)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..data import Dataset
from .sweep import (
    coord_check,
    lr_sweep,
    plot_coord_check,
    plot_lr_sweep,
    sweep_markdown,
    sweep_summary,
)


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", ",").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of ints, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive ints, got {text!r}")
    return values


def log2_grid(text: str) -> list[float]:
    """``"-14:-6"`` → -14, -13, …, -6 (factor-2 steps); ``"-12,-10,-8"`` → those (not none)."""
    try:
        if ":" in text:
            lo, hi = (int(v) for v in text.split(":"))
            if hi < lo:
                raise ValueError
            return [float(v) for v in range(lo, hi + 1)]
        values = [float(v) for v in text.split(",") if v]
        if not values:
            raise ValueError
        return values
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected LO:HI (ints, LO <= HI) or a comma list of log2 LRs, got {text!r}"
        ) from None


def _seed_list(text: str) -> list[int]:
    values = _ints(text) if "," in text else list(range(_ints(text)[0]))
    return values


def _load(args: argparse.Namespace) -> Dataset:
    from ..data import load_dataset

    ds = load_dataset(args.dataset, data_dir=args.data_dir)
    return ds.subset(args.n_train, args.n_test)


def _write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def cmd_mu_transfer(args: argparse.Namespace) -> int:
    dataset = _load(args)
    out = Path(args.out)
    n_runs = len(args.widths) * len(args.log2_lrs) * len(args.seeds) * 2

    def progress(row: dict[str, Any]) -> None:
        progress.done += 1  # type: ignore[attr-defined]
        if not args.quiet:
            print(
                f"[{progress.done}/{n_runs}] {row['parametrization']:>3} width={row['width']:<5} "  # type: ignore[attr-defined]
                f"log2_lr={row['log2_lr']:<6g} seed={row['seed']} loss={row['train_loss']:.4f}",
                flush=True,
            )

    progress.done = 0  # type: ignore[attr-defined]
    rows = lr_sweep(
        dataset,
        args.widths,
        args.log2_lrs,
        seeds=args.seeds,
        epochs=args.epochs,
        batch_size=args.batch_size,
        depth=args.depth,
        arch=args.arch,
        base_width=args.base_width,
        on_run=progress,
    )
    summary = sweep_summary(rows)
    table = sweep_markdown(summary)
    _write_csv(rows, out / "mu_transfer.csv")
    (out / "mu_transfer.md").write_text(
        f"LR sweep: {args.arch}, depth {args.depth}, {dataset.n_train} training samples, "
        f"{args.epochs} epochs, batch {args.batch_size}, seeds {args.seeds}, "
        f"μP base width {args.base_width}; loss = final epoch's mean training loss "
        "(mean over seeds)\n\n" + table + "\n"
    )
    plot_lr_sweep(summary, out / "mu_transfer.png")
    print(table)
    print(
        f"written: {out / 'mu_transfer.png'}, {out / 'mu_transfer.md'}, {out / 'mu_transfer.csv'}"
    )
    return 0


def cmd_coord_check(args: argparse.Namespace) -> int:
    dataset = _load(args)
    x, y = dataset.x_train[: args.batch_size], dataset.y_train[: args.batch_size]
    rows = []
    for param in ("sp", "mup"):
        rows += coord_check(
            args.widths,
            x,
            y,
            parametrization=param,
            lr=args.lr,
            steps=args.steps,
            optimizer=args.optimizer,
            base_width=args.base_width,
            depth=args.depth,
            arch=args.arch,
            num_classes=dataset.num_classes,
            seeds=args.seeds,
        )
    out = Path(args.out)
    _write_csv(rows, out / "coord_check.csv")
    plot_coord_check(rows, out / "coord_check.png")
    last = args.steps
    widths = args.widths
    print(f"mean |activation| after {last} steps; columns: widths {widths}")
    for param in ("sp", "mup"):
        for layer in sorted({r["layer"] for r in rows}, key=lambda s: int(s.split(":")[0])):
            vals = []
            for w in widths:
                sel = [
                    r["l1"]
                    for r in rows
                    if r["parametrization"] == param
                    and r["layer"] == layer
                    and r["width"] == w
                    and r["step"] == last
                ]
                vals.append(sum(sel) / len(sel))
            print(f"{param:>3} {layer:<12} " + " ".join(f"{v:10.4g}" for v in vals))
    print(f"written: {out / 'coord_check.png'}, {out / 'coord_check.csv'}")
    return 0


def _pow2_range(text: str) -> tuple[float, float]:
    """``"-4:4"`` → (2^-4, 2^4)."""
    try:
        lo, hi = (float(v) for v in text.split(":"))
        if not hi > lo:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected LO:HI in log2 with LO < HI, got {text!r}"
        ) from None
    return 2.0**lo, 2.0**hi


def cmd_mu_study(args: argparse.Namespace) -> int:
    import torch

    from .routes import StudyConfig
    from .study import run_study

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    config = StudyConfig(
        dataset=args.dataset,
        n_train=args.n_train,
        validation=args.validation,
        n_test=args.n_test,
        depth=args.depth,
        epochs=args.epochs,
        batch_size=args.batch_size,
        proxy_width=args.proxy_width,
        target_width=args.target_width,
        trials=args.trials,
        lr=args.log2_lr,
        readout_multiplier=args.log2_readout_multiplier,
        init_scale=args.log2_init_scale,
        sampler_seed=args.sampler_seed,
        seeds=tuple(args.seeds),
        widths=tuple(args.widths),
        width_seeds=tuple(args.width_seeds),
        long_epochs=args.long_epochs,
        oracle=not args.no_oracle,
    )
    report = run_study(
        config,
        args.out,
        data_dir=args.data_dir,
        stages=args.stages,
        say=(lambda line: None) if args.quiet else (lambda line: print(line, flush=True)),
    )
    print((Path(args.out) / "study.md").read_text())
    written = [n for n in ("study.json", "study.md", "tuning.png", "widths.png")
               if (Path(args.out) / n).exists()]  # fmt: skip
    print(f"written in {args.out}: {', '.join(written)}")
    return 0 if report is not None else 1


def _common(p: argparse.ArgumentParser, widths: str) -> None:
    from ..data import DATASETS
    from ..models import ARCHITECTURES

    p.add_argument(
        "--widths",
        type=_ints,
        default=_ints(widths),
        help=f"comma list of widths (default {widths})",
    )
    p.add_argument("--base-width", type=int, default=64, help="μP base width (default 64)")
    p.add_argument("--arch", choices=ARCHITECTURES, default="mlp", help="model (default mlp)")
    p.add_argument("--depth", type=int, default=2, help="hidden layers / conv blocks (default 2)")
    p.add_argument("--dataset", choices=DATASETS, default="mnist", help="default: mnist (bundled)")
    p.add_argument("--data-dir", default=None, help="see compare --data-dir")
    p.add_argument("--n-test", type=int, default=1000, help="test samples (default 1000)")


def register_cli(sub: argparse._SubParsersAction) -> None:
    """Add ``mu-transfer``, ``coord-check`` and ``mu-study`` to the ``advopt`` subcommands."""
    p = sub.add_parser(
        "mu-transfer",
        help="μP LR sweep: training loss vs log2(LR) for several widths, SP and μP",
        description=(
            "Train the harness model at every width x log2(LR) x seed with Adam in standard\n"
            "parametrization (method adam) and in μP (method mup-adam, relative to --base-width),\n"
            "alternating the two run by run. Writes mu_transfer.png (loss vs log2 LR, one line per\n"
            "width, SP | μP), mu_transfer.md (best LR per width) and mu_transfer.csv (every run)\n"
            "into --out. Loss = the final epoch's mean training loss, averaged over seeds.\n"
            "A diagnostic of LR transfer; the tuned comparison with SP is advopt mu-study."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(p, "64,128,256,512,1024")
    p.add_argument(
        "--log2-lrs",
        type=log2_grid,
        default=log2_grid("-14:-5"),
        help="LR grid as LO:HI in log2 (factor-2 steps) or a comma list; "
        "write it with '=', e.g. --log2-lrs=-14:-5 (the default)",
    )
    p.add_argument(
        "--seeds", type=_seed_list, default=[0, 1], help="count N or comma list (default 2)"
    )
    p.add_argument("--epochs", type=int, default=4, help="epochs per run (default 4)")
    p.add_argument("--batch-size", type=int, default=128, help="default 128")
    p.add_argument("--n-train", type=int, default=4096, help="training subset size (default 4096)")
    p.add_argument("--out", default="results/mu-transfer-sweep", help="output directory")
    p.add_argument("--quiet", action="store_true", help="no per-run progress lines")
    p.set_defaults(func=cmd_mu_transfer)

    p = sub.add_parser(
        "coord-check",
        help="μP coordinate check: mean |activation| per layer vs width, SP and μP",
        description=(
            "Train the harness model for --steps steps on one fixed batch at each width, in SP and\n"
            "μP, and record every layer's mean |output| on that batch. Under μP the curves are flat\n"
            "in width; under SP they grow. Writes coord_check.png and coord_check.csv into --out\n"
            "and prints the numbers."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(p, "64,128,256,512,1024,2048")
    p.add_argument("--lr", type=float, default=1e-2, help="learning rate (default 0.01: large)")
    p.add_argument("--steps", type=int, default=4, help="training steps (default 4)")
    p.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), default="adam")
    p.add_argument("--seeds", type=_seed_list, default=[0, 1, 2], help="count N or comma list")
    p.add_argument(
        "--batch-size", type=int, default=64, help="size of the fixed batch (default 64)"
    )
    p.add_argument("--n-train", type=int, default=1000, help="training subset size (default 1000)")
    p.add_argument("--out", default="results/coord-check", help="output directory")
    p.set_defaults(func=cmd_coord_check)
    _add_mu_study(sub)


def _add_mu_study(sub: argparse._SubParsersAction) -> None:
    from ..data import DATASETS
    from .study import STAGES

    p = sub.add_parser(
        "mu-study",
        help="μTransfer study: μP tuned at a proxy and transferred vs SP tuned at the target; "
        "wider-is-better against microsoft/mup",
        description=(
            "Route mup: tune lr, readout multiplier and init scale of μP at --proxy-width\n"
            "(--trials trials, seeded TPE, final validation accuracy), transfer the best to\n"
            "--target-width. Route sp: tune the same space in SP at --target-width with the same\n"
            "budget. Then each route's best over --seeds at the target width (test set read once\n"
            "per run), the tuning compute of each route and their ratio; the μP setting at every\n"
            "--widths in our μP and in microsoft/mup for --long-epochs (the --epochs numbers are\n"
            "read at that epoch); a step-by-step trajectory comparison with microsoft/mup.\n"
            "Resumable: every stage reuses what --out holds (Optuna SQLite, one JSON per run)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--stages", type=lambda t: [s for s in t.split(",") if s],
                   default=list(STAGES), help=f"comma list of {','.join(STAGES)} (default all)")  # fmt: skip
    p.add_argument("--dataset", choices=DATASETS, default="mnist")
    p.add_argument("--data-dir", default=None, help="see compare --data-dir")
    p.add_argument("--n-train", type=int, default=10_000, help="training subset (default 10000)")
    p.add_argument("--validation", type=int, default=10_000,
                   help="validation split carved off the training set's end (default 10000)")  # fmt: skip
    p.add_argument("--n-test", type=int, default=None, help="test samples (default: all)")
    p.add_argument("--depth", type=int, default=2, help="hidden layers (default 2)")
    p.add_argument("--epochs", type=int, default=5, help="epochs per run (default 5)")
    p.add_argument("--long-epochs", type=int, default=15,
                   help="epochs of the width sweep's runs (default 15 = 3 x 5)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--proxy-width", type=int, default=64, help="μP proxy = base width (64)")
    p.add_argument("--target-width", type=int, default=2048, help="target width (default 2048)")
    p.add_argument("--trials", type=int, default=12, help="trials per route (default 12)")
    p.add_argument("--log2-lr", type=_pow2_range, default=_pow2_range("-14:-4"),
                   help="lr range in log2, LO:HI (default -14:-4); write with '='")  # fmt: skip
    p.add_argument("--log2-readout-multiplier", type=_pow2_range, default=_pow2_range("-4:4"),
                   help="readout multiplier range in log2 (default -4:4)")  # fmt: skip
    p.add_argument("--log2-init-scale", type=_pow2_range, default=_pow2_range("-2:2"),
                   help="init scale range in log2 (default -2:2)")  # fmt: skip
    p.add_argument("--sampler-seed", type=int, default=0)
    p.add_argument("--seeds", type=_seed_list, default=[0, 1, 2, 3, 4],
                   help="final runs' seeds: count N or comma list (default 5)")  # fmt: skip
    p.add_argument("--widths", type=_ints, default=_ints("64,128,256,512,1024,2048"))
    p.add_argument("--width-seeds", type=_seed_list, default=[0, 1, 2],
                   help="seeds of the width sweep (default 3)")  # fmt: skip
    p.add_argument("--no-oracle", action="store_true", help="width sweep without microsoft/mup")
    p.add_argument("--threads", type=int, default=None, help="torch threads (e.g. 1)")
    p.add_argument("--out", default="results/mu-transfer", help="output directory")
    p.add_argument("--quiet", action="store_true", help="no per-run progress lines")
    p.set_defaults(func=cmd_mu_study)
