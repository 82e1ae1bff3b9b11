"""PNG plots of a comparison, of a tuning study and of a performance profile.

Comparison (:func:`plot_all`), one colour per method throughout; lines are means over the method's
*successful* runs with a band (min–max over them); a failed run is drawn on its own as a thin dotted
line ending in an ``x`` where it was stopped:

* ``curves.png``: accuracy on the selection split (validation; the test set for runs without one)
  and **plain training cross-entropy** (``train_ce``: every method's model, in eval mode, on the
  same fixed training subset — like with like), each against epoch and against training time.
  Runs written before ``train_ce`` existed fall back to the method's own objective, and the axis
  says so.
* ``objectives.png``: one panel per method with its *own* training objective (``train_loss``:
  FER's T²-scaled objective, SigProp's sum of local losses, ...) beside its ``train_ce``; the
  objectives are not comparable across methods, so they never share a panel.
* ``flips.png``: correct→wrong flips per epoch on the selection split, and the wrongly flipped
  samples (WFS) at the end: mean bar and every run's value as a point beside it.
* ``summary.png``: final test accuracy against training seconds per epoch (mean with its 95%
  bootstrap interval — or min–max for fewer than 3 runs — and every run as a small point), and epochs
  to the target accuracy: a bar for the mean over the runs that reached it with every such run as a
  point, and a hatched, labelled "never reached" bar for a method none of whose runs did (never a
  zero-height bar). Failures are written under the method's name ("1/5 failed").

Tuning (:func:`plot_lr_sensitivity`): final validation accuracy of every trial against its learning
rate, one panel per method (failed trials as ``x`` at chance, pruned ones hollow at their last
reported accuracy, the best one starred) — how sensitive each method is to its learning rate.

Across workloads (:func:`plot_profile`): the performance profile of :mod:`.profile`.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from .atomic import atomic_write
from .methods import available_methods
from .metrics import flip_metrics
from .train import RunResult

__all__ = ["plot_all", "plot_lr_sensitivity", "plot_profile", "save_figure"]


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Save ``fig`` as PNG atomically and close it."""
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)
    return path


def _color(method: str) -> tuple:
    """A method's colour, the same in every plot: by its place in the registry.

    The first ten methods get tab10's colours, the next ten their lighter tab20 twins; a name not
    in the registry (old results) gets one by a stable hash of the name.
    """
    names = available_methods()
    index = names.index(method) if method in names else len(names) + zlib.crc32(method.encode())
    index %= 20
    return plt.get_cmap("tab20")(2 * index if index < 10 else 2 * (index - 10) + 1)


def _style(method: str) -> str:
    """Line style: solid for the first ten registered methods, dashed after (colours repeat)."""
    names = available_methods()
    return "-" if method in names and names.index(method) < 10 else "--"


