"""Gradient Correction (``gc-adam``): step time against Adam and the peers, what its modules learn
on MNIST, and (from the study's results) epochs-to-target against tuned Adam and the best peer.

What the study (``advopt tune`` + ``advopt compare --tuned``) cannot measure, this script does; what
the study does measure, it reads from the study's results instead of re-running it.

(a) **Step time, interleaved.** On the study's two models — the full preset's MLP 784-512-512-10
    (``ModelSpec("mlp", depth=2)``) and the CNN study's ``ModelSpec("cnn", width=8)`` (two VGG
    blocks) — one model and optimizer per method, built through the harness's methods
    (``get_method(name, **options).build_optimizer``, each at its harness default lr), all from the
    same initial weights, take blocks of steps (MLP 20, CNN 10; ``TIMING``) on the same MNIST
    batches (batch 128) in turn, 40 (MLP) / 30 (CNN) rounds; the order rotates by one each round
    (``_common.interleave``), after one warm-up round that is discarded (it also fills GC's
    gradient history). Methods: ``adam``, ``gc-adam`` at the library
    defaults (``difference_decay=0``) and with ``difference_decay=0.9`` (the two values
    ``advopt tune`` searches), and the peers of the report (``nadam``, ``schedulefree-adamw``,
    ``adan``, ``mars``, ``lookahead-adam``). Each figure is the geometric mean of the per-round
    ratios with a 95 % t-interval of the log-ratios (``_common.ratio_ci``). Torch uses one thread.
(b) **Diagnostics on a real run.** ``gc-adam`` (both ``difference_decay`` values, lr 1e-3, constant)
    trains each model for ``--diag-steps`` steps (1200: about three epochs; ``c`` moves by at most
    about ``meta_lr`` per step, so it needs that long) on the MNIST training split (the study's:
    the last 10 000 training images held out), reading the optimizer's own statistics every 200
    steps (``DIAG``): ``GradientCorrectionOptimizer.diagnostics()`` (means over tensors and steps of GC-W's
    squared relative prediction error ``||ĝ_t − g_t||² / ||g_t||²``, the naive predictor's
    ``||g_{t−1} − g_t||² / ||g_t||²``, the cosine of consecutive gradients, and ``c``) and
    ``coefficients()`` (each tensor's predictor weights ``w`` and ``c`` at the window's end). The
    zero predictor scores 1 on that error. Nothing of the predictor is re-implemented here.
(c) **Epochs to target, from the study** (``--study DIR [DIR ...]``: finished ``advopt compare``
    directories, e.g. ``results/mnist-mlp/final results/mnist-cnn/final``). Time to target is the
    harness's own (``advanced_optimizers.bench.profiles.workload_times``, as ``advopt profile
    --time epochs``): the target is the best baseline's median final *validation* accuracy, a
    method's time is the median over all its runs of the first epoch whose validation accuracy
    reaches it (failed or never = ∞). Per workload: gc-adam / adam and gc-adam / the best peer
    (the smallest time among the peers present). Without a finished study directory the goals are
    printed as NOT MEASURED and listed under ``config.not_measured`` in the goals file.

Goals (issue 16.2): epochs to target <= 0.80x tuned Adam's and <= the best peer's (per workload,
from the study); step time <= 1.25x Adam's (both GC settings, both models). MET/MISSED lines go to
``results/benchmarks/gradient_correction.goals.json``; exit status 1 when a goal is missed
(``--no-fail``: 0).

Run: ``python benchmarks/gradient_correction.py [--study DIR ...]`` (about 4 minutes on the shared
2-core machine); ``--quick`` (fewer rounds and steps); ``--smoke --no-fail`` (seconds).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import _common
import torch
import torch.nn.functional as F

from advanced_optimizers.bench.compare import load_runs
from advanced_optimizers.bench.data import VALIDATION_DEFAULTS, load_dataset
from advanced_optimizers.bench.methods import Setup, get_method
from advanced_optimizers.bench.models import ModelSpec
from advanced_optimizers.bench.profiles import workload_times
from advanced_optimizers.bench.report import PEERS, summarize

EPOCH_GOAL = 0.80  # gc-adam's epochs to target / tuned adam's
PEER_GOAL = 1.00  # gc-adam's epochs to target / the best peer's
TIME_GOAL = 1.25  # gc-adam's step time / adam's
BATCH = 128
STUDY_DIRS = ("results/mnist-mlp/final", "results/mnist-cnn/final")  # where the study writes

# the study's models: the full preset's MLP and the CNN study's (advopt tune/compare --arch cnn
# --width 8; depth 2 = two VGG blocks)
MODELS = {
    "mlp": {"width": 512, "depth": 2, "label": "MLP 784-512-512-10"},
    "cnn": {"width": 8, "depth": 2, "label": "CNN width 8, 2 VGG blocks"},
}
GC_SETTINGS = {  # label -> gc-adam options
    "gc-adam": {},
    "gc-adam dd0.9": {"difference_decay": 0.9},
}
TIMED = ("adam", *GC_SETTINGS, *PEERS)
# (block steps, rounds) per model, and diagnostic steps / window, per run kind
TIMING = {
    "full": {"mlp": (20, 40), "cnn": (10, 30)},
    "quick": {"mlp": (10, 6), "cnn": (5, 4)},
    "smoke": {"mlp": (2, 2), "cnn": (1, 2)},
}
DIAG = {"full": (1200, 200), "quick": (300, 100), "smoke": (20, 10)}


def spec_of(arch: str, dataset) -> ModelSpec:
    m = MODELS[arch]
    return ModelSpec(arch, dataset.input_shape, dataset.num_classes, m["width"], m["depth"])


def method_of(label: str):
    """(harness method, its name) for a timed label (``gc-adam dd0.9`` = gc-adam with options)."""
    if label in GC_SETTINGS:
        return get_method("gc-adam", **GC_SETTINGS[label]), "gc-adam"
    return get_method(label), label


def build(label: str, spec: ModelSpec, dataset, steps: int, lr: float | None = None):
    """(method, model, optimizer) as the harness builds them, from the same initial weights."""
    method, _ = method_of(label)
    torch.manual_seed(0)
    model = method.build_model(spec)
    setup = Setup(
        lr=method.default_lr if lr is None else lr,
        epochs=1,
        steps_per_epoch=steps,
        n_train=dataset.n_train,
        num_classes=dataset.num_classes,
    )
    optimizer = method.build_optimizer(model, setup)
    model.train()
    method.train_mode(model, optimizer)  # schedule-free: gradients at y
    return method, model, optimizer


# ------------------------------------------------------------------------------------------------
# (a) step time
# ------------------------------------------------------------------------------------------------
def step_times(dataset, arch: str, block: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per ``block``-step block of every timed method, interleaved (warm-up dropped)."""
    batches = list(dataset.train_batches(BATCH, seed=0, epoch=1))[:block]
    spec = spec_of(arch, dataset)
    built = {label: build(label, spec, dataset, block) for label in TIMED}

    def runner(label: str):
        _method, model, optimizer = built[label]

        def run(_k: int) -> float:
            start = time.perf_counter()
            for batch in batches:
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(model(batch.x), batch.y).backward()
                optimizer.step()
            return time.perf_counter() - start

        return run

    got = _common.interleave({label: runner(label) for label in TIMED}, rounds + 1)
    return {label: secs[1:] for label, secs in got.items()}


