"""LoCal+SGD against SGD, FreezeOut and the "localized layers frozen" ablation (MNIST, Fashion-MNIST).

Every run goes through the harness (``train_run``) on a **validation split**: the last 10 000 images
of the official training set (``Dataset.split_validation``); the runs train on the first ``n_train``
of the rest. Two modes:

* ``--search``: the schedule search. Every candidate of :func:`search_candidates` (LoCal schedules,
  rules, rates, the gate, FreezeOut's ``t_0``, frozen ablations) and SGD, seeds 100.. (not the final
  seeds), validation accuracy after the last epoch and the time ratio against SGD; the test set is
  never read (the dataset handed to the runs has none). To fit the shared 2-core machine the search
  keeps all runs of a seed in memory and interleaves them epoch by epoch with the harness's own
  pieces (``get_method``: model, optimizer, ``batch_loss``, ``end_epoch``; ``Dataset.train_batches``:
  the data order; ``evaluate``: validation once, after the last epoch) instead of ``train_run``,
  whose per-epoch evaluation and checkpoints would triple its cost. Output:
  ``results/localized/search_<dataset>.json`` and a table. The configurations in ``CHOSEN`` were
  picked from these tables (see ``docs/algorithms/localized.md``).
* default (final): the chosen configurations, seeds 0..2, test accuracy read once per run after the
  last epoch. CNN (harness ``cnn``, width 16, depth 2: conv16-conv16-pool-conv32-conv32-pool-fc128-fc10)
  on MNIST and Fashion-MNIST, MLP 784-512-10 on MNIST.

Same model, initial weights, data order, lr (0.05, momentum 0.9, constant) and epochs per seed for
all methods. The methods of one seed are interleaved epoch by epoch (each run pauses after every epoch
and resumes exactly from the harness checkpoint; the order rotates), so background load on the
shared machine hits them alike (``_common.interleave``). End-to-end time = the harness's training
seconds summed over the whole budget (evaluation and checkpointing excluded). Ratios are per seed
(method / SGD of the same seed), summarised by their geometric mean with a 95% t-interval of the
log-ratios (``_common.ratio_ci``).

Methods of the final run (per workload, ``CHOSEN``): ``sgd``; ``local`` (LoCal, the chosen schedule);
``frozen`` (the same schedule with ``hebbian_lr=0``: the rule's ablation); ``freezeout``
(``freezeout-sgd``, ``t_0`` chosen on validation among the FreezeOut settings that were at most as
slow as ``local``: FreezeOut at equal or lower time); on Fashion-MNIST also ``prev-default`` (the
LoCal configuration of the earlier benchmark: dynamic selection, settle ratio 0.75, rule every step)
for reference. The three workloads run in two parallel processes (``--jobs``); the methods of a
workload are interleaved within its process.

Goals for ``local``, on every final workload: end-to-end time <= 0.67x SGD; mean test accuracy within
0.5 points of SGD; accuracy >= FreezeOut's (at equal or lower FreezeOut time: the rule must beat
freezing to earn its place); accuracy >= the frozen ablation's. Printed as MET/MISSED lines and
written to ``results/benchmarks/localized.goals.json``; exit status 1 if any is missed
(``--no-fail``: 0). Peak memory (final mode): bytes autograd saved for backward + gradient buffers +
pending Hebbian buffers on one batch, the worst epoch's / the last epoch's T (not process RSS).

A run stopped as failed (the harness's rule: at chance, or diverged) has no test accuracy (NaN: its
accuracy goals are missed) and did not train to the end of the budget (its time goal is missed).

Run: ``python benchmarks/localized.py [--seeds 3]``; search: ``python benchmarks/localized.py
--search --dataset mnist`` (and ``fashion-mnist``, ``--models cnn,mlp``, ``--only a,b``); goals
again from a finished run: ``--goals-from results/localized/results.json``; smoke: ``--smoke
--no-fail`` (tiny subsets, 2 seeds, 3 epochs; output to the goals directory).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import _common
import numpy as np
import torch
import torch.nn.functional as F

from advanced_optimizers.bench.atomic import write_text
from advanced_optimizers.bench.data import load_dataset
from advanced_optimizers.bench.methods import EpochInfo, Setup, get_method
from advanced_optimizers.bench.models import ModelSpec
from advanced_optimizers.bench.train import RunConfig, evaluate, train_run
from advanced_optimizers.registry import create_optimizer

TIME_GOAL = 0.67
ACC_GOAL_POINTS = 0.5
LR = 0.05
MOMENTUM = 0.9
N_VAL = 10_000
SEARCH_SEED0 = 100
CNN_LABEL = "CNN width 16, depth 2 (conv16-conv16-pool-conv32-conv32-pool-fc128-fc10)"
# workload: (arch, n_train, epochs, label)
WORKLOADS = {
    "cnn": ("cnn", 8000, 6, CNN_LABEL),
    "mlp": ("mlp", 30000, 5, "MLP 784-512-10"),
}
PREV_DEFAULT = {"settle_ratio": 0.75}  # the earlier benchmark's LoCal (dynamic, rule every step)


def _cap(arch: str) -> dict:
    """CNN: only the four convs may leave SGD (both Linear layers stay); MLP: the hidden layer."""
    return {"max_transition": 4} if arch == "cnn" else {}


def _step(arch: str) -> int:
    return 4 if arch == "cnn" else 1  # every localizable layer at once after the warm-up


def _static(arch: str, warmup: int, **extra) -> dict:
    return {
        **_cap(arch),
        "selection_mode": "static",
        "static_step": _step(arch),
        "warmup_epochs": warmup,
        **extra,
    }


def search_candidates(arch: str) -> dict[str, tuple[str, dict]]:
    """The schedule search's configurations (name -> harness method, options)."""
    cap = _cap(arch)
    out = {
        "sgd": ("sgd", {}),
        "prev-default": ("localized-sgd", {**cap, **PREV_DEFAULT}),
        "local-w1-k4": ("localized-sgd", _static(arch, 1, hebbian_interval=4)),
        "local-w2-k4": ("localized-sgd", _static(arch, 2, hebbian_interval=4)),
        "local-w1-k4-lr1e-3": (
            "localized-sgd",
            _static(arch, 1, hebbian_interval=4, hebbian_lr=1e-3),
        ),
        "local-w1-k4-lr1e-2": (
            "localized-sgd",
            _static(arch, 1, hebbian_interval=4, hebbian_lr=1e-2),
        ),
        "local-w1-k4-lr1e-3-nogate": (
            "localized-sgd",
            _static(arch, 1, hebbian_interval=4, hebbian_lr=1e-3, weak_supervision_weight=0.0),
        ),
        "local-w1-k4-lr1e-3-hebb": (
            "localized-sgd",
            _static(arch, 1, hebbian_interval=4, hebbian_lr=1e-3, rule="normalized_hebb"),
        ),
        "frozen-w1": ("localized-sgd", _static(arch, 1, hebbian_lr=0.0)),
        "frozen-w2": ("localized-sgd", _static(arch, 2, hebbian_lr=0.0)),
        # unscaled below the paper's t_0: its 1/t_i rate scaling gives the first layer 10x the lr at
        # t_0 = 0.1, which diverged on Fashion-MNIST in a first try
        "freezeout-0.1u": ("freezeout-sgd", {**cap, "t_0": 0.1, "scale_lr": False}),
        "freezeout-0.3u": ("freezeout-sgd", {**cap, "t_0": 0.3, "scale_lr": False}),
        "freezeout-paper": ("freezeout-sgd", {**cap}),
    }
    # second round (after the first seeds: warm-up 1 lost accuracy, FreezeOut's annealing gained)
    out.update(
        {
            "sgd-cosine": ("sgd", {}, "cosine"),  # is FreezeOut's gain its annealing?
            "local-w1s2-k4": (
                "localized-sgd",
                _static(arch, 1, hebbian_interval=4, static_step=max(1, _step(arch) // 2)),
            ),
            "frozen-w1s2": (
                "localized-sgd",
                _static(arch, 1, hebbian_lr=0.0, static_step=max(1, _step(arch) // 2)),
            ),
            "local-fo0.1-k4": (
                "localized-sgd",
                {**cap, "selection_mode": "freezeout", "t_0": 0.1, "hebbian_interval": 4},
            ),
            "frozen-fo0.1": (
                "localized-sgd",
                {**cap, "selection_mode": "freezeout", "t_0": 0.1, "hebbian_lr": 0.0},
            ),
            "local-w2-k4-lr1e-3": (
                "localized-sgd",
                _static(arch, 2, hebbian_interval=4, hebbian_lr=1e-3),
            ),
        }
    )
    if arch == "cnn":  # the accuracy side: the last two convs stay on SGD
        out["local-w1-cap2-k4"] = (
            "localized-sgd",
            {
                "max_transition": 2,
                "selection_mode": "static",
                "static_step": 2,
                "warmup_epochs": 1,
                "hebbian_interval": 4,
            },
        )
    return out


# The final configurations, chosen on the validation split (``--search``; the rule and the tables are
# in docs/algorithms/localized.md): LoCal = the fastest LoCal setting within 0.5 points of SGD on
# every searched dataset (ties within the timing noise broken by accuracy), the same on both models:
# FreezeOut's step-based timing (t_0 = 0.1, cubic) with the Oja rule every 4th step; ``frozen`` = the
# same schedule with the rule off; ``freezeout`` = the most accurate FreezeOut setting whose time
# ratio was at most LoCal's.
_LOCAL_FO = {"selection_mode": "freezeout", "t_0": 0.1}
CHOSEN: dict[str, dict[str, tuple[str, dict]]] = {
    arch: {
        "local": ("localized-sgd", {**_cap(arch), **_LOCAL_FO, "hebbian_interval": 4}),
        "frozen": ("localized-sgd", {**_cap(arch), **_LOCAL_FO, "hebbian_lr": 0.0}),
        "freezeout": (
            "freezeout-sgd",
            {**_cap(arch), "t_0": 0.1, "scale_lr": False} if arch == "cnn" else {},
        ),
    }
    for arch in ("cnn", "mlp")
}


def final_methods(dataset: str, arch: str) -> dict[str, tuple[str, dict]]:
    out = {"sgd": ("sgd", {}), **CHOSEN[arch]}
    if dataset == "fashion-mnist":  # where the earlier default lost about 1 point to SGD and Adam
        out["prev-default"] = ("localized-sgd", {**_cap(arch), **PREV_DEFAULT})
    return out


def memory_probe(arch: str, dataset, batch_size: int, method: str, options: dict, t: int) -> int:
    """Saved-for-backward + gradient + pending-Hebbian bytes of one training step at ``T = t``."""
    torch.manual_seed(0)
    model = ModelSpec(arch, dataset.input_shape, dataset.num_classes).build()
    if method in ("localized-sgd", "freezeout-sgd"):
        opt = create_optimizer(method, model, total_steps=10**6, **options)
        opt.set_transition(t)
    else:  # plain SGD / Adam: the whole graph (their state is not counted, as for every method)
        opt = torch.optim.SGD(model.parameters(), lr=LR)
    x, y = dataset.x_train[:batch_size].clone(), dataset.y_train[:batch_size].clone()
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    opt.zero_grad()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = F.cross_entropy(model(x), y)
    pending = 0
    if hasattr(opt, "modes") and opt.steps % opt.hebbian_interval == 0:
        # the pending numerator of a layer learning by the localized rule has the weight's shape
        pending = sum(
            module.weight.numel() * module.weight.element_size()
            for (_, module), mode in zip(opt.layers, opt.modes, strict=True)
            if mode == "hebbian"
        )
    loss.backward()
    grads = sum(
        p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None
    )
    if hasattr(opt, "remove_hooks"):
        opt.remove_hooks()
    return sum(storages.values()) + grads + pending


class _Pause(Exception):
    """Raised after an epoch to hand the CPU to the next method (the run resumes from its checkpoint)."""


def run_interleaved(
    configs: dict, dataset, epochs: int, tmp: Path, seed: int, evaluate_test: bool
) -> dict:
    """Train every config epoch by epoch, alternating methods within each epoch (rotated order)."""
    finished = {}

    def runner(name: str):
        def run(k: int) -> None:
            epoch = k + 1

            def pause(record: dict) -> None:
                if record["epoch"] == epoch and epoch < epochs:
                    raise _Pause

            try:
                finished[name] = train_run(
                    configs[name],
                    dataset,
                    checkpoint=tmp / f"{name}.ckpt",
                    on_epoch=pause,
                    evaluate_test=evaluate_test,
                )
            except _Pause:
                pass

        return run

    _common.interleave({name: runner(name) for name in configs}, epochs, offset=seed + 1)
    return finished


def run_workload(
    methods: dict, dataset, arch: str, epochs: int, seeds: list[int], batch: int, test: bool
) -> dict:
    runs: dict[str, list] = {name: [] for name in methods}
    for seed in seeds:
        configs = {
            name: RunConfig(
                method,
                options,
                arch=arch,
                epochs=epochs,
                batch_size=batch,
                lr=1e-3 if method == "adam" else LR,
                momentum=MOMENTUM,
                seed=seed,
                schedule=schedule,
            )
            for name, (method, options, *rest) in methods.items()
            for schedule in [rest[0] if rest else "constant"]
        }
        with tempfile.TemporaryDirectory() as tmp:
            finished = run_interleaved(configs, dataset, epochs, Path(tmp), seed, test)
        for name in methods:
            result = finished[name]
            runs[name].append(result)
            secs = sum(h["train_seconds"] for h in result.history)
            acc = _acc(result, test) / 100
            print(
                f"  [{arch} seed {seed}] {name:20s} {secs:7.1f} s  {'test' if test else 'val'} "
                f"{acc:.4f}  T {[int(h.get('transition', 0)) for h in result.history]}"
                f"{'' if result.ok else '  FAILED: ' + str(result.failure)}",
                flush=True,
            )
    return runs


class _Run:
    """One in-memory run of the search: the harness's method hooks, model and data order."""

    def __init__(
        self,
        method: str,
        options: dict,
        arch: str,
        dataset,
        epochs: int,
        seed: int,
        batch: int,
        schedule: str = "constant",
    ) -> None:
        self.method = get_method(method, **options)
        spec = ModelSpec(arch, dataset.input_shape, dataset.num_classes)
        torch.manual_seed(seed)  # the harness's initialisation: same weights for every method
        self.model = self.method.build_model(spec)
        setup = Setup(
            lr=1e-3 if method == "adam" else LR,
            epochs=epochs,
            steps_per_epoch=math.ceil(dataset.n_train / batch),
            n_train=dataset.n_train,
            num_classes=dataset.num_classes,
            momentum=MOMENTUM,
        )
        self.optimizer = self.method.build_optimizer(self.model, setup)
        self.scheduler = None
        if schedule == "cosine":  # as the harness: CosineAnnealingLR stepped per batch
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, T_max=epochs * setup.steps_per_epoch
            )
        self.dataset, self.epochs, self.seed, self.batch = dataset, epochs, seed, batch
        self.history: list[dict] = []
        self.rng = torch.get_rng_state()

    def epoch(self, epoch: int) -> None:
        """The harness's training pass (``train._train_epoch``) and epoch hook, timed."""
        torch.set_rng_state(self.rng)
        model, optimizer, method = self.model, self.optimizer, self.method
        info = EpochInfo(epoch, self.epochs)
        start = time.perf_counter()
        model.train()
        method.train_mode(model, optimizer)
        method.start_epoch(model, optimizer, info)
        total = 0.0
        for batch in self.dataset.train_batches(self.batch, self.seed, epoch):
            optimizer.zero_grad(set_to_none=True)
            loss = method.batch_loss(model, optimizer, batch, info)
            loss.backward()
            optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            total += loss.item() * len(batch.y)
        extras = method.end_epoch(model, optimizer, info, total / self.dataset.n_train)
        seconds = time.perf_counter() - start
        method.eval_mode(model, optimizer)
        self.rng = torch.get_rng_state()
        record = {"epoch": epoch, "train_loss": total / self.dataset.n_train}
        record["train_seconds"] = seconds
        record.update({k: float(v) for k, v in extras.items()})
        if epoch == self.epochs or not math.isfinite(record["train_loss"]):
            record["val_loss"], record["val_acc"], _ = evaluate(
                method, model, self.dataset, split="val"
            )
        self.history.append(record)

    @property
    def final(self) -> dict:
        return self.history[-1]

    @property
    def ok(self) -> bool:
        return math.isfinite(self.final["train_loss"])

    @property
    def failure(self) -> str | None:
        return None if self.ok else f"diverged at epoch {self.final['epoch']}"


def search_workload(
    methods: dict, dataset, arch: str, epochs: int, seeds: list[int], batch: int
) -> dict:
    """The search's runs: per seed, every candidate in memory, interleaved epoch by epoch."""
    runs: dict[str, list] = {name: [] for name in methods}
    for seed in seeds:
        live = {
            name: _Run(method, options, arch, dataset, epochs, seed, batch, *rest)
            for name, (method, options, *rest) in methods.items()
        }

        def runner(run_: _Run):
            def run(k: int) -> None:
                if run_.history and not run_.ok:
                    return  # diverged: stopped, as the harness stops a failed run
                run_.epoch(k + 1)

            return run

        _common.interleave({name: runner(r) for name, r in live.items()}, epochs, offset=seed + 1)
        for name, result in live.items():
            runs[name].append(result)
            secs = sum(h["train_seconds"] for h in result.history)
            acc = result.final.get("val_acc", math.nan)
            print(
                f"  [{arch} seed {seed}] {name:26s} {secs:7.1f} s  val {acc:.4f}  T "
                f"{[int(h.get('transition', 0)) for h in result.history]}"
                f"{'' if result.ok else '  FAILED: ' + str(result.failure)}",
                flush=True,
            )
    return runs


def _acc(result, test: bool) -> float:
    """Final accuracy in % (NaN for a failed run, whose test set the harness does not read)."""
    value = result.final.get("test_acc" if test else "val_acc")
    return math.nan if value is None else 100 * value


def table(runs: dict, test: bool, memory: dict | None = None) -> tuple[list[str], dict]:
    """Per method: s/epoch, end-to-end s, time ratio vs SGD, accuracy; and the summary dict."""
    total = {n: [sum(h["train_seconds"] for h in r.history) for r in rs] for n, rs in runs.items()}
    acc = {n: [_acc(r, test) for r in rs] for n, rs in runs.items()}
    split = "test" if test else "val"
    lines = [
        f"{'method':20s} {'s/epoch':>8s} {'end-to-end s':>12s} {'time ratio vs SGD [95% CI]':>28s} "
        f"{split + ' acc % mean ± std':>22s} {'Δ vs SGD':>9s}"
        + (f" {'mem MB peak/last':>17s}" if memory else "")
        + "  T per epoch (first seed)"
    ]
    ratios = {}
    for name in runs:
        ratios[name] = r = _common.ratio_ci(total[name], total["sgd"])
        a = acc[name]  # NaN for a failed run: it shows in the mean
        sd = float(np.std(a, ddof=1)) if len(a) > 1 else 0.0
        diff = float(np.mean(a) - np.mean(acc["sgd"]))
        t_seq = [int(h.get("transition", 0)) for h in runs[name][0].history]
        mem = ""
        if memory:
            mem = f" {memory[name][0] / 2**20:8.2f}/{memory[name][1] / 2**20:.2f}"
        epochs = len(runs[name][0].history)
        lines.append(
            f"{name:20s} {statistics.mean(total[name]) / epochs:8.2f} "
            f"{statistics.mean(total[name]):12.1f} {r.text():>28s} "
            f"{float(np.mean(a)):12.2f} ± {sd:5.2f} {diff:+9.2f}{mem}  {t_seq}"
        )
    summary = {
        "split": split,
        "total_seconds": total,
        "accuracy_percent": acc,
        "time_ratio": {k: v.as_dict() for k, v in ratios.items()},
        "transition": {
            n: [[int(h.get("transition", 0)) for h in r.history] for r in rs]
            for n, rs in runs.items()
        },
        "gate": {
            n: [[round(h.get("hebbian_gate", math.nan), 3) for h in r.history] for r in rs]
            for n, rs in runs.items()
        },
        "failed": {n: [r.failure for r in rs if not r.ok] for n, rs in runs.items()},
    }
    return lines, summary


def memory_table(runs: dict, methods: dict, arch: str, dataset, batch: int) -> dict:
    cache: dict[tuple, int] = {}
    memory = {}
    for name, (method, options, *_) in methods.items():
        peaks, finals = [], []
        for result in runs[name]:
            ts = [int(h.get("transition", 0)) for h in result.history]
            for t in set(ts):
                if (name, t) not in cache:
                    cache[(name, t)] = memory_probe(arch, dataset, batch, method, options, t)
            peaks.append(max(cache[(name, t)] for t in ts))
            finals.append(cache[(name, ts[-1])])
        memory[name] = (max(peaks), max(finals))
    return memory


def add_goals(goals: _common.GoalReport, workload: str, key: str, summary: dict) -> list[str]:
    acc, ratio = summary["accuracy_percent"], summary["time_ratio"]["local"]
    lines = []
    failed = summary["failed"]["local"]
    # a run stopped as failed did not train to the end of the budget: its time is no end-to-end time
    goals.add(
        workload,
        f"{key} local: end-to-end time <= {TIME_GOAL}x SGD",
        ratio["ratio"],
        TIME_GOAL,
        "<=",
        met=None if not failed else False,
        ratio=ratio,
        failed_runs=failed,
    )
    for other, description, threshold in (
        ("sgd", f"accuracy within {ACC_GOAL_POINTS} points of SGD", -ACC_GOAL_POINTS),
        ("freezeout", "accuracy >= FreezeOut at equal or lower time", 0.0),
        ("frozen", "accuracy >= frozen ablation", 0.0),
    ):
        if any(math.isnan(v) for v in acc["local"] + acc[other]):  # a failed run
            paired = {
                "mean_diff": math.nan,
                "ci_low": math.nan,
                "ci_high": math.nan,
                "p_value": math.nan,
            }
        else:
            paired = _common.paired_diff(acc["local"], acc[other])
        lines.append(
            f"  test accuracy local - {other}: {paired['mean_diff']:+.2f} points [95% CI "
            f"{paired['ci_low']:+.2f}, {paired['ci_high']:+.2f}] (paired p={paired['p_value']:.3g})"
        )
        goals.add(
            workload,
            f"{key} local: {description}",
            paired["mean_diff"],
            threshold,
            ">=",
            paired=paired,
            time_ratio_other=summary["time_ratio"][other]["ratio"],
        )
    return lines


def plot_transitions(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.4), squeeze=False)
    for ax, (key, summary) in zip(axes[0], results.items(), strict=True):
        for name, style in (("local", "-o"), ("freezeout", ":^"), ("prev-default", "--s")):
            if name not in summary["transition"]:
                continue
            for k, seq in enumerate(summary["transition"][name]):
                epochs = range(1, len(seq) + 1)
                ax.plot(epochs, [t + 0.04 * k for t in seq], style, ms=4, label=f"{name} ({k})")
        ax.set_title(f"{key}: T at the end of each epoch", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("T (layers before T leave SGD)")
        ax.legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--search", action="store_true", help="the validation schedule search")
    parser.add_argument("--dataset", default="mnist", help="--search: mnist or fashion-mnist")
    parser.add_argument("--only", default=None, help="--search: comma list of candidate names")
    parser.add_argument("--seeds", type=int, default=3, help="seeds (final 3, search 2)")
    parser.add_argument("--models", default=None, help="comma list of cnn, mlp")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (64)")
    parser.add_argument("--out", type=Path, default=None, help="JSON/PNG directory")
    parser.add_argument("--quick", action="store_true", help="small run: subsets, 2 seeds")
    parser.add_argument("--jobs", type=int, default=2, help="final workloads run in parallel (2)")
    parser.add_argument(
        "--goals-from",
        type=Path,
        default=None,
        help="recompute the goals from a final run's results.json (no training)",
    )
    _common.add_arguments(parser)
    args = parser.parse_args(argv)
    kind = _common.run_kind(args)
    workloads = dict(WORKLOADS)
    if kind != "full":
        args.seeds = 2
        small = {"quick": (2000, 3), "smoke": (256, 3)}[kind]
        workloads = {k: (a, small[0], small[1], lab) for k, (a, _, _, lab) in workloads.items()}
    torch.set_num_threads(1)
    if args.search:
        return search(args, workloads, kind)
    goals = _common.report_from_args("localized", args)
    if args.out is None:
        args.out = goals.goals_dir if kind != "full" else Path("results/localized")
    if args.goals_from is not None:
        return regoal(args.goals_from, goals, workloads, kind)
    plan = [("mnist", "cnn"), ("mnist", "mlp"), ("fashion-mnist", "cnn")]
    if args.models:
        plan = [(d, a) for d, a in plan if a in args.models.split(",")]
    seeds = list(range(args.seeds))
    print(
        f"LoCal+SGD benchmark (final, test set read once per run): batch {args.batch_size}, SGD lr "
        f"{LR} momentum {MOMENTUM} (constant), seeds {seeds}, torch threads 1, validation split "
        f"{N_VAL} (the last training images); chosen configurations: {json.dumps(CHOSEN)}",
        flush=True,
    )
    report, results = [], {}
    jobs = [(name, arch, workloads[arch], seeds, args.batch_size, kind) for name, arch in plan]
    if args.jobs > 1 and len(jobs) > 1:  # workloads in parallel; each interleaves its own methods
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(min(args.jobs, len(jobs)), mp_context=context) as pool:
            done = list(pool.map(final_workload, *zip(*jobs, strict=True)))
    else:
        done = [final_workload(*job) for job in jobs]
    for (name, arch, *_), (label, lines, summary) in zip(jobs, done, strict=True):
        key = f"{name} {arch}"
        lines = [f"== {label}", *lines, *add_goals(goals, label, key, summary)]
        gates = summary["gate"]["local"][0]
        lines.append(f"  local: Hebbian gate at epoch ends (first seed): {gates}")
        report += lines
        results[key] = summary
    print()
    print("\n".join(report))
    reduced = kind != "full"
    plot_path = args.out / ("transition_quick.png" if reduced else "transition.png")
    plot_transitions(results, plot_path)
    write_text(
        args.out / ("results_quick.json" if reduced else "results.json"),
        json.dumps(results, indent=1),
    )
    print(f"T plot: {plot_path}")
    return goals.finish()


def final_workload(
    name: str, arch_key: str, workload: tuple, seeds: list[int], batch: int, kind: str
) -> tuple[str, list[str], dict]:
    """One final workload (all its methods and seeds, interleaved): label, table, summary."""
    torch.set_num_threads(1)
    arch, n_train, epochs, _ = workload
    dataset = _load(name, n_train, kind)
    label = _label(name, workload, kind)
    print(f"running {label}", flush=True)
    methods = final_methods(name, arch)
    runs = run_workload(methods, dataset, arch, epochs, seeds, batch, test=True)
    memory = memory_table(runs, methods, arch, dataset, batch)
    lines, summary = table(runs, test=True, memory=memory)
    summary["memory_bytes_peak_and_last_epoch"] = memory
    summary["configs"] = {k: list(v) for k, v in methods.items()}
    return label, lines, summary


def _label(name: str, workload: tuple, kind: str) -> str:
    _, n_train, epochs, desc = workload
    n_val, n_test = (500, 500) if kind == "smoke" else (N_VAL, 10_000)
    return f"{name} {desc}, {n_train} train / {n_val} val / {n_test} test, {epochs} epochs"


def regoal(path: Path, goals: _common.GoalReport, workloads: dict, kind: str) -> int:
    """The goals of a finished final run, recomputed from its saved summaries."""
    results = json.loads(Path(path).read_text())
    print(f"goals recomputed from {path} (no training)")
    for key, summary in results.items():
        name, arch = key.split()
        lines = add_goals(goals, _label(name, workloads[arch], kind), key, summary)
        print(f"== {key}\n" + "\n".join(lines))
    return goals.finish()


def _load(name: str, n_train: int, kind: str):
    full = load_dataset(name, progress=False).split_validation(N_VAL)
    if kind == "smoke":
        full = full.subset(n_train, 500)
        from dataclasses import replace

        return replace(full, x_val=full.x_val[:500], y_val=full.y_val[:500])
    return full.subset(n_train)


def search_summary(out_dir: Path, arch: str = "cnn") -> list[str]:
    """One table over the saved searches of ``arch``: per candidate, each dataset's validation
    accuracy minus SGD's (mean over seeds) and the time ratio pooled over all datasets' seeds (a
    schedule's cost does not depend on the data, so pooling halves the noise of the shared machine)."""
    saved = {}
    for name in ("mnist", "fashion-mnist"):
        path = out_dir / f"search_{name}.json"
        if path.exists() and arch in json.loads(path.read_text()):
            saved[name] = json.loads(path.read_text())[arch]
    if not saved:
        return []
    names = list(next(iter(saved.values()))["accuracy_percent"])
    lines = [
        f"{arch}: validation accuracy − SGD's (points, mean over seeds; SGD's own mean ± std) and the "
        "time ratio vs SGD pooled over every seed of every dataset (geometric mean [95% CI])",
        f"{'candidate':26s} "
        + " ".join(f"{n:>16s}" for n in saved)
        + f" {'time ratio (pooled)':>28s}",
    ]
    for cand in names:
        cells, ratios = [], []
        for data in saved.values():
            acc = data["accuracy_percent"].get(cand)
            if acc is None:
                cells.append(f"{'-':>16s}")
                continue
            sgd = data["accuracy_percent"]["sgd"]
            if cand == "sgd":
                cells.append(f"{np.mean(sgd):9.2f} ± {np.std(sgd, ddof=1):4.2f}")
            else:
                cells.append(f"{float(np.mean(acc) - np.mean(sgd)):+16.2f}")
            ratios += data["time_ratio"][cand]["ratios"]
        pooled = _common.ratio_ci(ratios, [1.0] * len(ratios)) if ratios else None
        lines.append(f"{cand:26s} " + " ".join(cells) + f" {pooled.text() if pooled else '-':>28s}")
    return lines


def search(args, workloads: dict, kind: str) -> int:
    """Validation-only search (the test set is never evaluated)."""
    out_dir = args.out or Path("results/localized")
    seeds = list(range(SEARCH_SEED0, SEARCH_SEED0 + (2 if args.seeds == 3 else args.seeds)))
    archs = (args.models or "cnn,mlp").split(",")
    suffix = "" if kind == "full" else f"_{kind}"
    path = out_dir / f"search_{args.dataset}{suffix}.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    for arch in archs:
        _, n_train, epochs, desc = workloads[arch]
        dataset = _load(args.dataset, n_train, kind).without_test()
        candidates = search_candidates(arch)
        if args.only:
            wanted = set(args.only.split(",")) | {"sgd"}
            candidates = {k: v for k, v in candidates.items() if k in wanted}
        label = (
            f"{args.dataset} {desc}, {dataset.n_train} train / {dataset.n_val} val, {epochs} "
            f"epochs, seeds {seeds} (validation only)"
        )
        print(f"searching {label}", flush=True)
        runs = search_workload(candidates, dataset, arch, epochs, seeds, args.batch_size)
        lines, summary = table(runs, test=False)
        print(f"== {label}\n" + "\n".join(lines), flush=True)
        summary["label"] = label
        summary["configs"] = {k: list(v) for k, v in candidates.items()}
        previous = saved.get(arch)
        if args.only and previous:  # merge a partial search into the saved one
            # each candidate keeps the time ratio against the SGD runs interleaved with it
            fields = ("total_seconds", "accuracy_percent", "time_ratio", "transition", "gate")
            for field in (*fields, "failed", "configs"):
                previous[field].update(summary[field])
            summary = previous
        saved[arch] = summary
        write_text(path, json.dumps(saved, indent=1))
    print(f"search results: {path}")
    for arch in archs:
        print("\n".join(search_summary(out_dir, arch)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