def _ok(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"] == "ok"] if "status" in frame else frame


def _failed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"] != "ok"] if "status" in frame else frame.iloc[:0]


def _band(ax: plt.Axes, frame: pd.DataFrame, x: str, y: str, log: bool = False) -> None:
    if y not in frame:
        return
    for method, rows in _ok(frame).groupby("method", sort=False):
        rows = rows.dropna(subset=[y])
        if rows.empty:
            continue
        color = _color(method)
        by_epoch = rows.groupby("epoch")
        xs = by_epoch[x].mean()
        ys = by_epoch[y]
        ax.plot(xs, ys.mean(), label=method, color=color, lw=1.6, ls=_style(method))
        ax.fill_between(xs, ys.min(), ys.max(), color=color, alpha=0.18, lw=0)
    for (method, _seed), rows in _failed(frame).groupby(["method", "seed"], sort=False):
        rows = rows.dropna(subset=[y])
        rows = rows[np.isfinite(rows[y].astype(float))]
        if rows.empty:
            continue
        ax.plot(rows[x], rows[y], color=_color(method), lw=0.9, ls=":")
        ax.plot(rows[x].iloc[-1], rows[y].iloc[-1], "x", color=_color(method), ms=6)
    if log:
        ax.set_yscale("log")
    if x == "epoch":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def _selection(frame: pd.DataFrame) -> tuple[str, str]:
    """(column, label) of the selection accuracy: validation, or test for runs without it."""
    if "val_acc" in frame and frame["val_acc"].notna().any():
        return "val_acc", "validation accuracy"
    return "test_acc", "test accuracy (no validation split)"


def _train_loss_column(frame: pd.DataFrame) -> tuple[str, str]:
    if "train_ce" in frame and frame["train_ce"].notna().any():
        return "train_ce", "training cross-entropy, eval mode (log)"
    return "train_loss", "training loss: each method's own objective (log; legacy run)"


def plot_curves(frame: pd.DataFrame, path: Path) -> Path:
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    acc, acc_label = _selection(frame)
    loss, loss_label = _train_loss_column(frame)
    panels = [
        (axes[0, 0], "epoch", acc, "epoch", acc_label, False),
        (axes[0, 1], "elapsed_seconds", acc, "training time (s)", acc_label, False),
        (axes[1, 0], "epoch", loss, "epoch", loss_label, True),
        (axes[1, 1], "elapsed_seconds", loss, "training time (s)", loss_label, True),
    ]
    for ax, x, y, xlabel, ylabel, log in panels:
        _band(ax, frame, x, y, log)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    if axes[0, 0].lines:
        axes[0, 0].legend(fontsize=8)
    ok = _ok(frame)
    seeds = ok.groupby("method")["seed"].nunique().max() if len(ok) else 0
    failed = _failed(frame)[["method", "seed"]].drop_duplicates()
    note = f"; {len(failed)} failed run(s) dotted, x = stopped" if len(failed) else ""
    fig.suptitle(f"mean over up to {seeds} successful seed(s); band = min–max{note}")
    return save_figure(fig, path)


def plot_objectives(frame: pd.DataFrame, path: Path) -> Path:
    """One panel per method: its own objective (``train_loss``) and ``train_ce``, against epoch."""
    methods = list(dict.fromkeys(frame["method"]))
    cols = min(4, max(1, len(methods)))
    rows = math.ceil(len(methods) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), squeeze=False)
    for ax, method in zip(axes.flat, methods, strict=False):
        sub = frame[frame["method"] == method]
        color = _color(method)
        for column, style, label in (
            ("train_loss", "-", "own objective"),
            ("train_ce", "--", "train CE (eval)"),
        ):
            if column not in sub or not sub[column].notna().any():
                continue
            ok = _ok(sub).dropna(subset=[column])
            if not ok.empty:
                by_epoch = ok.groupby("epoch")[column]
                ax.plot(by_epoch.mean().index, by_epoch.mean(), style, color=color, label=label)
                ax.fill_between(
                    by_epoch.mean().index, by_epoch.min(), by_epoch.max(), color=color, alpha=0.15
                )
            for _seed, run in _failed(sub).groupby("seed"):
                run = run.dropna(subset=[column])
                run = run[np.isfinite(run[column].astype(float))]
                if not run.empty:
                    ax.plot(run["epoch"], run[column], ":", color=color, lw=0.9)
                    ax.plot(run["epoch"].iloc[-1], run[column].iloc[-1], "x", color=color)
        ax.set_title(method, fontsize=9)
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "every run failed", transform=ax.transAxes, ha="center")
    for ax in list(axes.flat)[len(methods) :]:
        ax.axis("off")
    fig.suptitle(
        "each method's own training objective (solid) and plain training cross-entropy (dashed); "
        "objectives differ between methods, compare them only within a panel",
        fontsize=9,
    )
    fig.tight_layout()
    return save_figure(fig, path)


def _points(ax: plt.Axes, x: float, values: Sequence[float], color: tuple, offset: float) -> None:
    """Every run's value as a small point beside ``x`` (jittered, deterministic)."""
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return
    jitter = np.linspace(-0.06, 0.06, len(values)) if len(values) > 1 else np.zeros(1)
    ax.scatter(x + offset + jitter, values, s=12, color=color, edgecolor="black", lw=0.4, zorder=3)


