"""SigProp vs backprop (Adam, same architecture) on MNIST: accuracy, time per epoch, training memory.

* Accuracy/time: MLP (width 512, depth 2) over ``--seeds`` seeds and CNN (harness cnn, width 16, depth 2)
  over ``--cnn-seeds`` seeds, both through ``train_run``; SigProp and backprop alternate per seed (order
  flipped every seed) so background load hits both alike. Time = harness ``train_seconds`` per epoch.
  SigProp's nearest-class-signal test accuracy is computed from the run's final checkpoint. Time
  ratio = geometric mean over seeds of the per-seed ratios SigProp / backprop, with a 95% t-interval
  of the log-ratios (``_common.ratio_ci``).
* Memory: for MLP depth 2, 4, 8, 16 (width 512, batch 128) each (method, depth) runs in a fresh
  subprocess: model + optimizer are built, gradients and Adam state are allocated by one zero-gradient
  step, then the kernel's RSS high-water mark is reset (/proc/self/clear_refs) and the RSS read; three
  real training steps (the harness hooks, synthetic MNIST-shaped batch) follow and the rise of the
  high-water mark VmHWM above that RSS (glibc told to mmap blocks >= 64 KiB, so freed memory leaves the
  resident set and is not silently reused; ru_maxrss is not used because Linux carries the parent's
  peak into a forked child) is the peak *transient* training memory (activations,
  autograd graph, temporary buffers) on top of the steady parameters/gradients/optimizer state.

Goals: MLP >= 97.5%, CNN >= 99.0% test accuracy; SigProp time/epoch <= 1.2x backprop;
memory growth depth 2→16 of SigProp <= 0.25x that of backprop. Printed as MET/MISSED lines and written
to ``results/benchmarks/sigprop.goals.json``; exit status 1 if one is missed (``--no-fail``: 0).
Run: ``python benchmarks/sigprop.py [--seeds 3] [--epochs 3] [--cnn-seeds 1] [--cnn-epochs 1] [--quick]``;
smoke: ``--smoke --no-fail`` (512/256 samples, 2 MLP seeds, 1 epoch, memory at depths 2 and 16 only).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import _common
import torch

from advanced_optimizers.bench.data import load_dataset
from advanced_optimizers.bench.methods import (
    Batch,
    EpochInfo,
    Setup,
    available_methods,
    get_method,
)
from advanced_optimizers.bench.models import ModelSpec
from advanced_optimizers.bench.stats import mean_ci
from advanced_optimizers.bench.train import RunConfig, read_checkpoint, train_run

MLP_GOAL, CNN_GOAL, TIME_GOAL, MEMORY_GOAL = 0.975, 0.990, 1.2, 0.25
DEPTHS = (2, 4, 8, 16)
# glibc: serve every block >= 64 KiB by mmap and return it on free (static threshold), so the resident
# size follows live memory and the high-water mark sees the step's true peak instead of reused heap pages.
CHILD_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
MEM_WIDTH, BATCH = 512, 128
# harness method of each compared label (SigProp's method id is "sigprop-adam", formerly "sigprop")
METHODS = {
    "adam": "adam",
    "sigprop": next(
        (m for m in ("sigprop-adam", "sigprop") if m in available_methods()), "sigprop"
    ),
}


def proc_status_kib(field: str) -> int:
    """``VmRSS``/``VmHWM`` of this process from /proc/self/status, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> int:
    """Reset this process's RSS high-water mark (Linux clear_refs "5"); return the current RSS."""
    Path("/proc/self/clear_refs").write_text("5")
    return proc_status_kib("VmRSS")


