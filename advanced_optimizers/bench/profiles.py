"""AlgoPerf-style performance profiles of time-to-target across workloads (result directories).

A *workload* is one ``advopt compare`` results directory (MNIST MLP, MNIST CNN, ...). On each:

* the **target** is chosen on validation, as in the report (:func:`.report.reference_target`): the
  median final validation accuracy of the best baseline present (for a directory without a
  validation split the test accuracy is all there is, and the profile says so);
* a method's **time to target** on the workload is the median over *all* its runs of the training
  seconds (``--time epochs``: epochs) until its validation accuracy first reaches the target; a run
  that failed or never reached it counts as ∞, so a method reaching the target in fewer than half of
  its runs is ∞ on that workload ("never reached"), as is a method absent from the workload;
* the **ratio** ``r = t_method / t_best``, ``t_best`` the smallest time of any method on it.

The profile of a method is ``ρ(τ)`` = the fraction of workloads on which ``r ≤ τ``, a step function of
``τ ≥ 1``: ``ρ(1)`` is how often it was the fastest, its value at large ``τ`` how often it reached the
target at all. (Dolan & Moré 2002; AlgoPerf, Dahl et al. 2023, which integrates it to one score — not
done here: with two or three workloads the curve is the honest summary.)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .report import _by_method, _run_figures, reference_target, selection_label

__all__ = ["performance_profile", "workload_times"]

TIMES = ("seconds", "epochs")


def workload_times(out_dir: str | os.PathLike, time: str = "seconds") -> dict[str, Any]:
    """Target and per-method median time to target of one results directory."""
    from .compare import load_runs

    if time not in TIMES:
        raise ValueError(f"time must be one of {', '.join(TIMES)}, got {time!r}")
    out = Path(out_dir)
    runs = load_runs(out)
    if not runs:
        raise ValueError(f"no finished runs under {out / 'runs'}")
    grouped = _by_method(runs)
    reference, target = reference_target(grouped)
    key = "seconds_to_target" if time == "seconds" else "epochs_to_target"
    times: dict[str, float] = {}
    reached: dict[str, str] = {}
    for method, group in grouped.items():
        values = [
            _run_figures(r, target)[key] if r.ok and math.isfinite(target) else math.inf
            for r in group
        ]
        times[method] = float(np.median(values))
        reached[method] = f"{sum(math.isfinite(v) for v in values)}/{len(values)}"
    name = out.name
    experiment = out / "experiment.json"
    if experiment.exists():
        try:
            saved = json.loads(experiment.read_text())
            name = f"{saved.get('dataset', '?')}-{saved.get('arch', '?')} ({out.name})"
        except (OSError, ValueError):
            pass
    return {
        "name": name,
        "dir": str(out),
        "selection": selection_label(runs),
        "target": target,
        "reference": reference,
        "times": times,
        "reached": reached,
    }


def performance_profile(
    dirs: Sequence[str | os.PathLike], time: str = "seconds", points: int = 400
) -> dict[str, Any]:
    """The profile over the workloads ``dirs`` (see the module docstring)."""
    workloads = [workload_times(d, time) for d in dirs]
    methods = list(dict.fromkeys(m for w in workloads for m in w["times"]))
    ratios: dict[str, list[float]] = {m: [] for m in methods}
    for w in workloads:
        best = min((t for t in w["times"].values() if math.isfinite(t)), default=math.inf)
        w["best_time"] = best
        w["ratios"] = {}
        for m in methods:
            t = w["times"].get(m, math.inf)
            r = t / best if math.isfinite(t) and math.isfinite(best) and best > 0 else math.inf
            if math.isfinite(t) and best == 0:  # reached at zero cost (target 0): a tie
                r = 1.0
            w["ratios"][m] = r
            ratios[m].append(r)
    finite = [r for rs in ratios.values() for r in rs if math.isfinite(r)]
    tau_max = max(2.0, 1.1 * max(finite, default=1.0))
    taus = np.unique(np.concatenate([np.geomspace(1.0, tau_max, points), finite or [1.0]]))
    curves = {
        m: [float(np.mean([r <= tau for r in rs])) for tau in taus] for m, rs in ratios.items()
    }
    return {
        "time": time,
        "workloads": workloads,
        "taus": taus.tolist(),
        "curves": curves,
        "definition": "rho_m(tau) = fraction of workloads with t_m <= tau * min_k t_k; t = median "
        "over the method's runs of the time to the workload's validation target (failed or never "
        "reached = inf)",
    }


def profile_table(profile: dict[str, Any]) -> str:
    """Markdown: per workload the target and each method's time (ratio), ∞ marked "never"."""
    methods = list(profile["curves"])
    unit = "s" if profile["time"] == "seconds" else "epochs"
    lines = [
        "| workload | target | " + " | ".join(methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for w in profile["workloads"]:
        cells = []
        for m in methods:
            t = w["times"].get(m, math.inf)
            if m not in w["times"]:
                cells.append("absent")
            elif math.isfinite(t):
                cells.append(f"{t:.1f} {unit} (×{w['ratios'][m]:.2f})")
            else:
                cells.append(f"never ({w['reached'][m]})")
        target = f"{100 * w['target']:.2f}%" if math.isfinite(w["target"]) else "—"
        split = "val" if w["selection"] == "validation" else "test"
        lines.append(f"| {w['name']} | {target} {split} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Time to target: median over the method's runs (failed or never reached = ∞); "
        "(×r) = ratio to the fastest method on that workload."
    )
    return "\n".join(lines) + "\n"
