"""Turn finished runs into the summary statistics, the Markdown table, results.json and results.csv.

**Which split decides what.** A run measured with a validation split (``advopt compare``'s protocol)
is summarised by its *final test accuracy* — read once, after its last epoch — and everything that is
a choice is made on *validation*: the best epoch, the time-to-target target and the times to reach
it, the flip metrics (WFS/RFE on the validation samples). A run without one (``--validation 0``, or a
results directory written before validation splits existed) was measured on the test set every epoch;
its summary says so: "no validation split (selection on test)", or "legacy: selection on test".

**Failures are counted, not averaged.** A run that diverged or stayed at chance (``status ==
"failed"``, see :mod:`.train`) is listed as a failure per method ("1/5 runs failed", with seeds and
reasons); every statistic is over the successful runs only. Runs measured without a validation
split (legacy files, ``--validation 0``) were not checked for "at chance" while training; the report
applies the same rule to them after the fact, on their test accuracy, and says so in the reason
(:func:`assess`).

**Statistics** (:mod:`.stats`): for every metric, over a method's successful runs, mean ± std with a
95% bootstrap percentile interval of the mean when there are at least 3 runs (it never leaves the
observed range, so never the metric's), the median and range (min–max) for 1–2 runs.

**Time to target**: the target is a validation accuracy — the median final validation accuracy of
the best baseline present (the one of ``BASELINES`` with the highest such median over its successful
runs; ``--target`` overrides). A run's time to target is the first epoch (and cumulative training
seconds) at which its validation accuracy reaches it; a run that never does counts as "never" and
the table says how many of the successful runs reached it.

**Paired tests.** Every non-baseline method is compared with every baseline (``BASELINES``), and each
of our algorithms (neither baseline nor peer) with every peer (``PEERS``: what a user would pick
instead), over seeds (same seed = same init and data order), on final test accuracy. A comparison is
tested only when neither method has a failed run, there are at least 3 complete pairs, and the
per-seed differences vary; otherwise its verdict is "not tested (reason)". Tested comparisons form
one family for Holm's correction; the verdict says "no significant difference" where that is the
truth (adjusted p >= 0.05). Wilcoxon's signed-rank p-value is reported beside the t-test as the
distribution-free check. A comparison's ``baseline`` field names the method compared against.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .atomic import write_json, write_text
from .methods import available_methods
from .metrics import flip_metrics
from .stats import MIN_PAIRS, describe, holm, paired_test, time_to_target
from .train import RunResult, detect_failure

__all__ = [
    "BASELINES",
    "PEERS",
    "assess",
    "epoch_frame",
    "markdown_table",
    "reference_target",
    "selection_label",
    "summarize",
    "write_outputs",
]

BASELINES = ("sgd", "adam")
PEERS = ("nadam", "schedulefree-adamw", "adan", "mars", "lookahead-adam")
ALPHA = 0.05

VALIDATION = "validation"
NO_VALIDATION = "no validation split (selection on test)"
LEGACY = "legacy: selection on test"

# the per-run figures summarised per method; the accuracy-like ones are fractions in [0, 1]
FIGURES = (
    "final_acc",  # final test accuracy (read once): the outcome compared
    "sel_final_acc",  # final accuracy on the selection split (validation; test in legacy runs)
    "sel_best_acc",  # best accuracy over epochs on the selection split
    "best_epoch",  # the epoch of sel_best_acc
    "sec_per_epoch",
    "epochs_to_target",
    "seconds_to_target",
    "wfs",
    "rfe",
)


NUM_CLASSES = 10  # every dataset of the catalog (MNIST, Fashion-MNIST, CIFAR-10) has 10 classes


def assess(runs: Sequence[RunResult]) -> list[RunResult]:
    """``runs``, with the failure rule applied after the fact to runs measured on the test set.

    A run with a validation split was checked while it trained; one without (legacy, or
    ``--validation 0``) was only checked for divergence, so here the chance rule of
    :func:`.train.detect_failure` is applied to its test accuracy at every epoch from the check
    epoch on, and a hit becomes ``status="failed"`` with the reason marked as found when reporting.
    """
    out = []
    for run in runs:
        if run.ok and run.selection_split == "test":
            for record in run.history:
                reason = detect_failure(record, run.config.epochs, NUM_CLASSES, split="test")
                if reason is not None:
                    reason += " — found when reporting, on test accuracy (no validation split)"
                    run = dataclasses.replace(run, status="failed", failure=reason)
                    break
        out.append(run)
    return out


def epoch_frame(runs: Sequence[RunResult]) -> pd.DataFrame:
    """One row per (method, seed, epoch) with every recorded metric, status and cumulative time."""
    rows = []
    for run in runs:
        elapsed = 0.0
        for record in run.history:
            elapsed += record["train_seconds"]
            rows.append(
                {
                    "method": run.config.method,
                    "seed": run.config.seed,
                    "status": run.status,
                    **record,
                    "elapsed_seconds": elapsed,
                }
            )
    return pd.DataFrame(rows)


def _by_method(runs: Sequence[RunResult]) -> dict[str, list[RunResult]]:
    """Runs grouped by method, methods in registry order (baselines first), runs by seed."""
    order = {name: i for i, name in enumerate(available_methods())}
    grouped: dict[str, list[RunResult]] = {}
    for run in sorted(runs, key=lambda r: order.get(r.config.method, len(order))):
        grouped.setdefault(run.config.method, []).append(run)
    for group in grouped.values():
        group.sort(key=lambda r: r.config.seed)
    return grouped


def _run_label(run: RunResult) -> str:
    if run.selection_split == "val":
        return VALIDATION
    return LEGACY if run.config.n_val is None else NO_VALIDATION


def selection_label(runs: Sequence[RunResult]) -> str:
    """Where the runs' choices were made: ``VALIDATION``, ``NO_VALIDATION`` or ``LEGACY``."""
    labels = {_run_label(r) for r in runs}
    if len(labels) == 1:
        return labels.pop()
    return "mixed: " + ", ".join(sorted(labels))


