"""Turn finished runs into the summary statistics, the Markdown table, results.json and results.csv.

For every method, over its seeds: final and best test accuracy, training time per epoch, epochs and
seconds to reach the target accuracy (the reference baseline's mean final accuracy unless given), and
the flipping-error metrics — each as mean, std and 95% t-interval. Every non-baseline method is
compared with every baseline (``BASELINES``), and each of our algorithms (neither baseline nor peer)
with every peer (``PEERS``: what a user would pick instead), by a paired test over seeds (same seed =
same init and data order) on final accuracy, with Holm's correction across the whole family of
comparisons; the verdict says "no significant difference" where that is the truth (adjusted p >= 0.05).
A comparison's ``baseline`` field names the method compared against, baseline or peer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .atomic import write_json, write_text
from .methods import available_methods
from .metrics import flip_metrics
from .stats import holm, mean_ci, paired_test, time_to_target
from .train import RunResult

__all__ = ["BASELINES", "PEERS", "epoch_frame", "markdown_table", "summarize", "write_outputs"]

BASELINES = ("sgd", "adam")
PEERS = ("nadam", "schedulefree-adamw", "adan", "mars", "lookahead-adam")
ALPHA = 0.05


def epoch_frame(runs: Sequence[RunResult]) -> pd.DataFrame:
    """One row per (method, seed, epoch) with every recorded metric and cumulative train time."""
    rows = []
    for run in runs:
        elapsed = 0.0
        for record in run.history:
            elapsed += record["train_seconds"]
            rows.append(
                {
                    "method": run.config.method,
                    "seed": run.config.seed,
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


def reference_target(grouped: dict[str, list[RunResult]]) -> tuple[str, float]:
    """(name, accuracy): the first baseline present (else the first method), its mean final acc."""
    name = next((b for b in reversed(BASELINES) if b in grouped), next(iter(grouped)))
    accs = [r.final["test_acc"] for r in grouped[name]]
    return name, sum(accs) / len(accs)


def _run_figures(run: RunResult, target: float) -> dict[str, float]:
    accs = [h["test_acc"] for h in run.history]
    secs = [h["train_seconds"] for h in run.history]
    epochs_to, seconds_to = time_to_target(accs, secs, target)
    flips = flip_metrics(run.correct)
    return {
        "final_acc": accs[-1],
        "best_acc": max(accs),
        "sec_per_epoch": sum(secs) / len(secs),
        "epochs_to_target": epochs_to,
        "seconds_to_target": seconds_to,
        "wfs": flips["wfs"],
        "rfe": flips["rfe"],
    }


def _finite_ci(values: list[float]) -> dict[str, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": math.inf, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}
    return mean_ci(finite)


def summarize(runs: Sequence[RunResult], target: float | None = None) -> dict[str, Any]:
    """Per-method statistics and the paired comparisons against the baselines."""
    grouped = _by_method(runs)
    ref_name, ref_acc = reference_target(grouped)
    target = ref_acc if target is None else target
    figures = {m: [_run_figures(r, target) for r in rs] for m, rs in grouped.items()}
    methods = {}
    for name, figs in figures.items():
        stats = {key: _finite_ci([f[key] for f in figs]) for key in figs[0]}
        stats["reached_target"] = sum(math.isfinite(f["epochs_to_target"]) for f in figs)
        stats["seeds"] = [r.config.seed for r in grouped[name]]
        methods[name] = stats
    return {
        "target": {"accuracy": target, "reference": ref_name if target == ref_acc else None},
        "methods": methods,
        "comparisons": _compare_to_baselines(grouped),
    }


def _compare_to_baselines(grouped: dict[str, list[RunResult]]) -> list[dict[str, Any]]:
    """Every non-baseline vs every baseline, then each of ours vs every peer; one Holm family."""
    comparisons = []
    for baseline in (b for b in BASELINES + PEERS if b in grouped):
        base = {r.config.seed: r.final["test_acc"] for r in grouped[baseline]}
        for name, rs in grouped.items():
            if name in BASELINES or (baseline in PEERS and name in PEERS):
                continue
            seeds = [r.config.seed for r in rs if r.config.seed in base]
            ours = {r.config.seed: r.final["test_acc"] for r in rs}
            test = paired_test([ours[s] for s in seeds], [base[s] for s in seeds])
            comparisons.append({"method": name, "baseline": baseline, "seeds": seeds, **test})
    for comp, adjusted in zip(comparisons, holm([c["p_value"] for c in comparisons]), strict=True):
        comp["p_holm"] = adjusted
        comp["verdict"] = _verdict(comp)
    return comparisons


def _verdict(comp: dict[str, Any]) -> str:
    p = comp["p_holm"]
    if math.isnan(p):
        return "too few seeds to test"
    if p >= ALPHA:
        return "no significant difference"
    return "better" if comp["mean_diff"] > 0 else "worse"


def _pct(stat: dict[str, float]) -> str:
    if stat["n"] < 2:
        return f"{100 * stat['mean']:.2f}"
    return (
        f"{100 * stat['mean']:.2f} ± {100 * stat['std']:.2f} "
        f"[{100 * stat['ci_low']:.2f}, {100 * stat['ci_high']:.2f}]"
    )


def _num(stat: dict[str, float], digits: int = 2) -> str:
    if not math.isfinite(stat["mean"]):
        return "never"
    if stat["n"] < 2:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def markdown_table(summary: dict[str, Any]) -> str:
    """The summary as Markdown: one row per method, then one row per comparison."""
    head = (
        "| method | seeds | final acc % (mean ± std [95% CI]) | best acc % | s / epoch | "
        "epochs to target | s to target | WFS | RFE |"
    )
    lines = [head, "|" + "---|" * 9]
    for name, s in summary["methods"].items():
        n = len(s["seeds"])
        lines.append(
            f"| {name} | {n} | {_pct(s['final_acc'])} | {_pct(s['best_acc'])} | "
            f"{_num(s['sec_per_epoch'])} | {_num(s['epochs_to_target'], 1)} "
            f"({s['reached_target']}/{n}) | {_num(s['seconds_to_target'], 1)} | "
            f"{_num(s['wfs'], 1)} | {_num(s['rfe'], 3)} |"
        )
    target = summary["target"]
    ref = f" (mean final accuracy of {target['reference']})" if target["reference"] else ""
    lines.append("")
    lines.append(
        f"Target accuracy: {100 * target['accuracy']:.2f}%{ref}. "
        "Times are training seconds (evaluation excluded)."
    )
    if summary["comparisons"]:
        lines += [
            "",
            "| method | vs | Δ final acc (pp) | paired t p | Holm p | Cohen's d_z | verdict |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in summary["comparisons"]:
            lines.append(
                f"| {c['method']} | {c['baseline']} | {100 * c['mean_diff']:+.2f} | "
                f"{c['p_value']:.3g} | {c['p_holm']:.3g} | {c['cohens_dz']:.2f} | {c['verdict']} |"
            )
    return "\n".join(lines) + "\n"


def write_outputs(
    out: Path,
    experiment: Any,
    runs: Sequence[RunResult],
    environment: dict[str, Any],
    target: float | None = None,
) -> dict[str, Any]:
    """results.json, results.csv, summary.md and the plots, all written atomically."""
    from .plots import plot_all

    summary = summarize(runs, target)
    write_json(
        out / "results.json",
        {
            "experiment": experiment.to_dict(),
            "environment": environment,
            "runs": [
                {
                    "config": r.config.to_dict(),
                    "history": r.history,
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
