"""SigProp vs backprop (Adam, same architecture) on MNIST: accuracy, step time, official step, memory.

Protocol (every choice is made on a validation split, the test set is read once per final run):

* **Data.** MNIST; the last 10 000 training images are the validation split, the first 50 000 the
  training set; the 10 000 test images are evaluated once, after the last epoch of a final run.
* **Tuning** (``--tune``): the same grid for SigProp (its defaults: the official code's choices) and
  for backprop Adam on the same architecture, one seed (``TUNE_SEED``, not one of the final seeds):
  MLP 784-512-512-10, ``lr`` in ``LRS`` x schedule constant/cosine, ``MLP_EPOCHS`` epochs; CNN (the
  harness ``cnn``, width 16, depth 2: two VGG blocks of two convs + Linear(128)), ``lr`` in ``LRS``,
  cosine, ``CNN_EPOCHS`` epochs. The setting with the best final-epoch validation accuracy is
  selected. Then, at SigProp's selected setting, the options that differ from the official code
  (ours) are measured on the validation split as ablations: ``signal_lr = lr/10``, ``norm`` and,
  for the CNN, ``loss_before_pool=False`` (MLP ablations over the ``--seeds`` final seeds, CNN ones
  on the tuning seed). Written to ``results/benchmarks/sigprop_tuning.json``; the selection is what
  a later final run uses.
* **Final** (default): ``--seeds`` seeds (MLP) / ``--cnn-seeds`` (CNN) of each method at its
  selected setting (read from the tuning file; the built-in ``DEFAULT_SELECTION`` if there is none);
  test accuracy mean ± std (sample std) and the paired difference. SigProp's nearest-class-signal
  test accuracy is reported too (the output layer is the goal's).
* **Step time**: one process, torch threads 1, the same real MNIST batches (batch 128); a training
  step (zero_grad, loss, backward, optimizer step) of the harness methods (SigProp at its final
  options vs Adam on the harness model), repeated in blocks whose order alternates
  (``_common.interleave``); ratio = geometric mean of the per-block ratios with a t-interval on the
  log scale (``_common.ratio_ci``). ``--official PATH`` (a checkout of amassivek/signalpropagation,
  e.g. from ``git archive``): the same MLP built from the official package's components (signal
  generator ``ProjectionContextInput`` with the ``lp`` projection and the first layer as its input
  module, ``propagators.Loss`` per hidden layer, ``propagators.Identity`` output, loss
  ``v14_input_target_max_rand``, one Adam per module at one learning rate, as in its examples) is
  timed interleaved with ours, after checking that its per-layer losses equal ours on shared weights.
* **Memory**: MLP depth 2, 4, 8, 16 (width 512, batch 128), each in a fresh subprocess: RSS
  high-water rise (VmHWM over the RSS after allocating gradients and Adam state, /proc/self/clear_refs)
  during three training steps; glibc told to mmap blocks >= 64 KiB so freed memory leaves the RSS.

Goals: MLP test acc >= 97.5 %, CNN >= 99.0 % (mean over seeds); step <= 1.2x backprop (MLP and CNN);
MLP step <= 0.8x the official implementation's (``NOT MEASURED`` without ``--official``: not a goal
line, listed under ``config.not_measured`` in the goals file); memory growth 2->16 <= 0.25x backprop's.
Exit status 1 if a goal is missed (``--no-fail``: 0).

Run: ``python benchmarks/sigprop.py --tune --workers 2`` then
``python benchmarks/sigprop.py --workers 2 [--official PATH]``; ``--smoke --no-fail``: tiny data,
1 epoch, every part exercised in about a minute.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import _common
import torch
import torch.nn.functional as F
from torch import nn

from advanced_optimizers.bench.data import load_dataset
from advanced_optimizers.bench.methods import Batch, EpochInfo, Setup, get_method
from advanced_optimizers.bench.models import ModelSpec
from advanced_optimizers.bench.stats import mean_ci
from advanced_optimizers.bench.train import RunConfig, read_checkpoint, train_run

MLP_GOAL, CNN_GOAL, TIME_GOAL, OFFICIAL_GOAL, MEMORY_GOAL = 0.975, 0.990, 1.2, 0.8, 0.25
N_VAL, BATCH = 10_000, 128
LRS = (5e-4, 1e-3, 2e-3)
MLP_EPOCHS, CNN_EPOCHS = 20, 10
TUNE_SEED = 100
ARCHS = {"mlp": {"width": 512, "depth": 2}, "cnn": {"width": 16, "depth": 2}}
METHODS = {"adam": "adam", "sigprop": "sigprop-adam"}
# final-run entries: "sigprop" = SigProp at its validation-selected options; "sigprop_defaults" (only
# when those differ from the defaults) = SigProp at its defaults, the official choices
HARNESS = {**METHODS, "sigprop_defaults": "sigprop-adam"}
# Options that differ from the official code's, measured at SigProp's selected lr/schedule.
VARIANTS = {
    "mlp": [{"signal_lr": "lr/10"}, {"norm": "layer"}],
    "cnn": [
        {"loss_before_pool": False},
        {"norm": "instance"},
        {"norm": "layer"},
        {"signal_lr": "lr/10"},
        {"loss": "topk"},
        # the official run script's choices we support (examples.sh: instance norm, LeakyReLU, top-k)
        {"loss": "topk", "norm": "instance", "activation": "leaky_relu"},
        {"norm": "instance", "loss_before_pool": False},
        {"norm": "instance", "loss_before_pool": False, "loss": "topk"},
    ],
}
TUNING_FILE = _common.RESULTS_DIR / "sigprop_tuning.json"
# Used only when there is no tuning file: SigProp's official defaults and the usual Adam setting.
DEFAULT_SELECTION = {
    arch: {name: {"lr": 1e-3, "schedule": "cosine", "options": {}} for name in METHODS}
    for arch in ARCHS
}
DEPTHS = (2, 4, 8, 16)
MEM_WIDTH = 512
# glibc: serve every block >= 64 KiB by mmap and return it on free (static threshold), so the resident
# size follows live memory and the high-water mark sees the step's true peak.
CHILD_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


# ------------------------------------------------------------------------------------------------
# Training runs (in worker processes)
# ------------------------------------------------------------------------------------------------
_DATA: dict[tuple, Any] = {}


def dataset_for(kind: str):
    """MNIST with its validation split (train 50k / val 10k / test 10k; reduced for smoke/quick)."""
    if kind not in _DATA:
        data = load_dataset("mnist", progress=False)
        if kind == "smoke":
            data = data.subset(1024, 500).split_validation(256)
        elif kind == "quick":
            data = data.subset(12_000, 2000).split_validation(2000)
        else:
            data = data.split_validation(N_VAL)
        _DATA[kind] = data
    return _DATA[kind]


def train_job(job: dict[str, Any]) -> dict[str, Any]:
    """One training run; returns per-epoch validation accuracy and, for a final run, test accuracy."""
    torch.set_num_threads(1)
    dataset = dataset_for(job["kind"])
    config = RunConfig(
        HARNESS[job["method"]],
        options=dict(job["options"]),
        arch=job["arch"],
        width=ARCHS[job["arch"]]["width"],
        depth=ARCHS[job["arch"]]["depth"],
        epochs=job["epochs"],
        batch_size=BATCH,
        lr=job["lr"],
        schedule=job["schedule"],
        seed=job["seed"],
    )
    final = job["final"]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "run.pt" if final and job["method"] != "adam" else None
        start = time.perf_counter()
        result = train_run(config, dataset, checkpoint=ckpt, evaluate_test=final)
        out = {
            **job,
            "status": result.status,
            "val_acc": [h.get("val_acc") for h in result.history],
            "train_seconds": sum(h["train_seconds"] for h in result.history),
            "wall_seconds": time.perf_counter() - start,
        }
        if final and result.ok:
            out["test_acc"] = result.history[-1]["test_acc"]
            if ckpt is not None:
                out["signal_test_acc"] = signal_test_accuracy(ckpt, config, dataset)
    return out


def signal_test_accuracy(checkpoint: Path, config: RunConfig, dataset) -> float:
    """Nearest-class-signal test accuracy of the final SigProp model in ``checkpoint``."""
    state = read_checkpoint(checkpoint)
    spec = ModelSpec(
        config.arch, dataset.input_shape, dataset.num_classes, config.width, config.depth
    )
    model = get_method(config.method, **config.options).build_model(spec)
    model.load_state_dict(state["model"])
    model.eval()
    hits = sum(
        (model.predict_by_signal(b.x).argmax(1) == b.y).sum().item()
        for b in dataset.test_batches(1000)
    )
    return hits / dataset.n_test


def run_jobs(jobs: list[dict[str, Any]], workers: int) -> list[dict[str, Any]]:
    """Run ``jobs`` (``workers`` processes at a time), printing one line per finished run."""

    def show(r: dict[str, Any]) -> None:
        val = r["val_acc"][-1] if r["val_acc"] else math.nan
        test = f" test {r['test_acc']:.4f}" if "test_acc" in r else ""
        sig = f" signal-test {r['signal_test_acc']:.4f}" if "signal_test_acc" in r else ""
        print(
            f"  {r['arch']} {r['method']:16s} lr {r['lr']:.0e} {r['schedule']:8s} "
            f"{_options_text(r['options']):36s} seed {r['seed']:3d}  val {val:.4f}{test}{sig}  "
            f"[{r['status']}, {r['wall_seconds'] / 60:.1f} min]",
            flush=True,
        )

    if workers <= 1:
        out = []
        for job in jobs:
            out.append(train_job(job))
            show(out[-1])
        return out
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    with ProcessPoolExecutor(workers) as pool:
        futures = {pool.submit(train_job, job): k for k, job in enumerate(jobs)}
        from concurrent.futures import as_completed

        for future in as_completed(futures):
            results[futures[future]] = future.result()
            show(results[futures[future]])
    return [r for r in results if r is not None]


def _options_text(options: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(options.items())) or "(defaults)"


def job(
    kind: str,
    arch: str,
    method: str,
    lr: float,
    schedule: str,
    seed: int,
    *,
    epochs: int,
    final: bool,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "kind": kind, "arch": arch, "method": method, "lr": lr, "schedule": schedule,
        "seed": seed, "epochs": epochs, "final": final, "options": options or {},
    }  # fmt: skip


# ------------------------------------------------------------------------------------------------
# Tuning on the validation split
# ------------------------------------------------------------------------------------------------
def tune(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    epochs = {"mlp": args.epochs, "cnn": args.cnn_epochs}
    grid = {"mlp": [(lr, s) for lr in LRS for s in ("constant", "cosine")],
            "cnn": [(lr, "cosine") for lr in LRS]}  # fmt: skip
    jobs = [
        job(kind, arch, method, lr, schedule, TUNE_SEED, epochs=epochs[arch], final=False)
        for arch in ARCHS
        for method in METHODS
        for lr, schedule in grid[arch]
    ]
    print(f"Grid on the validation split ({len(jobs)} runs, seed {TUNE_SEED}):", flush=True)
    runs = run_jobs(jobs, args.workers)
    selection: dict[str, dict[str, Any]] = {}
    for arch in ARCHS:
        selection[arch] = {}
        for method in METHODS:
            mine = [r for r in runs if r["arch"] == arch and r["method"] == method and r["val_acc"]]
            best = max(mine, key=lambda r: r["val_acc"][-1])
            selection[arch][method] = {
                "lr": best["lr"], "schedule": best["schedule"], "options": {},
                "val_acc": best["val_acc"][-1],
            }  # fmt: skip
    ablation_jobs = [
        job(kind, arch, "sigprop", selection[arch]["sigprop"]["lr"],
            selection[arch]["sigprop"]["schedule"], seed, epochs=epochs[arch], final=False,
            options=options)
        for arch in ARCHS
        for options in [{}, *(resolve_variant(v, selection[arch]["sigprop"]["lr"])
                              for v in VARIANTS[arch])]
        for seed in (range(args.seeds) if arch == "mlp" else [TUNE_SEED])
        if options or arch == "mlp"  # the CNN defaults at the tuning seed are the grid's run
    ]  # fmt: skip
    print(f"\nAblations at SigProp's selected setting ({len(ablation_jobs)} runs):", flush=True)
    ablations = run_jobs(ablation_jobs, args.workers)
    select_options(selection, runs, ablations)
    print_tuning(runs, ablations, selection)
    return {"grid": runs, "ablations": ablations, "selection": selection,
            "protocol": {"n_val": N_VAL, "seed": TUNE_SEED, "lrs": LRS, "epochs": epochs,
                         "variants": VARIANTS}}  # fmt: skip


def resolve_variant(variant: dict[str, Any], lr: float) -> dict[str, Any]:
    return {k: (lr / 10 if v == "lr/10" else v) for k, v in variant.items()}


def variant_scores(arch: str, selected: dict, runs: list[dict], ablations: list[dict]) -> dict:
    """Mean last-epoch validation accuracy of SigProp per option set, at its selected lr/schedule
    (the defaults: the ablation runs with no options, else the grid run of the tuning seed)."""

    def at_selected(r: dict) -> bool:
        return (r["arch"] == arch and r["method"] == "sigprop" and r["lr"] == selected["lr"]
                and r["schedule"] == selected["schedule"] and bool(r["val_acc"]))  # fmt: skip

    scores: dict[str, list[float]] = {}
    options_of: dict[str, dict] = {}
    for r in ablations:
        if at_selected(r):
            key = _options_text(r["options"])
            scores.setdefault(key, []).append(r["val_acc"][-1])
            options_of[key] = r["options"]
    if "(defaults)" not in scores:
        scores["(defaults)"] = [r["val_acc"][-1] for r in runs if at_selected(r)]
        options_of["(defaults)"] = {}
    return {k: (statistics.mean(v), len(v), options_of[k]) for k, v in scores.items() if v}


def select_options(selection: dict, runs: list[dict], ablations: list[dict]) -> None:
    """SigProp's final options: the best mean validation accuracy among the defaults and the
    variants (ties: the defaults); when not the defaults, the defaults are run too."""
    for arch in ARCHS:
        chosen = selection[arch]["sigprop"]
        scores = variant_scores(arch, chosen, runs, ablations)
        best = max(scores, key=lambda k: (scores[k][0], k == "(defaults)"))
        if best != "(defaults)":
            selection[arch]["sigprop_defaults"] = {**chosen, "options": {}}
            selection[arch]["sigprop"] = {**chosen, "options": scores[best][2],
                                          "val_acc": scores[best][0]}  # fmt: skip


def print_tuning(runs: list[dict], ablations: list[dict], selection: dict) -> None:
    print("\nValidation accuracy at the last epoch (grid, one seed):")
    for arch in ARCHS:
        for method in METHODS:
            cells = [
                f"lr {r['lr']:.0e} {r['schedule']}: {100 * r['val_acc'][-1]:.2f}"
                for r in runs
                if r["arch"] == arch and r["method"] == method and r["val_acc"]
            ]
            chosen = selection[arch].get(f"{method}_defaults", selection[arch][method])
            print(f"  {arch} {method:8s} " + "; ".join(cells))
            print(f"  {'':3s} {'':8s} selected: lr {chosen['lr']:.0e} {chosen['schedule']}")
    print("\nSigProp options at its selected lr/schedule (validation accuracy, mean over seeds; "
          "MLP seeds 0-2, CNN the tuning seed):")  # fmt: skip
    for arch in ARCHS:
        base = selection[arch].get("sigprop_defaults", selection[arch]["sigprop"])
        scores = variant_scores(arch, base, runs, ablations)
        for key, (mean, n, _) in sorted(scores.items(), key=lambda kv: -kv[1][0]):
            print(f"  {arch} {key:60s} {100 * mean:.2f} (n={n})")
        print(f"  {arch} selected: {_options_text(selection[arch]['sigprop']['options'])}")


# ------------------------------------------------------------------------------------------------
# Step timing
# ------------------------------------------------------------------------------------------------
def harness_stepper(name: str, arch: str, options: dict[str, Any], batches: list[Batch]):
    """A block of training steps of a harness method (see ``_common.harness_stepper``)."""
    spec = ModelSpec(arch, (1, 28, 28), 10, ARCHS[arch]["width"], ARCHS[arch]["depth"])
    return _common.harness_stepper(name, spec, options, batches)


def time_blocks(runs: dict[str, Callable[[], None]], reps: int, warmup: int) -> dict[str, list]:
    got = _common.interleave({k: _common.timed(f) for k, f in runs.items()}, warmup + reps)
    return {k: v[warmup:] for k, v in got.items()}


def official_mlp(path: str, widths: tuple[int, ...] = (512, 512), lr: float = 1e-3):
    """The MLP 784-512-512-10 built from the official package's components (see the docstring)."""
    if path not in sys.path:
        sys.path.insert(0, path)
    import sigprop  # the official package, from the checkout at ``path``

    def adam(module: nn.Module):  # its examples: one Adam per module, every module at ``lr``
        params = list(module.parameters())
        return torch.optim.Adam(params, lr=lr) if params else None

    manager = sigprop.managers.Preset(
        sigprop.models.Forward, sigprop.propagators.Loss, sigprop.propagators.signals.Loss, adam
    )
    loss = sigprop.loss.v14_input_target_max_rand
    # its signal_modules_lp projection; the input module is the first hidden layer
    projection = nn.Sequential(
        nn.Linear(10, widths[0], bias=False), nn.LayerNorm(widths[0]), nn.ReLU()
    )
    first = nn.Sequential(nn.Flatten(), nn.Linear(784, widths[0]), nn.ReLU(inplace=True))
    generator = sigprop.signals.ProjectionContextInput(projection, first, (10,), (widths[0],))
    manager.config_propagator(loss=loss)
    manager.set_signal(nn.Sequential(sigprop.signals.LabelNumberToOnehot(10), generator), loss=loss)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList(
                manager.add_propagator(nn.Sequential(nn.Linear(a, b), nn.ReLU(inplace=True)))
                for a, b in itertools.pairwise(widths)
            )
            self.out = manager.add_propagator(
                nn.Linear(widths[-1], 10), sigprop.propagators.Identity
            )

        def forward(self, x: Any) -> Any:
            for layer in self.layers:
                x = layer(x)
            return self.out(x)

    net = Net()
    model = manager.set_model(net)
    parts = {"projection": projection, "first": first, "layers": net.layers, "out": net.out}
    return model, torch.optim.Adam(model.parameters(), lr=lr), parts, loss


