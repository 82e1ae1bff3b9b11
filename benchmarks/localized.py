"""LoCal+SGD vs. plain SGD and vs. the "localized layers frozen" ablation, on the MNIST CNN and MLP.

All runs go through the harness (``train_run``): same model, initial weights, data order, lr
(0.05, momentum 0.9, constant) and epochs per seed. The methods are interleaved epoch by epoch (each
run pauses after every epoch and resumes exactly from the harness checkpoint; the order rotates), so
background load on the shared machine hits all methods alike (``_common.interleave``). Times are the
harness's training seconds (evaluation and checkpointing excluded). Ratios are per seed (LoCal / SGD
of the same seed), summarised by their geometric mean with a 95% t-interval of the log-ratios
(``_common.ratio_ci``).

* ``localized-sgd``: the default dynamic selection with ``settle_ratio`` and ``hebbian_subsample`` as
  printed; CNN: ``max_transition=4`` (the four convs may go localized, both Linear layers stay SGD).
* ``local-k4``: the same with ``hebbian_interval=4`` (the rule runs on every 4th step only).
* ``frozen``: the same method with ``hebbian_lr=0`` (localized layers frozen, same selection rule).
* Peak memory: the training memory that differs between the methods, measured on one batch at each
  epoch's T: bytes of tensors autograd saved for backward (unique storages) + gradient buffers +
  pending Hebbian updates; printed as the maximum over the run's epochs (the all-SGD warm-up epochs
  set it, so it equals SGD's) and at the last epoch's T. Parameters and momentum (identical for all
  methods) are excluded. It is not process RSS.

Goals (the paper's claim), for each LoCal variant: end-to-end time <= 0.67x SGD's with mean final
accuracy within 0.5 points; mean accuracy >= the frozen ablation's. Printed as MET/MISSED lines and
written to ``results/benchmarks/localized.goals.json``; exit status 1 if any is missed (``--no-fail``:
0).

Run: ``python benchmarks/localized.py [--seeds 3] [--epochs 7] [--quick]``; smoke: ``--smoke
--no-fail`` (tiny subsets, 2 seeds, 3 epochs, settle_ratio 0.95 so that layers do go localized; the plot
and JSON go to the goals directory).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path

import _common
import torch
import torch.nn.functional as F

from advanced_optimizers.bench.atomic import write_text
from advanced_optimizers.bench.data import load_dataset
from advanced_optimizers.bench.models import ModelSpec
from advanced_optimizers.bench.stats import mean_ci
from advanced_optimizers.bench.train import RunConfig, train_run
from advanced_optimizers.localized import create_localized_optimizer

TIME_GOAL = 0.67
ACC_GOAL_POINTS = 0.5
LR = 0.05
MOMENTUM = 0.9


def method_configs(arch: str, args: argparse.Namespace) -> dict[str, tuple]:
    local = {
        "settle_ratio": args.settle_ratio,
        "hebbian_subsample": args.hebbian_subsample,
    }
    if arch == "cnn":
        local["max_transition"] = 4
    return {
        "sgd": ("sgd", {}),
        "localized-sgd": ("localized-sgd", dict(local)),
        "local-k4": ("localized-sgd", dict(local, hebbian_interval=4)),
        "frozen": ("localized-sgd", dict(local, hebbian_lr=0.0)),
    }


def memory_probe(arch: str, dataset, batch_size: int, options: dict, transition: int) -> int:
    """Saved-for-backward + gradient + pending-Hebbian bytes of one training step at ``transition``."""
    torch.manual_seed(0)
    model = ModelSpec(arch, dataset.input_shape, dataset.num_classes).build()
    opts = {k: v for k, v in options.items()}
    opt = create_localized_optimizer(model, lr=LR, base_kwargs={"momentum": MOMENTUM}, **opts)
    opt.set_transition(transition)
    x, y = dataset.x_train[:batch_size].clone(), dataset.y_train[:batch_size].clone()
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    opt.zero_grad()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(model(x), y)
    # the pending Hebbian numerator of every layer learning by the localized rule this step has the
    # shape of the layer's weight (advanced_optimizers.localized.rule.oja_subspace_terms)
    hebbian_step = opt.steps % opt.hebbian_interval == 0
    pending = sum(
        module.weight.numel() * module.weight.element_size()
        for (_, module), mode in zip(opt.layers, opt.modes, strict=True)
        if mode == "hebbian" and hebbian_step
    )
    loss.backward()
    grads = sum(
        p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None
    )
    opt.remove_hooks()
    return sum(storages.values()) + grads + pending


class _Pause(Exception):
    """Raised after an epoch to hand the CPU to the next method (the run resumes from its checkpoint)."""


def run_interleaved(configs: dict, dataset, epochs: int, tmp: Path, seed: int) -> dict:
    """Train every config epoch by epoch, alternating methods within each epoch (rotated order).

    Each run is paused after every epoch through the harness's checkpoint/resume (exact), so epoch
    ``e`` of all methods is timed within the same minute and background load hits them alike.
    """
    finished = {}

    def runner(name: str):
        def run(k: int) -> None:
            epoch = k + 1

            def pause(record: dict) -> None:
                if record["epoch"] == epoch and epoch < epochs:
                    raise _Pause

            try:
                finished[name] = train_run(
                    configs[name], dataset, checkpoint=tmp / f"{name}.ckpt", on_epoch=pause
                )
            except _Pause:
                pass

        return run

    # epoch e (k = e - 1) starts with method (e + seed) mod n
    _common.interleave({name: runner(name) for name in configs}, epochs, offset=seed + 1)
    return finished


def run_model(arch: str, dataset, args, seeds: list[int], epochs: int) -> dict:
    configs = method_configs(arch, args)
    names = list(configs)
    runs: dict[str, list] = {name: [] for name in names}
    for seed in seeds:
        configs_for_seed = {
            name: RunConfig(
                method,
                options,
                arch=arch,
                epochs=epochs,
                batch_size=args.batch_size,
                lr=LR,
                momentum=MOMENTUM,
                seed=seed,
            )
            for name, (method, options) in configs.items()
        }
        with tempfile.TemporaryDirectory() as tmp:
            finished = run_interleaved(configs_for_seed, dataset, epochs, Path(tmp), seed)
        for name in names:
            result = finished[name]
            runs[name].append(result)
            secs = sum(h["train_seconds"] for h in result.history)
            print(
                f"  [{arch} seed {seed}] {name:13s} {secs:7.1f} s  acc {result.final['test_acc']:.4f}"
                f"  T {[int(h.get('transition', 0)) for h in result.history]}",
                flush=True,
            )
    cache: dict[tuple, int] = {}
    memory = {}
    for name in names:
        _, options = configs[name]
        peaks, finals = [], []
        for result in runs[name]:
            ts = [int(h.get("transition", 0)) for h in result.history]
            for t in set(ts):
                if (name, t) not in cache:
                    cache[(name, t)] = memory_probe(arch, dataset, args.batch_size, options, t)
            peaks.append(max(cache[(name, t)] for t in ts))
            finals.append(cache[(name, ts[-1])])
        memory[name] = (max(peaks), max(finals))
    return {"runs": runs, "memory": memory, "configs": configs}


def summarise(
    arch: str, label: str, out: dict, goals: _common.GoalReport
) -> tuple[list[str], dict]:
    runs, memory = out["runs"], out["memory"]
    total = {n: [sum(h["train_seconds"] for h in r.history) for r in rs] for n, rs in runs.items()}
    acc = {n: [100 * r.final["test_acc"] for r in rs] for n, rs in runs.items()}
    epoch_s = {
        n: [statistics.median(h["train_seconds"] for h in r.history) for r in rs]
        for n, rs in runs.items()
    }
    lines = [f"== {label}"]
    lines.append(
        f"{'method':13s} {'s/epoch med':>11s} {'end-to-end s':>12s} {'time ratio vs SGD':>26s} "
        f"{'final acc % mean [95% CI]':>28s} {'mem MB peak/last epoch':>22s}  T per epoch (seed {0})"
    )
    sgd_total = total["sgd"]
    ratios = {}
    for name in runs:
        ratios[name] = r = _common.ratio_ci(total[name], sgd_total)
        a = mean_ci(acc[name])
        t_seq = [int(h.get("transition", 0)) for h in runs[name][0].history]
        ci = f"[{r.ci_low:.3f}, {r.ci_high:.3f}]" if r.n > 1 else ""
        aci = f"[{a['ci_low']:.2f}, {a['ci_high']:.2f}]" if a["n"] > 1 else ""
        mem = f"{memory[name][0] / 2**20:.2f}/{memory[name][1] / 2**20:.2f}"
        lines.append(
            f"{name:13s} {statistics.mean(epoch_s[name]):11.2f} {statistics.mean(total[name]):12.1f} "
            f"{r.ratio:9.3f} {ci:>16s} {a['mean']:10.2f} {aci:>17s} {mem:>22s}  {t_seq}"
        )
    per_epoch = []
    for name in ("localized-sgd", "local-k4", "frozen"):
        rows = []
        for r, s in zip(runs[name], runs["sgd"], strict=True):
            rows.append(
                [
                    h["train_seconds"] / g["train_seconds"]
                    for h, g in zip(r.history, s.history, strict=True)
                ]
            )
        mean_row = [statistics.mean(col) for col in zip(*rows, strict=True)]
        per_epoch.append(
            f"  per-epoch time ratio {name:13s} vs SGD: " + " ".join(f"{v:.2f}" for v in mean_row)
        )
    lines += per_epoch
    for name in ("localized-sgd", "local-k4"):
        vs_sgd = _common.paired_diff(acc[name], acc["sgd"])
        vs_frozen = _common.paired_diff(acc[name], acc["frozen"])
        lines.append(
            f"  accuracy {name} - SGD: {vs_sgd['mean_diff']:+.2f} points (paired p="
            f"{vs_sgd['p_value']:.3g}); {name} - frozen: {vs_frozen['mean_diff']:+.2f} points "
            f"(paired p={vs_frozen['p_value']:.3g})"
        )
        goals.add(
            label,
            f"{arch} {name}: end-to-end time <= {TIME_GOAL}x SGD",
            ratios[name].ratio,
            TIME_GOAL,
            "<=",
            ratio=ratios[name].as_dict(),
        )
        goals.add(
            label,
            f"{arch} {name}: accuracy within {ACC_GOAL_POINTS} points of SGD",
            vs_sgd["mean_diff"],
            -ACC_GOAL_POINTS,
            ">=",
            paired=vs_sgd,
        )
        goals.add(
            label,
            f"{arch} {name}: accuracy >= frozen ablation",
            vs_frozen["mean_diff"],
            0.0,
            ">=",
            paired=vs_frozen,
        )
    gates = [round(h.get("hebbian_gate", math.nan), 2) for h in runs["localized-sgd"][0].history]
    lines.append(f"  localized-sgd Hebbian gate at epoch ends (seed 0): {gates}")
    summary = {
        "total_seconds": total,
        "accuracy_percent": acc,
        "time_ratio": {k: v.ratio for k, v in ratios.items()},
        "memory_bytes_peak_and_last_epoch": memory,
        "transition": {
            n: [[int(h.get("transition", 0)) for h in r.history] for r in rs]
            for n, rs in runs.items()
        },
    }
    return lines, {"summary": summary}


def plot_transitions(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.4), squeeze=False)
    for ax, (arch, data) in zip(axes[0], results.items(), strict=True):
        for name, style in (("localized-sgd", "-o"), ("local-k4", ":^"), ("frozen", "--s")):
            for k, seq in enumerate(data["summary"]["transition"][name]):
                epochs = range(1, len(seq) + 1)
                label = f"{name} (seed {k})"
                ax.plot(epochs, [t + 0.04 * k for t in seq], style, ms=4, label=label, alpha=0.8)
        ax.set_title(f"{arch}: transition layer T during each epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel("T (layers before T are localized)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per model (3)")
    parser.add_argument("--epochs", type=int, default=7, help="CNN epochs (7)")
    parser.add_argument("--mlp-epochs", type=int, default=5, help="MLP epochs (5)")
    parser.add_argument("--cnn-train", type=int, default=8000, help="CNN training subset (8000)")
    parser.add_argument("--mlp-train", type=int, default=30000, help="MLP training subset (30000)")
    parser.add_argument("--n-test", type=int, default=5000, help="test samples (5000)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (64)")
    parser.add_argument("--settle-ratio", type=float, default=0.75, help="dynamic settle ratio")
    parser.add_argument("--hebbian-subsample", type=float, default=0.25)
    parser.add_argument("--models", default="cnn,mlp", help="comma list of cnn, mlp")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="PNG/JSON directory (results/localized; --smoke: the goals directory)",
    )
    parser.add_argument("--quick", action="store_true", help="small run: subsets, 2 seeds")
    _common.add_arguments(parser)
    args = parser.parse_args(argv)
    kind = _common.run_kind(args)
    if kind == "quick":
        args.seeds, args.epochs, args.mlp_epochs = 2, 3, 3
        args.cnn_train, args.mlp_train, args.n_test = 1500, 3000, 500
    elif kind == "smoke":
        args.seeds, args.epochs, args.mlp_epochs = 2, 3, 3
        args.cnn_train, args.mlp_train, args.n_test = 256, 512, 256
        args.settle_ratio = 0.95  # so that T moves within 3 short epochs: the localized path runs
    goals = _common.report_from_args("localized", args)
    if args.out is None:
        args.out = goals.goals_dir if kind == "smoke" else Path("results/localized")
    torch.set_num_threads(1)
    full = load_dataset("mnist", progress=False)
    seeds = list(range(args.seeds))
    plan = {
        "cnn": (
            args.cnn_train,
            args.epochs,
            "CNN width 16, depth 2 (conv16-conv16-pool-conv32-conv32-pool-fc128-fc10)",
        ),
        "mlp": (args.mlp_train, args.mlp_epochs, "MLP 784-512-10"),
    }
    print(
        f"LoCal+SGD benchmark: MNIST, batch {args.batch_size}, SGD lr {LR} momentum {MOMENTUM} "
        f"(constant), seeds {seeds}, torch threads 1, dynamic settle_ratio {args.settle_ratio}, "
        f"hebbian_subsample {args.hebbian_subsample}, "
        "hebbian_lr 1e-4, weak_supervision_weight 0.1",
        flush=True,
    )
    report, results = [], {}
    for arch in args.models.split(","):
        n_train, epochs, desc = plan[arch]
        dataset = full.subset(n_train, args.n_test)
        label = f"{desc}, {dataset.n_train} train / {dataset.n_test} test, {epochs} epochs"
        print(f"running {label}", flush=True)
        out = run_model(arch, dataset, args, seeds, epochs)
        lines, results[arch] = summarise(arch, label, out, goals)
        report += lines
    print()
    print("\n".join(report))
    reduced = kind != "full"
    plot_path = args.out / ("transition_quick.png" if reduced else "transition.png")
    plot_transitions(results, plot_path)
    write_text(
        args.out / ("results_quick.json" if reduced else "results.json"),
        json.dumps({a: r["summary"] for a, r in results.items()}, indent=1),
    )
    print(f"T plot: {plot_path}")
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())