def _sel_key(run: RunResult) -> str:
    return "val_acc" if run.selection_split == "val" else "test_acc"


def _final_sel(run: RunResult) -> float:
    return float(run.final[_sel_key(run)])


def reference_target(grouped: dict[str, list[RunResult]]) -> tuple[str | None, float]:
    """(name, accuracy): the best baseline by median final selection accuracy, and that median.

    Only successful runs count. Without a baseline, the first method with a successful run; with
    no successful run at all, ``(None, nan)``.
    """
    medians = {}
    for name, runs in grouped.items():
        accs = sorted(_final_sel(r) for r in runs if r.ok)
        if accs:
            medians[name] = float(pd.Series(accs).median())
    baselines = [b for b in BASELINES if b in medians]
    if baselines:
        name = max(baselines, key=lambda b: medians[b])
    elif medians:
        name = next(iter(medians))
    else:
        return None, math.nan
    return name, medians[name]


def _run_figures(run: RunResult, target: float) -> dict[str, float]:
    key = _sel_key(run)
    accs = [float(h[key]) for h in run.history]
    secs = [h["train_seconds"] for h in run.history]
    epochs_to, seconds_to = time_to_target(accs, secs, target)
    flips = flip_metrics(run.correct)
    best = max(range(len(accs)), key=lambda i: accs[i])
    test = run.final.get("test_acc")
    return {
        "final_acc": float(test) if test is not None else math.nan,
        "sel_final_acc": accs[-1],
        "sel_best_acc": accs[best],
        "best_epoch": float(best + 1),
        "sec_per_epoch": sum(secs) / len(secs),
        "epochs_to_target": epochs_to,
        "seconds_to_target": seconds_to,
        "wfs": flips["wfs"],
        "rfe": flips["rfe"],
    }