def check_official_losses(path: str, batch: Batch) -> float:
    """Max |official - ours| over the per-layer local losses and the output CE, on shared weights."""
    import copy

    _, ours = harness_stepper(METHODS["sigprop"], "mlp", {}, [batch])
    model, _, parts, loss_fn = official_mlp(path)
    with torch.no_grad():  # our weights into the official modules
        parts["projection"].load_state_dict(ours.signal.state_dict())
        parts["first"][1].load_state_dict(ours.blocks[0][0].state_dict())
        for layer, block in zip(parts["layers"], list(ours.blocks)[1:], strict=True):
            layer.module[0].load_state_dict(block[0].state_dict())
        parts["out"].module.load_state_dict(ours.output.state_dict())
    recorded: list[float] = []

    def recording(*args: Any) -> torch.Tensor:
        value = loss_fn(*args)
        recorded.append(float(value))
        return value

    for propagator in [model.signal, *parts["layers"]]:
        propagator.loss, propagator.optimizer = recording, None  # losses only, no update
    model.train()
    x, y = batch.x, batch.y
    official_ce = float(F.cross_entropy(model((x, y)), y))
    ours_model = copy.deepcopy(ours)
    total = float(ours_model.training_loss(x, y, layerwise_backward=False))
    ours_ce = float(F.cross_entropy(ours_model(x), y))
    return max(abs(official_ce - ours_ce), abs((total - ours_ce) - sum(recorded)))