def report_times(arch: str, secs: dict[str, list[float]], block: int, rounds: int, goals) -> None:
    label = MODELS[arch]["label"]
    workload = (
        f"MNIST {label}, batch {BATCH}, {rounds} interleaved rounds of {block}-step blocks "
        f"({len(TIMED)} methods, order rotating), torch threads 1"
    )
    print(f"\n(a) step time, {workload}")
    print(f"  {'method':<20} {'ms/step (median)':>16}   ratio to adam [95% CI]")
    for name in TIMED:
        ms = 1000 * statistics.median(secs[name]) / block
        ratio = _common.ratio_ci(secs[name], secs["adam"])
        print(f"  {name:<20} {ms:>16.2f}   {ratio.text(3)}")
    for gc in GC_SETTINGS:
        vs = ", ".join(f"{peer} {_common.ratio_ci(secs[gc], secs[peer]).text(2)}" for peer in PEERS)
        print(f"  {gc} / peer: {vs}")
    for gc, options in GC_SETTINGS.items():
        ratio = _common.ratio_ci(secs[gc], secs["adam"])
        setting = "library defaults" if not options else f"{options}"
        goals.add(
            workload,
            f"{arch.upper()} gc-adam ({setting}) step <= {TIME_GOAL}x adam's: "
            f"{ratio.ratio:.3f} [{ratio.ci_low:.3f}, {ratio.ci_high:.3f}]",
            ratio.ratio,
            TIME_GOAL,
            "<=",
            ratio=ratio.as_dict(),
            ms_per_step={n: 1000 * statistics.median(s) / block for n, s in secs.items()},
            vs_peers={p: _common.ratio_ci(secs[gc], secs[p]).as_dict() for p in PEERS},
        )