def summarize(runs: Sequence[RunResult], target: float | None = None) -> dict[str, Any]:
    """Per-method statistics over successful runs, failure counts, and the paired comparisons."""
    runs = assess(runs)
    grouped = _by_method(runs)
    selection = selection_label(runs)
    ref_name, ref_acc = reference_target(grouped)
    target = ref_acc if target is None else float(target)
    methods = {}
    for name, group in grouped.items():
        ok = [r for r in group if r.ok]
        figs = [_run_figures(r, target) for r in ok]
        stats: dict[str, Any] = {}
        for key in FIGURES:
            values = [f[key] for f in figs]
            stats[key] = describe([v for v in values if math.isfinite(v)])
        stats["reached_target"] = sum(math.isfinite(f["epochs_to_target"]) for f in figs)
        stats["runs"] = len(group)
        stats["failed"] = len(group) - len(ok)
        stats["failures"] = [
            {"seed": r.config.seed, "epochs": len(r.history), "reason": r.failure}
            for r in group
            if not r.ok
        ]
        stats["seeds"] = [r.config.seed for r in group]
        stats["per_seed"] = {
            key: {r.config.seed: f[key] for r, f in zip(ok, figs, strict=True)}
            for key in ("final_acc", "sel_final_acc", "epochs_to_target", "seconds_to_target")
        }
        methods[name] = stats
    return {
        "selection": selection,
        "target": {
            "accuracy": target,
            "split": "validation" if selection == VALIDATION else "test",
            "reference": ref_name if target == ref_acc else None,
        },
        "methods": methods,
        "comparisons": _compare_to_baselines(grouped),
    }


def _failed_text(name: str, group: list[RunResult]) -> str | None:
    failed = sum(not r.ok for r in group)
    return f"{failed}/{len(group)} runs of {name} failed" if failed else None


def _compare_to_baselines(grouped: dict[str, list[RunResult]]) -> list[dict[str, Any]]:
    """Every non-baseline vs every baseline, then each of ours vs every peer; one Holm family."""
    comparisons = []
    for baseline in (b for b in BASELINES + PEERS if b in grouped):
        base = {r.config.seed: r.final.get("test_acc") for r in grouped[baseline] if r.ok}
        for name, rs in grouped.items():
            if name in BASELINES or (baseline in PEERS and name in PEERS):
                continue
            ours = {r.config.seed: r.final.get("test_acc") for r in rs if r.ok}
            seeds = [s for s in ours if s in base and None not in (ours[s], base[s])]
            test = paired_test([ours[s] for s in seeds], [base[s] for s in seeds], MIN_PAIRS)
            failed = [
                t for t in (_failed_text(name, rs), _failed_text(baseline, grouped[baseline])) if t
            ]
            if failed:  # a paired test of the survivors would hide the failures: not tested
                test.update(p_value=math.nan, cohens_dz=math.nan, wilcoxon_p=math.nan)
                test["reason"] = "; ".join(failed)
            comparisons.append({"method": name, "baseline": baseline, "seeds": seeds, **test})
    for comp, adjusted in zip(comparisons, holm([c["p_value"] for c in comparisons]), strict=True):
        comp["p_holm"] = adjusted
        comp["verdict"] = _verdict(comp)
    return comparisons


def _verdict(comp: dict[str, Any]) -> str:
    if comp["reason"] is not None:
        return f"not tested ({comp['reason']})"
    p = comp["p_holm"]
    if math.isnan(p):  # pragma: no cover - a tested comparison always has a p-value
        return "not tested"
    if p >= ALPHA:
        return "no significant difference"
    return "better" if comp["mean_diff"] > 0 else "worse"


