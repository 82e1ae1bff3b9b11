"""μTransfer benchmark: does the best Adam learning rate of a width-64 MLP stay best when it is widened?

MLP (``Flatten → [Linear(w) → ReLU] × 2 → Linear(10)``) on a fixed MNIST training subset, trained with
Adam for a fixed number of steps, for every width × log2(LR) × seed, in standard parametrization
(harness method ``adam``) and in μP (``mup-adam``, base width 64); SP and μP runs alternate, so the
background load of the shared machine affects both alike. The score of a run is the final epoch's
mean training loss (the harness's ``train_loss``), averaged over seeds.

Goals (issue 5), checked in a full run:

1. μP: the best LR moves by at most one grid step (a factor 2) across the widths;
2. SP: the best LR moves by at least three grid steps;
3. the widest μP model trained with the LR that was best at the narrowest width has a loss within 2 % of
   the best loss of its own sweep;
4. wider is better at that transferred LR (μP loss decreases with every width step).

Every goal is printed as a MET/MISSED line and written to ``results/benchmarks/mup.goals.json``.

This sweep is the *LR-transfer diagnostic* (does the optimum stay put?), with SP and μP at the same
LR grid and no other hyperparameter. μTransfer as the paper claims it — the proxy tuned over lr,
readout multiplier and init scale, transferred, against SP tuned at the target width with the same
budget, and the cost fraction — is ``advopt mu-study`` (``advanced_optimizers/bench/mup_study/``,
results in ``results/mu-transfer/``, ``docs/algorithms/mup.md``), which also diagnoses goal 4 (wider
is better) against microsoft/mup.

Run: ``python benchmarks/mup.py`` (full: widths 64…1024, LRs 2^-12…2^-5, 2 seeds, 6 epochs of
4096 samples = 192 steps; about 12 minutes on one core), ``--quick`` (2 widths, 3 LRs, 1 epoch) or
``--smoke --no-fail`` (2 widths, 3 LRs, 1 seed, 1 epoch of 256 samples; the plot goes to the goals
directory). In reduced runs the goals are evaluated on the reduced sweep and mean nothing. Exit status
1 when a goal is missed (``--no-fail``: 0).
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import _common
import torch

from advanced_optimizers.bench.atomic import write_text
from advanced_optimizers.bench.data import load_dataset
from advanced_optimizers.bench.mup_study import (
    log2_grid,
    lr_sweep,
    plot_lr_sweep,
    sweep_markdown,
    sweep_summary,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--widths", default="64,128,256,512,1024", help="comma list (default 64..1024)")
    p.add_argument(
        "--log2-lrs", default="-12:-5", help="LO:HI or comma list; write as --log2-lrs=-12:-5"
    )
    p.add_argument("--seeds", type=int, default=2, help="number of seeds (default 2)")
    p.add_argument("--epochs", type=int, default=6, help="epochs over the subset (default 6)")
    p.add_argument("--n-train", type=int, default=4096, help="training subset (default 4096)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--base-width", type=int, default=64)
    p.add_argument("--out", type=Path, default=None, help="also write PNG/Markdown/CSV here")
    p.add_argument("--quick", action="store_true", help="small run: 2 widths, 3 LRs, 1 epoch")
    p.add_argument(
        "--step-vs-mup",
        action="store_true",
        help="instead of the sweep: the training-step cost of our μP against microsoft/mup's "
        "(pip install --no-deps mup) on the MLP 784-512-512-10, interleaved; writes mup_step.goals.json",
    )
    p.add_argument("--reps", type=int, default=25, help="--step-vs-mup: timed blocks per side")
    _common.add_arguments(p)
    args = p.parse_args(argv)
    if args.smoke:
        args.widths, args.log2_lrs, args.seeds, args.epochs, args.n_train = (
            "64,128",
            "-9:-7",
            1,
            1,
            256,
        )
    elif args.quick:
        args.widths, args.log2_lrs, args.seeds, args.epochs, args.n_train = (
            "64,128",
            "-9:-7",
            2,
            1,
            512,
        )
    args.widths = [int(w) for w in args.widths.split(",")]
    try:
        args.log2_lrs = log2_grid(args.log2_lrs)
    except argparse.ArgumentTypeError as exc:
        p.error(str(exc))
    return args


def grid_table(summary: dict, param: str, lrs: list[float]) -> str:
    head = f"{param.upper():>4} width | " + " ".join(f"{lr:>7g}" for lr in lrs) + " | best"
    lines = [head, "-" * len(head)]
    for width, entry in sorted(summary[param].items()):
        cells = " ".join(
            f"{entry['loss'][lr]:7.4f}" if entry["loss"][lr] < 1e9 else f"{'diverged':>7}"
            for lr in lrs
        )
        lines.append(f"{width:>10} | {cells} | {entry['best_log2_lr']:g}")
    return "\n".join(lines)


def _reference_mup() -> Any:
    """microsoft/mup (``pip install --no-deps mup``), not this script, which is also named mup."""
    here = Path(__file__).resolve().parent
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.modules.pop("mup", None)
    try:
        return importlib.import_module("mup")
    finally:
        sys.path[:] = saved


def _step_models(width: int = 512, base: int = 64) -> tuple[Any, ...]:
    """The same MLP (784-w-w-10) in our μP and in microsoft/mup's, with their Adam optimizers."""
    from torch import nn

    mup = _reference_mup()

    from advanced_optimizers.mup import create_mu_transfer_optimizer

    def mlp(w: int, readout: Any) -> nn.Sequential:
        return nn.Sequential(
            nn.Flatten(), nn.Linear(784, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), readout(w, 10)
        )

    torch.manual_seed(0)
    ours = mlp(width, nn.Linear)
    with torch.device("meta"):
        base_shapes = {n: tuple(p.shape) for n, p in mlp(base, nn.Linear).named_parameters()}
    ours_opt = create_mu_transfer_optimizer(
        ours, base_model=base_shapes, base_hyperparams={"lr": 1e-3}, optimizer="adam"
    )
    torch.manual_seed(0)
    theirs = mlp(width, mup.MuReadout)
    mup.set_base_shapes(theirs, mlp(base, mup.MuReadout), delta=mlp(base + 1, mup.MuReadout))
    theirs_opt = mup.MuAdam(theirs.parameters(), lr=1e-3)
    return ours, ours_opt, theirs, theirs_opt