# ------------------------------------------------------------------------------------------------
# (b) what the modules learn on a real run
# ------------------------------------------------------------------------------------------------
def diagnose(dataset, arch: str, gc: str, steps: int, window: int) -> dict:
    """Train ``gc`` for ``steps`` steps; the optimizer's statistics per window of steps."""
    spec = spec_of(arch, dataset)
    _method, model, optimizer = build(gc, spec, dataset, steps, lr=1e-3)
    rows, losses, done, epoch = [], [], 0, 1
    optimizer.diagnostics(reset=True)
    while done < steps:
        for batch in dataset.train_batches(BATCH, seed=0, epoch=epoch):
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(batch.x), batch.y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            done += 1
            if done % window == 0:
                stats = optimizer.diagnostics(reset=True)
                coef = torch.cat([c for c in optimizer.coefficients()]).double()
                rows.append(
                    {
                        "steps": done,
                        "loss": statistics.fmean(losses[-window:]),
                        **stats,
                        "w": coef[:, :-1].mean(0).tolist(),  # mean over tensors of w_1..w_K
                        "c_min": coef[:, -1].min().item(),
                        "c_max": coef[:, -1].max().item(),
                        "c_now": coef[:, -1].mean().item(),
                    }
                )
            if done >= steps:
                break
        epoch += 1
    return {"rows": rows, "n_tensors": len(list(model.parameters()))}