def step_timing(args: argparse.Namespace, final: dict, goals: _common.GoalReport) -> None:
    print("\nStep time (one process, torch threads 1, real MNIST batches of 128; blocks of steps "
          "in alternating order)")  # fmt: skip
    batches = _common.mnist_batches(20, BATCH)
    for arch, steps, reps in (("mlp", 20, args.time_reps), ("cnn", 3, args.time_reps)):
        ours, _ = harness_stepper(METHODS["sigprop"], arch, final[arch]["sigprop"]["options"],
                                  batches[:steps])  # fmt: skip
        base, _ = harness_stepper(METHODS["adam"], arch, {}, batches[:steps])
        runs = {"adam": base, "sigprop": ours}
        if "sigprop_defaults" in final[arch]:
            runs["sigprop_defaults"], _ = harness_stepper(METHODS["sigprop"], arch, {},
                                                          batches[:steps])  # fmt: skip
        official_note = None
        if arch == "mlp" and args.official:
            diff = check_official_losses(str(args.official), batches[0])
            print(f"  official MLP built from {args.official}: |official - ours| losses on shared "
                  f"weights {diff:.2e}")  # fmt: skip
            model, opt, _, _ = official_mlp(str(args.official))

            def official_run(model=model, opt=opt, batches=batches[:steps]) -> None:
                model.train()
                for batch in batches:  # its Runner.train_batch: local updates inside the forward
                    out = model((batch.x, batch.y))
                    loss = F.cross_entropy(out, batch.y)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()

            runs["official"] = official_run
            official_note = diff
        secs = time_blocks(runs, reps, warmup=2)
        per_step = {k: 1e3 * statistics.median(v) / steps for k, v in secs.items()}
        ratio = _common.ratio_ci(secs["sigprop"], secs["adam"])
        print(f"  {arch}: ms/step " + ", ".join(f"{k} {v:.2f}" for k, v in per_step.items())
              + f"; sigprop/backprop {ratio.text(3)} (n={ratio.n} blocks of {steps} steps)")  # fmt: skip
        extra = {}
        if "sigprop_defaults" in secs:
            extra = _common.ratio_ci(secs["sigprop_defaults"], secs["adam"]).as_dict()
            print(f"  {arch}: sigprop at its defaults / backprop "
                  f"{_common.ratio_ci(secs['sigprop_defaults'], secs['adam']).text(3)}")  # fmt: skip
        goals.add(
            f"MNIST {arch} ({'784-512-512-10' if arch == 'mlp' else 'harness cnn width 16 depth 2'}),"
            f" batch {BATCH}, {steps} steps x {reps} interleaved blocks, torch threads 1",
            f"{arch.upper()} SigProp step <= {TIME_GOAL}x backprop (Adam, same layers): "
            f"{ratio.text(3)}",
            ratio.ratio, TIME_GOAL, "<=", ratio=ratio.as_dict(), ms_per_step=per_step,
            sigprop_options=final[arch]["sigprop"]["options"], defaults_ratio=extra or None,
        )  # fmt: skip
        if "official" in secs:
            off = _common.ratio_ci(secs["sigprop"], secs["official"])
            print(f"  {arch}: sigprop/official {off.text(3)}")
            goals.add(
                f"MNIST MLP 784-512-512-10, batch {BATCH}, {steps} steps x {reps} interleaved "
                "blocks, torch threads 1; official = amassivek/signalpropagation components",
                f"MLP SigProp step <= {OFFICIAL_GOAL}x the official implementation's: "
                f"{off.text(3)}",
                off.ratio, OFFICIAL_GOAL, "<=", ratio=off.as_dict(), ms_per_step=per_step,
                official_checkout=str(args.official), loss_check_max_abs_diff=official_note,
            )  # fmt: skip
    if not args.official:
        note = (f"MLP SigProp step <= {OFFICIAL_GOAL}x the official implementation's: not "
                "measured (no --official PATH to a checkout of amassivek/signalpropagation)")  # fmt: skip
        print(f"  NOT MEASURED: {note}")
        goals.config.setdefault("not_measured", []).append(note)