def step_vs_mup(args: argparse.Namespace) -> int:
    """Issue goal: our μP training step costs at most 1.01x microsoft/mup's on the same model."""
    import torch.nn.functional as F

    goals = _common.report_from_args("mup_step", args, script="benchmarks/mup.py")
    try:
        ours, ours_opt, theirs, theirs_opt = _step_models()
    except ImportError:
        goals.add(
            "mlp",
            "μP step ≤ 1.01× microsoft/mup's",
            None,
            None,
            "",
            met=False,
            note="not measured: microsoft/mup is not installed (pip install --no-deps mup)",
        )
        return goals.finish()
    torch.set_num_threads(1)
    data = load_dataset("mnist", progress=False).subset(1280, 10)
    batches = list(data.train_batches(128, 0, 1))

    def block(model: Any, optimizer: Any) -> Any:
        def run() -> None:
            for batch in batches:
                optimizer.zero_grad()
                F.cross_entropy(model(batch.x), batch.y).backward()
                optimizer.step()

        return _common.timed(run)

    timing = _common.paired_timing(
        block(ours, ours_opt), block(theirs, theirs_opt), args.reps, warmup=3
    )
    steps = len(batches)
    print(
        f"μP training step, MLP 784-512-512-10 (base width 64), Adam lr 1e-3, batch 128, one "
        f"thread, {args.reps} interleaved blocks of {steps} steps per side\n"
        f"  ours {1e3 * statistics.median(timing.a) / steps:.3f} ms/step, microsoft/mup "
        f"{1e3 * statistics.median(timing.b) / steps:.3f} ms/step, ratio {timing.ratio.text()}"
    )
    goals.add(
        "mlp",
        f"μP step time vs microsoft/mup: {timing.ratio.ratio:.3f} <= 1.01",
        timing.ratio.ratio,
        1.01,
        "<=",
        ci=[timing.ratio.ci_low, timing.ratio.ci_high],
    )
    return goals.finish()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.step_vs_mup:
        return step_vs_mup(args)
    goals = _common.report_from_args("mup", args)
    if args.smoke and args.out is None:
        args.out = goals.goals_dir
    torch.set_num_threads(1)
    dataset = load_dataset("mnist", progress=False).subset(
        args.n_train, 256 if args.smoke else 1000
    )
    steps = args.epochs * -(-args.n_train // args.batch_size)
    print(
        f"μTransfer benchmark: MLP depth 2 on MNIST ({args.n_train} training samples), Adam, "
        f"batch {args.batch_size}, {args.epochs} epochs = {steps} steps, seeds 0..{args.seeds - 1}, "
        f"widths {args.widths}, log2(LR) grid {args.log2_lrs[0]:g}..{args.log2_lrs[-1]:g} "
        f"(factor 2), μP base width {args.base_width}; loss = final epoch's mean training loss"
    )
    start = time.perf_counter()
    rows = lr_sweep(
        dataset,
        args.widths,
        args.log2_lrs,
        seeds=list(range(args.seeds)),
        epochs=args.epochs,
        batch_size=args.batch_size,
        depth=2,
        base_width=args.base_width,
    )
    elapsed = time.perf_counter() - start
    summary = sweep_summary(rows)
    lrs = args.log2_lrs
    print(f"\n{len(rows)} runs in {elapsed:.0f} s\n")
    print("mean training loss (over seeds) per width and log2(LR):")
    print(grid_table(summary, "sp", lrs))
    print()
    print(grid_table(summary, "mup", lrs))
    print()
    print(sweep_markdown(summary))

    # speed: μP's groups and guards against plain Adam, measured in the same runs (paired by width,
    # LR and seed): geometric mean of the per-pair ratios with its 95% interval (_common.ratio_ci)
    print("\ntraining time per run, μP / SP (paired runs; geometric mean [95% CI]):")
    speed = {}
    for width in args.widths:
        pairs = {}
        for r in rows:
            if r["width"] == width:
                pairs.setdefault((r["log2_lr"], r["seed"]), {})[r["parametrization"]] = r
        mup_s = [p["mup"]["train_seconds"] for p in pairs.values()]
        sp_s = [p["sp"]["train_seconds"] for p in pairs.values()]
        speed[width] = _common.ratio_ci(mup_s, sp_s)
        print(f"  width {width:>5}: {speed[width].text()}")

    widest, narrowest = max(args.widths), min(args.widths)
    report = {}
    for param in ("sp", "mup"):
        best = {w: summary[param][w]["best_log2_lr"] for w in args.widths}
        shift = (max(best.values()) - min(best.values())) / 1.0
        transferred = best[narrowest]
        at_transfer = [summary[param][w]["loss"][transferred] for w in sorted(args.widths)]
        rel = at_transfer[-1] / summary[param][widest]["best_loss"] - 1.0
        monotone = all(b < a for a, b in itertools.pairwise(at_transfer))
        report[param] = (shift, transferred, rel, at_transfer, monotone, best)
        print(
            f"\n{param.upper()}: best log2(LR) per width {best}; moves by {shift:g} grid steps\n"
            f"{param.upper()}: width {widest} at the width-{narrowest} optimum 2^{transferred:g}: "
            f"loss {at_transfer[-1]:.4f} vs its own best {summary[param][widest]['best_loss']:.4f} "
            f"(2^{summary[param][widest]['best_log2_lr']:g}) → {100 * rel:+.1f} %\n"
            f"{param.upper()}: loss at 2^{transferred:g} by width: "
            + ", ".join(
                f"{w}: {v:.4f}" for w, v in zip(sorted(args.widths), at_transfer, strict=True)
            )
        )
    per_seed = {}
    for row in rows:
        if row["parametrization"] == "mup" and row["width"] == widest:
            per_seed.setdefault(row["seed"], {})[row["log2_lr"]] = row["train_loss"]
    for seed, losses in sorted(per_seed.items()):
        best_lr = min(losses, key=losses.get)
        print(f"μP width {widest}, seed {seed}: best log2(LR) {best_lr:g}")

    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        plot_lr_sweep(summary, args.out / "mu_transfer.png")
        write_text(args.out / "mu_transfer.md", sweep_markdown(summary) + "\n")
        print(f"written: {args.out / 'mu_transfer.png'}, {args.out / 'mu_transfer.md'}")

    mup_shift, _, mup_rel, at_transfer, mup_monotone, mup_best = report["mup"]
    sp_shift, sp_best = report["sp"][0], report["sp"][5]
    workload = (
        f"MNIST MLP depth 2, {args.n_train} samples, Adam, batch {args.batch_size}, {steps} steps, "
        f"{args.seeds} seeds, widths {args.widths}, log2(LR) {lrs[0]:g}..{lrs[-1]:g}, "
        f"μP base width {args.base_width}"
    )
    goals.add(
        workload,
        "μP optimum moves by <= 1 grid step across widths",
        mup_shift,
        1,
        "<=",
        best_log2_lr=mup_best,
    )
    goals.add(
        workload,
        "SP optimum moves by >= 3 grid steps across widths",
        sp_shift,
        3,
        ">=",
        best_log2_lr=sp_best,
    )
    goals.add(
        workload,
        f"transferred LR within 2 % of width-{widest}'s own optimum (μP)",
        mup_rel,
        0.02,
        "<=",
    )
    goals.add(
        workload,
        "wider is better at the transferred LR (μP)",
        None,
        None,
        "custom",
        met=mup_monotone,
        rule="μP loss at the transferred LR decreases with every width step",
        loss_by_width=dict(zip(sorted(args.widths), at_transfer, strict=True)),
    )
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())