def report_diagnostics(arch: str, gc: str, result: dict, steps: int) -> dict:
    rows = result["rows"]
    print(
        f"\n(b) {gc} on MNIST {MODELS[arch]['label']}, lr 1e-3 (constant), batch {BATCH}, "
        f"{steps} steps, {result['n_tensors']} tensors; per window, means over tensors and steps:"
    )
    print(
        "  steps   loss   GC-W err² naive err² (zero=1)   cos(g_t,g_t-1)   c mean   "
        "c now [min, max] over tensors   w (mean over tensors)"
    )
    for r in rows:
        w = ", ".join(f"{v:+.3f}" for v in r["w"])
        print(
            f"  {r['steps']:>5}  {r['loss']:.3f}   {r['gcw_pred_error']:8.3f}  "
            f"{r['gcw_naive_error']:9.3f}            {r['grad_cosine']:+8.3f}      "
            f"{r['gcode_coef']:+.3f}   {r['c_now']:+.3f} [{r['c_min']:+.3f}, {r['c_max']:+.3f}]"
            f"          ({w})"
        )
    # the whole run's figures: tensor-step-weighted means over the windows
    count = sum(r["gc_tensor_steps"] for r in rows) or math.nan

    def mean(key: str) -> float:
        return sum(r[key] * r["gc_tensor_steps"] for r in rows) / count

    summary = {
        "gcw_pred_error": mean("gcw_pred_error"),
        "gcw_naive_error": mean("gcw_naive_error"),
        "grad_cosine": mean("grad_cosine"),
        "gcode_coef": mean("gcode_coef"),
        "c_final_range": [rows[-1]["c_min"], rows[-1]["c_max"]] if rows else None,
        "w_final": rows[-1]["w"] if rows else None,
    }
    print(
        f"  {arch} {gc}, all {steps} steps: GC-W err² {summary['gcw_pred_error']:.3f} "
        f"(rms {math.sqrt(summary['gcw_pred_error']):.3f}) vs zero predictor 1 vs naive "
        f"{summary['gcw_naive_error']:.3f} (rms {math.sqrt(summary['gcw_naive_error']):.3f}); "
        f"mean cos(g_t, g_t-1) {summary['grad_cosine']:+.3f}; mean c {summary['gcode_coef']:+.3f}"
    )
    return summary


# ------------------------------------------------------------------------------------------------
# (c) epochs to target, read from the study
# ------------------------------------------------------------------------------------------------
def study_state(out: Path) -> str | None:
    """Why ``out`` is not a finished study directory with gc-adam, adam and a peer, or ``None``."""
    experiment = out / "experiment.json"
    if not experiment.exists() or not (out / "results.json").exists():
        return f"{out} has no finished advopt compare results (no experiment.json/results.json)"
    saved = json.loads(experiment.read_text())
    wanted = {(m, s) for m in saved["methods"] for s in saved["seeds"]}
    have = {(r.config.method, r.config.seed) for r in load_runs(out)}
    if not wanted <= have:
        return f"{out}: {len(wanted & have)}/{len(wanted)} runs finished"
    missing = [m for m in ("gc-adam", "adam") if m not in saved["methods"]]
    if missing or not set(PEERS) & set(saved["methods"]):
        return f"{out} lacks {', '.join(missing) or 'every peer'}"
    return None