def plot_flips(runs: Sequence[RunResult], path: Path) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    methods: dict[str, list[dict]] = {}
    split = "validation"
    for run in runs:
        if run.selection_split == "test":
            split = "test"
        if run.ok:
            methods.setdefault(run.config.method, []).append(flip_metrics(run.correct))
    names = list(methods)
    for name in names:
        color = _color(name)
        flips = np.array([m["flips_per_epoch"] for m in methods[name]], dtype=float)
        if flips.ndim == 2 and flips.shape[1]:
            epochs = np.arange(2, flips.shape[1] + 2)
            left.plot(epochs, flips.mean(0), label=name, color=color, lw=1.6)
            left.fill_between(epochs, flips.min(0), flips.max(0), color=color, alpha=0.18, lw=0)
    left.set_xlabel("epoch")
    left.set_ylabel(f"{split} samples correct→wrong")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.grid(alpha=0.3)
    if left.lines:
        left.legend(fontsize=8)
    wfs = [np.array([m["wfs"] for m in methods[n]], dtype=float) for n in names]
    xs = np.arange(len(names))
    right.bar(xs, [w.mean() for w in wfs], color=[_color(n) for n in names], alpha=0.7, width=0.6)
    for x, name, values in zip(xs, names, wfs, strict=True):
        _points(right, x, values.tolist(), _color(name), 0.0)
    right.set_xticks(xs, names, rotation=30, ha="right")
    right.set_ylabel(f"wrongly flipped {split} samples at the end (WFS)")
    right.grid(alpha=0.3, axis="y")
    fig.suptitle("successful runs; bars = mean, points = runs")
    return save_figure(fig, path)


def _interval(stat: dict) -> tuple[float, float]:
    """(below, above) the mean: the bootstrap CI, or min–max for fewer than 3 runs."""
    if stat["n"] == 0:
        return 0.0, 0.0
    if stat["ci"] == "bootstrap":
        low, high = stat["ci_low"], stat["ci_high"]
    else:
        low, high = stat["min"], stat["max"]
    return max(0.0, stat["mean"] - low), max(0.0, high - stat["mean"])