def _fmt(stat: dict[str, Any], scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± std [CI]`` (n >= 3), ``median (min–max)`` (n = 2), the value (n = 1), ``—`` (0)."""
    if stat["n"] == 0:
        return "—"
    if stat["n"] == 1:
        return f"{scale * stat['mean']:.{digits}f}"
    if stat["ci"] != "bootstrap":
        return (
            f"{scale * stat['median']:.{digits}f} "
            f"({scale * stat['min']:.{digits}f}–{scale * stat['max']:.{digits}f})"
        )
    return (
        f"{scale * stat['mean']:.{digits}f} ± {scale * stat['std']:.{digits}f} "
        f"[{scale * stat['ci_low']:.{digits}f}, {scale * stat['ci_high']:.{digits}f}]"
    )


def _range(stat: dict[str, Any]) -> str:
    """An epoch count: median (min–max)."""
    if stat["n"] == 0:
        return "—"
    if stat["min"] == stat["max"]:
        return f"{stat['median']:.0f}"
    return f"{stat['median']:g} ({stat['min']:.0f}–{stat['max']:.0f})"


def _to_target(stat: dict[str, Any], reached: int, ok: int, digits: int) -> str:
    if ok == 0:
        return "—"
    if reached == 0:
        return f"never (0/{ok})"
    return f"{_fmt(stat, 1.0, digits)} ({reached}/{ok})"


def markdown_table(summary: dict[str, Any]) -> str:
    """The summary as Markdown: one row per method, failures, then one row per comparison."""
    validation = summary["selection"] == VALIDATION
    sel = "val" if validation else "test"
    sel_final = f" final {sel} acc % |" if validation else ""
    head = (
        f"| method | runs | failed | final test acc % |{sel_final} best {sel} acc % "
        f"| best epoch (median) | s / epoch | epochs to target | s to target | WFS ({sel}) "
        f"| RFE ({sel}) |"
    )
    lines = [head, "|" + "---|" * (12 if validation else 11)]
    for name, s in summary["methods"].items():
        ok = s["runs"] - s["failed"]
        failed = f"{s['failed']}/{s['runs']}" if s["failed"] else "0"
        lines.append(
            f"| {name} | {s['runs']} | {failed} | {_fmt(s['final_acc'], 100)} | "
            + (f"{_fmt(s['sel_final_acc'], 100)} | " if validation else "")
            + f"{_fmt(s['sel_best_acc'], 100)} | "
            f"{_range(s['best_epoch'])} | {_fmt(s['sec_per_epoch'])} | "
            f"{_to_target(s['epochs_to_target'], s['reached_target'], ok, 1)} | "
            f"{_to_target(s['seconds_to_target'], s['reached_target'], ok, 1)} | "
            f"{_fmt(s['wfs'], 1, 1)} | {_fmt(s['rfe'], 1, 3)} |"
        )
    target = summary["target"]
    lines.append("")
    lines.append(f"Selection: **{summary['selection']}**.")
    if math.isfinite(target["accuracy"]):
        ref = (
            f" (median final {target['split']} accuracy of {target['reference']}, the best baseline)"
            if target["reference"]
            else ""
        )
        lines.append(
            f"Target: {100 * target['accuracy']:.2f}% {target['split']} accuracy{ref}; "
            "times are training seconds (evaluation excluded), over the runs that reached it."
        )
    lines.append(
        "Statistics over successful runs: mean ± std [95% bootstrap percentile CI of the mean] "
        "for n >= 3, median (min–max) for n = 2."
    )
    failures = [
        f"- {name}: {s['failed']}/{s['runs']} runs failed ("
        + "; ".join(f"seed {f['seed']}: {f['reason']}" for f in s["failures"])
        + ")"
        for name, s in summary["methods"].items()
        if s["failed"]
    ]
    if failures:
        lines += ["", "Failed runs (excluded from the statistics above):", *failures]
    if summary["comparisons"]:
        lines += [
            "",
            "| method | vs | Δ final test acc (pp) | pairs | paired t p | Holm p | Cohen's d_z "
            "| Wilcoxon p | verdict |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for c in summary["comparisons"]:
            diff = f"{100 * c['mean_diff']:+.2f}" if math.isfinite(c["mean_diff"]) else "—"
            lines.append(
                f"| {c['method']} | {c['baseline']} | {diff} | {c['n']} | {_p(c['p_value'])} | "
                f"{_p(c['p_holm'])} | {_num(c['cohens_dz'])} | {_p(c['wilcoxon_p'])} | "
                f"{c['verdict']} |"
            )
    return "\n".join(lines) + "\n"


def _p(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.3g}"


def _num(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}"


def write_outputs(
    out: Path,
    experiment: Any,
    runs: Sequence[RunResult],
    environment: dict[str, Any],
    target: float | None = None,
) -> dict[str, Any]:
    """results.json, results.csv, summary.md and the plots, all written atomically."""
    from .plots import plot_all

    runs = assess(runs)
    summary = summarize(runs, target)
    write_json(
        out / "results.json",
        {
            "experiment": experiment.to_dict(),
            "environment": environment,
            "runs": [
                {
                    "config": r.config.to_dict(),
                    "status": r.status,
                    "failure": r.failure,
                    "history": r.history,
                    "flips_split": r.selection_split,
                    "flips": flip_metrics(r.correct),
                }
                for r in runs
            ],
            "summary": summary,
        },
    )
    frame = epoch_frame(runs)
    write_text(out / "results.csv", frame.to_csv(index=False))
    write_text(out / "summary.md", markdown_table(summary))
    plot_all(frame, runs, summary, out / "plots")
    return summary