def epochs_to_target(out: Path, goals) -> None:
    saved = json.loads((out / "experiment.json").read_text())
    epochs = workload_times(out, "epochs")
    seconds = workload_times(out, "seconds")
    summary = summarize(load_runs(out))
    tuned = saved.get("tuning") or {}
    lrs = saved.get("method_lrs") or {}
    opts = saved.get("method_options") or {}
    model = ModelSpec(saved["arch"], width=saved.get("width"), depth=saved.get("depth"))
    workload = (
        f"{saved['dataset']} {saved['arch']} width {model.width} depth {model.depth}, "
        f"{saved['epochs']} epochs, {len(saved['seeds'])} seeds, {saved['schedule']} schedule "
        f"({out})"
    )
    print(f"\n(c) epochs to target, {workload}")
    print(
        f"  target {100 * epochs['target']:.2f}% validation accuracy (median final of "
        f"{epochs['reference']}); selection: {epochs['selection']}"
    )
    for method in ("adam", "gc-adam", *PEERS):
        if method not in epochs["times"]:
            continue
        setting = "TUNED" if method in tuned else "not tuned"
        per_seed = summary["methods"][method]["per_seed"]["epochs_to_target"]
        seeds = ", ".join(f"{v:g}" for _, v in sorted(per_seed.items()))
        print(
            f"  {method:<20} epochs {epochs['times'][method]:>4g} (reached {epochs['reached'][method]};"
            f" per seed {seeds})  seconds {seconds['times'][method]:.1f}  [{setting}: lr "
            f"{lrs.get(method, 'default')}, options {opts.get(method, {})}]"
        )
    if "adam" not in tuned:
        print("  NOTE: adam was not tuned in this directory (the goal is against tuned adam)")
    gc, adam = epochs["times"]["gc-adam"], epochs["times"]["adam"]
    peers = {p: epochs["times"][p] for p in PEERS if p in epochs["times"]}
    best = min(peers, key=lambda p: peers[p])

    def ratio(a: float, b: float) -> float:
        if math.isinf(a):
            return math.inf
        return a / b if b > 0 else math.nan

    r_adam, r_peer = ratio(gc, adam), ratio(gc, peers[best])
    arch = saved["arch"].upper()
    details = {
        "dir": str(out),
        "target": epochs["target"],
        "epochs_median": epochs["times"],
        "reached": epochs["reached"],
        "seconds_median": seconds["times"],
        "tuned": sorted(tuned),
    }
    goals.add(
        workload,
        f"{arch} study: gc-adam epochs to target <= {EPOCH_GOAL}x tuned adam's: {gc:g} / {adam:g}"
        f" = {r_adam:.3f}",
        r_adam,
        EPOCH_GOAL,
        "<=",
        **details,
    )
    goals.add(
        workload,
        f"{arch} study: gc-adam epochs to target <= the best peer's ({best}): {gc:g} / "
        f"{peers[best]:g} = {r_peer:.3f}",
        r_peer,
        PEER_GOAL,
        "<=",
        best_peer=best,
        **details,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timing rounds and steps")
    parser.add_argument("--archs", default="mlp,cnn", help="comma-separated (mlp,cnn)")
    parser.add_argument(
        "--study",
        nargs="+",
        default=[],
        metavar="DIR",
        help="finished advopt compare --tuned directories to read epochs-to-target from "
        f"(the study's: {' '.join(STUDY_DIRS)})",
    )
    parser.add_argument(
        "--diag-steps", type=int, default=None, help="diagnostic steps (1200: about 3 epochs)"
    )
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=("time", "diagnostics"), help="parts to skip"
    )
    _common.add_arguments(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    kind = _common.run_kind(args)
    goals = _common.report_from_args("gradient_correction", args)
    start = time.perf_counter()
    archs = args.archs.split(",")
    print(
        f"Gradient Correction benchmark ({kind} run), torch {torch.__version__}, 1 thread; "
        f"gc-adam options: library defaults, and {GC_SETTINGS['gc-adam dd0.9']}"
    )
    full = load_dataset("mnist", progress=False).split_validation(VALIDATION_DEFAULTS["mnist"])
    if kind == "smoke":
        full = full.subset(512, 128)
    if "time" not in args.skip:
        for arch in archs:
            block, rounds = TIMING[kind][arch]
            secs = step_times(full, arch, block, rounds)
            report_times(arch, secs, block, rounds, goals)
    diag = {}
    if "diagnostics" not in args.skip:
        steps, window = DIAG[kind]
        steps = args.diag_steps or steps
        for arch in archs:
            for gc in GC_SETTINGS:
                result = diagnose(full, arch, gc, steps, window)
                diag[f"{arch} {gc}"] = report_diagnostics(arch, gc, result, steps)
        goals.config["diagnostics"] = diag
    for out in [Path(d) for d in args.study or STUDY_DIRS]:
        why = study_state(out) if args.study else "no --study given"
        if why is None:
            epochs_to_target(out, goals)
            continue
        note = (
            f"{out}: gc-adam epochs to target <= {EPOCH_GOAL}x tuned adam's and <= the best "
            f"peer's: NOT MEASURED (run the study first; {why})"
        )
        print(f"\n(c) NOT MEASURED: {note}")
        goals.config.setdefault("not_measured", []).append(note)
    print(f"\nwall time {time.perf_counter() - start:.0f} s")
    if not goals.goals:
        print("no goal measured (--skip time without a finished --study): no goals file written")
        return 0
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())