def memory_child(method_name: str, depth: int, width: int) -> None:
    """In a fresh process: print the RSS high-water increase (KiB) of three training steps."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    method = get_method(method_name)
    model = method.build_model(ModelSpec("mlp", (1, 28, 28), 10, width, depth))
    setup = Setup(lr=1e-3, epochs=1, steps_per_epoch=3, n_train=3 * BATCH, num_classes=10)
    optimizer = method.build_optimizer(model, setup)
    for p in model.parameters():  # allocate gradients and Adam state without an activation peak
        p.grad = torch.zeros_like(p)
    optimizer.step()
    x, y = torch.randn(BATCH, 1, 28, 28), torch.randint(0, 10, (BATCH,))
    batch, info = Batch(x, y, torch.arange(BATCH)), EpochInfo(1, 1)
    method.start_epoch(model, optimizer, info)
    base = reset_peak_rss()
    for _ in range(3):
        optimizer.zero_grad(set_to_none=False)
        method.batch_loss(model, optimizer, batch, info).backward()
        optimizer.step()
    peak = proc_status_kib("VmHWM")
    print(json.dumps({"delta_kib": peak - base}))


def measure_memory(method_name: str, depth: int, reps: int) -> float:
    """Median over ``reps`` fresh subprocesses of the training-step RSS high-water rise, in MiB."""
    values = []
    for _ in range(reps):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", method_name, str(depth), str(MEM_WIDTH)],
            capture_output=True,
            text=True,
            check=True,
            env=CHILD_ENV,
        )
        values.append(json.loads(out.stdout.strip().splitlines()[-1])["delta_kib"] / 1024)
    return statistics.median(values)


def signal_test_accuracy(checkpoint: Path, config: RunConfig, dataset) -> float:
    """Nearest-class-signal test accuracy of the final SigProp model in ``checkpoint``."""
    state = read_checkpoint(checkpoint)
    spec = ModelSpec(
        config.arch, dataset.input_shape, dataset.num_classes, config.width, config.depth
    )
    model = get_method(METHODS["sigprop"], **config.options).build_model(spec)
    model.load_state_dict(state["model"])
    model.eval()
    hits = sum(
        (model.predict_by_signal(b.x).argmax(1) == b.y).sum().item()
        for b in dataset.test_batches(1000)
    )
    return hits / dataset.n_test


def compare(arch: str, width: int, depth: int, seeds: int, epochs: int, dataset) -> dict:
    """Interleaved adam / sigprop runs; returns final accuracies and per-epoch seconds."""
    out = {"adam": {"acc": [], "sec": []}, "sigprop": {"acc": [], "sec": [], "sig": []}}

    def runner(name: str):
        def run(seed: int) -> None:
            config = RunConfig(
                METHODS[name], arch=arch, width=width, depth=depth, epochs=epochs, seed=seed
            )
            ckpt = Path(tmp) / f"{arch}-{seed}.pt" if name == "sigprop" else None
            result = train_run(config, dataset, checkpoint=ckpt)
            out[name]["acc"].append(result.final["test_acc"])
            out[name]["sec"].append(statistics.mean(h["train_seconds"] for h in result.history))
            if ckpt is not None:
                out[name]["sig"].append(signal_test_accuracy(ckpt, config, dataset))
            print(
                f"  {arch} seed {seed} {name:8s} acc {result.final['test_acc']:.4f} "
                f"s/epoch {out[name]['sec'][-1]:.2f}",
                flush=True,
            )

        return run

    with tempfile.TemporaryDirectory() as tmp:
        _common.interleave({"adam": runner("adam"), "sigprop": runner("sigprop")}, seeds)
    return out


def fmt_ci(values: list[float]) -> str:
    ci = mean_ci(values)
    return f"{100 * ci['mean']:.2f}% [{100 * ci['ci_low']:.2f}, {100 * ci['ci_high']:.2f}] (n={ci['n']})"


def report_accuracy(
    tag: str, label: str, res: dict, goal: float, goals: _common.GoalReport
) -> None:
    print(f"\n{label}")
    print(f"  backprop (adam) test acc : {fmt_ci(res['adam']['acc'])}")
    print(f"  sigprop  test acc        : {fmt_ci(res['sigprop']['acc'])}  (output-layer argmax)")
    print(f"  sigprop  signal test acc : {fmt_ci(res['sigprop']['sig'])}  (nearest class signal)")
    diff = _common.paired_diff(res["sigprop"]["acc"], res["adam"]["acc"])
    print(
        f"  sigprop - adam test acc  : {100 * diff['mean_diff']:+.2f} pp "
        f"[{100 * diff['ci_low']:+.2f}, {100 * diff['ci_high']:+.2f}] (paired p={diff['p_value']:.3g})"
    )
    ratio = _common.ratio_ci(res["sigprop"]["sec"], res["adam"]["sec"])
    print(
        f"  s/epoch adam {statistics.mean(res['adam']['sec']):.2f}  sigprop "
        f"{statistics.mean(res['sigprop']['sec']):.2f}  ratio per seed "
        f"{', '.join(f'{r:.2f}' for r in ratio.ratios)}  geometric mean {ratio.text(2)}"
    )
    acc = statistics.mean(res["sigprop"]["acc"])
    goals.add(
        label,
        f"{tag} sigprop test acc >= {goal:.1%}",
        acc,
        goal,
        ">=",
        sigprop_acc=res["sigprop"]["acc"],
        sigprop_signal_acc=res["sigprop"]["sig"],
        adam_acc=res["adam"]["acc"],
        sigprop_minus_adam=diff,
    )
    goals.add(
        label,
        f"{tag} time/epoch <= {TIME_GOAL}x backprop",
        ratio.ratio,
        TIME_GOAL,
        "<=",
        ratio=ratio.as_dict(),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cnn-seeds", type=int, default=1)
    parser.add_argument("--cnn-epochs", type=int, default=1)
    parser.add_argument("--mem-reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small run (subset, 1 epoch)")
    parser.add_argument("--memory-child", nargs=3, metavar=("METHOD", "DEPTH", "WIDTH"))
    _common.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child[0], int(args.memory_child[1]), int(args.memory_child[2]))
        return 0
    kind = _common.run_kind(args)
    goals = _common.report_from_args("sigprop", args)
    torch.set_num_threads(1)
    dataset = load_dataset("mnist", progress=False)
    depths = DEPTHS
    if kind == "quick":
        dataset = dataset.subset(3000, 1000)
        args.seeds, args.epochs, args.cnn_seeds, args.cnn_epochs, args.mem_reps = 2, 1, 1, 1, 1
    elif kind == "smoke":
        dataset = dataset.subset(512, 256)
        args.seeds, args.epochs, args.cnn_seeds, args.cnn_epochs, args.mem_reps = 2, 1, 1, 1, 1
        depths = (DEPTHS[0], DEPTHS[-1])
    print(
        f"MNIST train {dataset.n_train} test {dataset.n_test}, batch 128, Adam lr 1e-3 "
        f"(sigprop signal_lr 1e-4, loss v14, layerwise backward), torch threads 1"
    )
    mlp = compare("mlp", 512, 2, args.seeds, args.epochs, dataset)
    cnn = compare("cnn", 16, 2, args.cnn_seeds, args.cnn_epochs, dataset)
    data = f"MNIST {dataset.n_train}/{dataset.n_test}"
    report_accuracy(
        "MLP",
        f"{data}, MLP 784-512-512-10, {args.epochs} epochs, {args.seeds} seeds",
        mlp,
        MLP_GOAL,
        goals,
    )
    report_accuracy(
        "CNN",
        f"{data}, CNN (harness cnn width 16 depth 2), {args.cnn_epochs} epochs, "
        f"{args.cnn_seeds} seeds",
        cnn,
        CNN_GOAL,
        goals,
    )

    print(
        f"\nPeak transient training memory (VmHWM rise over RSS, MiB; median of {args.mem_reps} "
        f"fresh processes), MLP width {MEM_WIDTH}, batch {BATCH}"
    )
    print(f"  {'depth':>5} {'adam':>8} {'sigprop':>8}")
    mem = {name: {} for name in ("adam", "sigprop")}
    for depth in depths:
        for name in ("adam", "sigprop"):
            mem[name][depth] = measure_memory(METHODS[name], depth, args.mem_reps)
        print(f"  {depth:>5} {mem['adam'][depth]:>8.2f} {mem['sigprop'][depth]:>8.2f}", flush=True)
    growth = {n: mem[n][depths[-1]] - mem[n][depths[0]] for n in mem}
    mem_ratio = growth["sigprop"] / growth["adam"] if growth["adam"] > 0 else float("inf")
    print(
        f"  growth depth {depths[0]}->{depths[-1]}: adam {growth['adam']:.2f} MiB, sigprop "
        f"{growth['sigprop']:.2f} MiB, ratio {mem_ratio:.3f}"
    )
    goals.add(
        f"MLP width {MEM_WIDTH}, batch {BATCH}, depths {list(depths)}, median of {args.mem_reps} "
        "fresh processes",
        f"memory growth {depths[0]}->{depths[-1]} <= {MEMORY_GOAL}x backprop's",
        mem_ratio,
        MEMORY_GOAL,
        "<=",
        peak_rise_mib=mem,
        growth_mib=growth,
    )
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())