# ------------------------------------------------------------------------------------------------
# Memory (fresh subprocesses)
# ------------------------------------------------------------------------------------------------
def proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(method_name: str, depth: int, width: int, keep_grads: bool = True) -> None:
    """In a fresh process: print the RSS high-water increase (KiB) of three training steps.

    ``keep_grads``: gradients allocated before the baseline and zeroed in place each step
    (``zero_grad(set_to_none=False)``), so only transient memory is counted; ``False``: torch's
    default ``zero_grad()`` (the gradients are allocated during the step and counted).
    """
    torch.set_num_threads(1)
    torch.manual_seed(0)
    method = get_method(method_name)
    model = method.build_model(ModelSpec("mlp", (1, 28, 28), 10, width, depth))
    setup = Setup(lr=1e-3, epochs=1, steps_per_epoch=3, n_train=3 * BATCH, num_classes=10)
    optimizer = method.build_optimizer(model, setup)
    for p in model.parameters():  # allocate gradients and Adam state without an activation peak
        p.grad = torch.zeros_like(p)
    optimizer.step()
    if not keep_grads:
        optimizer.zero_grad(set_to_none=True)
    x, y = torch.randn(BATCH, 1, 28, 28), torch.randint(0, 10, (BATCH,))
    batch, info = Batch(x, y, torch.arange(BATCH)), EpochInfo(1, 1)
    method.start_epoch(model, optimizer, info)
    Path("/proc/self/clear_refs").write_text("5")
    base = proc_status_kib("VmRSS")
    for _ in range(3):
        optimizer.zero_grad(set_to_none=not keep_grads)
        method.batch_loss(model, optimizer, batch, info).backward()
        optimizer.step()
    print(json.dumps({"delta_kib": proc_status_kib("VmHWM") - base}))