def plot_summary(summary: dict, path: Path) -> Path:
    """Accuracy vs. cost per method, and epochs to the target ("never reached" marked)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    names = list(summary["methods"])
    for name in names:
        s = summary["methods"][name]
        color = _color(name)
        if s["final_acc"]["n"] == 0:
            continue
        below, above = _interval(s["final_acc"])
        xb, xa = _interval(s["sec_per_epoch"])
        left.errorbar(
            s["sec_per_epoch"]["mean"],
            100 * s["final_acc"]["mean"],
            xerr=[[xb], [xa]],
            yerr=[[100 * below], [100 * above]],
            fmt="o",
            color=color,
            capsize=3,
            label=name + (f" ({s['failed']}/{s['runs']} failed)" if s["failed"] else ""),
        )
        per_seed = [100 * v for v in s["per_seed"]["final_acc"].values()]
        left.scatter(
            [s["sec_per_epoch"]["mean"]] * len(per_seed), per_seed, s=9, color=color, alpha=0.5
        )
    left.set_xlabel("training seconds per epoch")
    left.set_ylabel("final test accuracy (%)")
    left.grid(alpha=0.3)
    if left.lines or left.collections:
        left.legend(fontsize=7)

    xs = np.arange(len(names))
    finite = [
        summary["methods"][n]["epochs_to_target"]["max"]
        for n in names
        if summary["methods"][n]["epochs_to_target"]["n"]
    ]
    never_height = max(finite) * 1.15 if finite else 1.0
    labels = []
    for x, name in zip(xs, names, strict=True):
        s = summary["methods"][name]
        stat = s["epochs_to_target"]
        color = _color(name)
        ok = s["runs"] - s["failed"]
        if stat["n"]:
            below, above = _interval(stat)
            right.bar(x, stat["mean"], color=color, alpha=0.75, width=0.6)
            right.errorbar(x, stat["mean"], yerr=[[below], [above]], color="black", capsize=3)
            _points(right, x, list(s["per_seed"]["epochs_to_target"].values()), color, 0.22)
            right.annotate(
                f"{s['reached_target']}/{ok}",
                (x, stat["max"]),
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 3),
                textcoords="offset points",
            )
        else:  # never reached: a hatched, labelled placeholder, not a zero bar
            right.bar(x, never_height, color="none", edgecolor=color, hatch="//", width=0.6, lw=1.0)
            text = "never\nreached" if ok else "all runs\nfailed"
            right.text(x, never_height / 2, text, ha="center", va="center", fontsize=7, rotation=90)
        labels.append(name + (f"\n{s['failed']}/{s['runs']} failed" if s["failed"] else ""))
    right.set_xticks(xs, labels, rotation=30, ha="right", fontsize=8)
    target = summary["target"]
    if math.isfinite(target["accuracy"]):
        right.set_ylabel(
            f"epochs to {100 * target['accuracy']:.2f}% {target['split']} acc "
            "(runs reaching it / successful)"
        )
    right.grid(alpha=0.3, axis="y")
    fig.suptitle(
        "successful runs: mean with 95% bootstrap CI (min–max for n < 3); points = runs; "
        f"selection: {summary['selection']}",
        fontsize=9,
    )
    return save_figure(fig, path)


def plot_all(
    frame: pd.DataFrame, runs: Sequence[RunResult], summary: dict, out: Path
) -> list[Path]:
    """Every plot of a comparison into directory ``out``."""
    return [
        plot_curves(frame, out / "curves.png"),
        plot_objectives(frame, out / "objectives.png"),
        plot_flips(runs, out / "flips.png"),
        plot_summary(summary, out / "summary.png"),
    ]


def plot_lr_sensitivity(tuning: dict[str, Any], path: Path) -> Path:
    """Final validation accuracy against learning rate, one panel per method (see module doc)."""
    methods = list(tuning["methods"])
    cols = min(4, max(1, len(methods)))
    rows = math.ceil(len(methods) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.8 * cols, 3.1 * rows), squeeze=False, sharey=True
    )
    chance = tuning["protocol"].get("chance")
    for ax, method in zip(axes.flat, methods, strict=False):
        entry = tuning["methods"][method]
        color = _color(method)
        option = (entry["space"].get("option") or {}).get("name")
        done = [t for t in entry["trials"] if t["state"] == "COMPLETE" and t["status"] == "ok"]
        failed = [t for t in entry["trials"] if t["state"] == "COMPLETE" and t["status"] != "ok"]
        pruned = [t for t in entry["trials"] if t["state"] == "PRUNED" and t["last_val_acc"]]
        markers = ["o", "s", "^", "D", "v", "P"]
        groups: dict[Any, list] = {}
        for t in done:
            groups.setdefault(t["params"].get(option) if option else None, []).append(t)
        for i, (value, trials) in enumerate(sorted(groups.items(), key=lambda kv: repr(kv[0]))):
            trials.sort(key=lambda t: t["params"]["lr"])
            label = f"{option}={value}" if option else "completed"
            ax.plot(
                [t["params"]["lr"] for t in trials],
                [100 * t["value"] for t in trials],
                marker=markers[i % len(markers)],
                ls="-" if len(trials) > 1 else "none",
                lw=0.8,
                color=color,
                alpha=0.9 - 0.25 * i,
                label=label,
            )
        if pruned:
            ax.scatter(
                [t["params"]["lr"] for t in pruned],
                [100 * t["last_val_acc"] for t in pruned],
                facecolor="none",
                edgecolor=color,
                label="pruned (last epoch reported)",
            )
        if failed:
            ax.scatter(
                [t["params"]["lr"] for t in failed],
                [100 * (chance or 0.0)] * len(failed),
                marker="x",
                color="black",
                label=f"failed ({len(failed)})",
            )
        best = entry.get("best")
        if best:
            ax.scatter(
                [best["params"]["lr"]],
                [100 * best["value"]],
                marker="*",
                s=160,
                color="gold",
                edgecolor="black",
                zorder=4,
                label="best",
            )
        if chance:
            ax.axhline(100 * chance, color="grey", lw=0.8, ls="--")
        ax.axvline(entry["space"]["lr"]["default"], color="grey", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.set_xlim(entry["space"]["lr"]["low"] / 1.25, entry["space"]["lr"]["high"] * 1.25)
        ax.set_title(method, fontsize=9)
        ax.set_xlabel("learning rate (dotted: default)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    for ax in axes[:, 0]:
        ax.set_ylabel("final validation accuracy (%)")
    for ax in list(axes.flat)[len(methods) :]:
        ax.axis("off")
    budget = tuning["budget"]["trials"]
    fig.suptitle(
        f"learning-rate sensitivity: {budget} trials per method ({tuning['sampler']['name']}); "
        "dashed = chance",
        fontsize=9,
    )
    fig.tight_layout()
    return save_figure(fig, path)


def plot_profile(profile: dict[str, Any], path: Path) -> Path:
    """The performance profile: fraction of workloads within τ × the best time, per method."""
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    taus = np.asarray(profile["taus"], dtype=float)
    for method, fractions in profile["curves"].items():
        ax.step(
            taus,
            fractions,
            where="post",
            label=method,
            color=_color(method),
            lw=1.6,
            ls=_style(method),
        )
    ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("τ (time to target / best method's time on that workload)")
    ax.set_ylabel("fraction of workloads within τ")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(
        f"performance profile over {len(profile['workloads'])} workload(s) "
        f"({profile['time']} to target; never reached = ∞)",
        fontsize=9,
    )
    return save_figure(fig, path)