def measure_memory(method_name: str, depth: int, reps: int, keep_grads: bool = True) -> float:
    values = []
    for _ in range(reps):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", method_name, str(depth), str(MEM_WIDTH),
             str(int(keep_grads))],
            capture_output=True, text=True, check=True, env=CHILD_ENV,
        )  # fmt: skip
        values.append(json.loads(out.stdout.strip().splitlines()[-1])["delta_kib"] / 1024)
    return statistics.median(values)


def memory(args: argparse.Namespace, depths: tuple[int, ...], goals: _common.GoalReport) -> None:
    print(f"\nPeak training memory above the steady state (VmHWM rise over RSS, MiB; median of "
          f"{args.mem_reps} fresh processes), MLP width {MEM_WIDTH}, batch {BATCH}; A: gradients "
          "preallocated, zero_grad(set_to_none=False) (transient memory only; the goal's); "
          "B: torch's default zero_grad() (gradients counted)")  # fmt: skip
    print(f"  {'depth':>5} {'adam A':>8} {'sigprop A':>10} {'adam B':>8} {'sigprop B':>10}")
    mem: dict[str, dict[int, float]] = {name: {} for name in METHODS}
    default: dict[str, dict[int, float]] = {name: {} for name in METHODS}
    for depth in depths:
        for name in METHODS:
            mem[name][depth] = measure_memory(METHODS[name], depth, args.mem_reps)
            default[name][depth] = measure_memory(METHODS[name], depth, args.mem_reps, False)
        print(f"  {depth:>5} {mem['adam'][depth]:>8.2f} {mem['sigprop'][depth]:>10.2f} "
              f"{default['adam'][depth]:>8.2f} {default['sigprop'][depth]:>10.2f}", flush=True)  # fmt: skip
    growth = {n: mem[n][depths[-1]] - mem[n][depths[0]] for n in mem}
    growth_b = {n: default[n][depths[-1]] - default[n][depths[0]] for n in default}
    ratio = growth["sigprop"] / growth["adam"] if growth["adam"] > 0 else math.inf
    print(f"  growth depth {depths[0]}->{depths[-1]}: A adam {growth['adam']:.2f} MiB, sigprop "
          f"{growth['sigprop']:.2f} MiB, ratio {ratio:.3f}; B adam {growth_b['adam']:.2f} MiB, "
          f"sigprop {growth_b['sigprop']:.2f} MiB")  # fmt: skip
    goals.add(
        f"MLP width {MEM_WIDTH}, batch {BATCH}, depths {list(depths)}, median of {args.mem_reps} "
        "fresh processes",
        f"memory growth {depths[0]}->{depths[-1]} <= {MEMORY_GOAL}x backprop's: {ratio:.3f} "
        f"({growth['sigprop']:.2f} / {growth['adam']:.2f} MiB)",
        ratio, MEMORY_GOAL, "<=", peak_rise_mib=mem, growth_mib=growth,
        default_zero_grad_peak_rise_mib=default, default_zero_grad_growth_mib=growth_b,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------
# Final runs and the report
# ------------------------------------------------------------------------------------------------
def load_selection(kind: str) -> tuple[dict, str]:
    if kind == "full" and TUNING_FILE.exists():
        data = json.loads(TUNING_FILE.read_text())
        return data["selection"], f"validation-selected ({TUNING_FILE.relative_to(_common.ROOT)})"
    return DEFAULT_SELECTION, "built-in defaults (no tuning file)"


def fmt(values: list[float]) -> str:
    if not values:
        return "none (every run failed)"
    s = mean_ci(values)
    spread = f" ± {100 * s['std']:.2f}" if s["n"] > 1 else ""
    return (
        f"{100 * s['mean']:.2f}{spread}% (n={s['n']}; "
        + ", ".join(f"{100 * v:.2f}" for v in values)
        + ")"
    )


def final_runs(args: argparse.Namespace, kind: str, selection: dict, goals) -> None:
    epochs = {"mlp": args.epochs, "cnn": args.cnn_epochs}
    seeds = {"mlp": args.seeds, "cnn": args.cnn_seeds}
    jobs = [
        job(kind, arch, method, s["lr"], s["schedule"], seed, epochs=epochs[arch], final=True,
            options=s["options"])
        for arch in ARCHS
        for seed in range(seeds[arch])
        for method, s in selection[arch].items()
    ]  # fmt: skip
    print(f"Final runs ({len(jobs)}): train 50k, test once after the last epoch", flush=True)
    runs = run_jobs(jobs, args.workers)
    for arch, goal in (("mlp", MLP_GOAL), ("cnn", CNN_GOAL)):
        label = "MLP 784-512-512-10" if arch == "mlp" else "CNN (harness cnn, width 16, depth 2)"
        keys = list(selection[arch])
        res = {m: sorted((r for r in runs if r["arch"] == arch and r["method"] == m
                          and "test_acc" in r), key=lambda r: r["seed"]) for m in keys}  # fmt: skip
        failed = [r for r in runs if r["arch"] == arch and r["status"] != "ok"]
        print(f"\n{label}, {epochs[arch]} epochs, seeds 0..{seeds[arch] - 1}; test accuracy "
              "mean ± std (per seed)")  # fmt: skip
        for r in failed:
            print(f"  FAILED run: {r['method']} seed {r['seed']} ({r['status']}; no test accuracy)")
        b = [r["test_acc"] for r in res["adam"]]
        summary: dict[str, Any] = {}
        for m in keys:
            s = selection[arch][m]
            acc = [r["test_acc"] for r in res[m]]
            print(f"  {m:16s} lr {s['lr']:.0e} {s['schedule']} {_options_text(s['options'])}: "
                  f"{fmt(acc)}")  # fmt: skip
            if m == "adam":
                continue
            sig = [r["signal_test_acc"] for r in res[m]]
            diff = _common.paired_diff(acc, b) if len(acc) == len(b) and len(acc) > 1 else None
            print(f"  {'':16s} nearest-class-signal {fmt(sig)}")
            if diff is not None:
                print(f"  {'':16s} minus adam {100 * diff['mean_diff']:+.2f} pp "
                      f"[{100 * diff['ci_low']:+.2f}, {100 * diff['ci_high']:+.2f}] "
                      f"(paired t p={diff['p_value']:.3g})")  # fmt: skip
            summary[m] = {"acc": acc, "signal_acc": sig, "minus_adam": diff}
        a = summary["sigprop"]["acc"]
        # a failed SigProp run (stopped at chance or diverged) makes the goal missed
        mean = statistics.mean(a) if len(a) == seeds[arch] else math.nan
        goals.add(
            f"MNIST (train 50k; val 10k for every choice; test 10k once), {label}, "
            f"{epochs[arch]} epochs, {seeds[arch]} seeds, validation-selected settings",
            f"{arch.upper()} SigProp test acc >= {goal:.1%}", mean, goal, ">=",
            sigprop=summary["sigprop"], adam_acc=b, settings=selection[arch],
            sigprop_defaults=summary.get("sigprop_defaults"),
            failed_runs=[(r["method"], r["seed"]) for r in failed],
        )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tune", action="store_true", help="validation grid + ablations")
    parser.add_argument("--seeds", type=int, default=3, help="MLP seeds")
    parser.add_argument("--epochs", type=int, default=MLP_EPOCHS, help="MLP epochs")
    parser.add_argument("--cnn-seeds", type=int, default=3)
    parser.add_argument("--cnn-epochs", type=int, default=CNN_EPOCHS)
    parser.add_argument("--workers", type=int, default=1, help="training runs in parallel")
    parser.add_argument("--time-reps", type=int, default=15, help="interleaved timing blocks")
    parser.add_argument("--mem-reps", type=int, default=3)
    parser.add_argument("--official", type=Path, default=None,
                        help="checkout of amassivek/signalpropagation (time its MLP step)")  # fmt: skip
    parser.add_argument("--skip", nargs="*", default=[], choices=("accuracy", "time", "memory"))
    parser.add_argument("--quick", action="store_true", help="reduced data and epochs")
    parser.add_argument("--memory-child", nargs=4, metavar=("METHOD", "DEPTH", "WIDTH", "KEEP"))
    _common.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.memory_child:
        name, depth, width, keep = args.memory_child
        memory_child(name, int(depth), int(width), bool(int(keep)))
        return 0
    kind = _common.run_kind(args)
    torch.set_num_threads(1)
    depths = DEPTHS
    if kind != "full":
        args.seeds, args.cnn_seeds, args.epochs, args.cnn_epochs = 2, 2, 1, 1
        args.mem_reps, args.time_reps = 1, 3
        depths = (DEPTHS[0], DEPTHS[-1])
    if args.tune:
        result = tune(args, kind)
        out = TUNING_FILE if kind == "full" else Path(tempfile.mkdtemp()) / TUNING_FILE.name
        from advanced_optimizers.bench.atomic import write_json

        write_json(out, {**result, "command": " ".join(["python", *sys.argv])})
        print(f"\ntuning written to {out}")
        return 0
    goals = _common.report_from_args("sigprop", args)
    selection, source = load_selection(kind)
    print(f"Settings: {source}")
    for arch in ARCHS:
        for m, s in selection[arch].items():
            print(
                f"  {arch} {m:16s} lr {s['lr']:.0e} {s['schedule']} {_options_text(s['options'])}"
            )
    if "accuracy" not in args.skip:
        final_runs(args, kind, selection, goals)
    else:
        note = (
            f"MLP test acc >= {100 * MLP_GOAL:.1f} % and CNN test acc >= {100 * CNN_GOAL:.1f} %: "
            "skipped (--skip accuracy); validation accuracies are in sigprop_tuning.txt"
        )
        print(f"NOT MEASURED: {note}")
        goals.config.setdefault("not_measured", []).append(note)
    if "time" not in args.skip:
        step_timing(args, selection, goals)
    if "memory" not in args.skip:
        memory(args, depths, goals)
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())
