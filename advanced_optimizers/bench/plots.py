"""PNG plots of a comparison: one line per method (mean over seeds) with a band (min–max over seeds).

* ``curves.png``: test accuracy and training loss, each against epoch and against training time;
* ``flips.png``: correct→wrong flips per epoch, and the wrongly flipped samples (WFS) at the end;
* ``summary.png``: final accuracy against training time per epoch (mean and 95% CI over seeds, the
  accuracy/cost trade-off at a glance), and epochs to the target accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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

__all__ = ["plot_all", "save_figure"]


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Save ``fig`` as PNG atomically and close it."""
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)
    return path


def _band(ax: plt.Axes, frame: pd.DataFrame, x: str, y: str, log: bool = False) -> None:
    for method, rows in frame.groupby("method", sort=False):
        color = _color(method)
        by_epoch = rows.groupby("epoch")
        xs = by_epoch[x].mean()
        ys = by_epoch[y]
        ax.plot(xs, ys.mean(), label=method, color=color, lw=1.6)
        ax.fill_between(xs, ys.min(), ys.max(), color=color, alpha=0.18, lw=0)
    if log:
        ax.set_yscale("log")
    if x == "epoch":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def _color(method: str) -> tuple:
    """A method's colour, the same in every plot: by its place in the registry."""
    names = available_methods()
    index = names.index(method) if method in names else len(names) + hash(method) % 10
    return plt.get_cmap("tab10")(index % 10)


def plot_curves(frame: pd.DataFrame, path: Path) -> Path:
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    panels = [
        (axes[0, 0], "epoch", "test_acc", "epoch", "test accuracy", False),
        (axes[0, 1], "elapsed_seconds", "test_acc", "training time (s)", "test accuracy", False),
        (axes[1, 0], "epoch", "train_loss", "epoch", "training loss (log)", True),
        (
            axes[1, 1],
            "elapsed_seconds",
            "train_loss",
            "training time (s)",
            "training loss (log)",
            True,
        ),
    ]
    for ax, x, y, xlabel, ylabel, log in panels:
        _band(ax, frame, x, y, log)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    axes[0, 0].legend(fontsize=8)
    seeds = frame.groupby("method")["seed"].nunique().max()
    fig.suptitle(f"mean over {seeds} seed(s); band = min–max over seeds")
    return save_figure(fig, path)


def plot_flips(runs: Sequence[RunResult], path: Path) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    methods: dict[str, list[dict]] = {}
    for run in runs:
        methods.setdefault(run.config.method, []).append(flip_metrics(run.correct))
    names = list(methods)
    for name in names:
        color = _color(name)
        flips = np.array([m["flips_per_epoch"] for m in methods[name]], dtype=float)
        if flips.shape[1]:
            epochs = np.arange(2, flips.shape[1] + 2)
            left.plot(epochs, flips.mean(0), label=name, color=color, lw=1.6)
            left.fill_between(epochs, flips.min(0), flips.max(0), color=color, alpha=0.18, lw=0)
    left.set_xlabel("epoch")
    left.set_ylabel("test samples correct→wrong")
    left.grid(alpha=0.3)
    if left.lines:
        left.legend(fontsize=8)
    wfs = [np.array([m["wfs"] for m in methods[n]], dtype=float) for n in names]
    right.bar(
        names,
        [w.mean() for w in wfs],
        yerr=[w.std() for w in wfs],
        color=[_color(n) for n in names],
    )
    right.set_ylabel("wrongly flipped samples at the end (WFS)")
    right.tick_params(axis="x", rotation=30)
    right.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)


def _ci_halfwidth(stat: dict) -> float:
    return (stat["ci_high"] - stat["ci_low"]) / 2 if stat["n"] > 1 else 0.0


def plot_summary(summary: dict, path: Path) -> Path:
    """Accuracy vs. cost per method, and epochs to the target accuracy (never reached: no bar)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4))
    names = list(summary["methods"])
    colors = [_color(n) for n in names]
    for color, name in zip(colors, names, strict=True):
        s = summary["methods"][name]
        left.errorbar(
            s["sec_per_epoch"]["mean"],
            100 * s["final_acc"]["mean"],
            xerr=_ci_halfwidth(s["sec_per_epoch"]),
            yerr=100 * _ci_halfwidth(s["final_acc"]),
            fmt="o",
            color=color,
            capsize=3,
            label=name,
        )
    left.set_xlabel("training seconds per epoch")
    left.set_ylabel("final test accuracy (%)")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    epochs = [summary["methods"][n]["epochs_to_target"] for n in names]
    means = [e["mean"] if np.isfinite(e["mean"]) else 0.0 for e in epochs]
    right.bar(
        names,
        means,
        yerr=[_ci_halfwidth(e) if e["n"] > 1 else 0 for e in epochs],
        color=colors[: len(names)],
        capsize=3,
    )
    for i, name in enumerate(names):
        s = summary["methods"][name]
        right.annotate(
            f"{s['reached_target']}/{len(s['seeds'])}",
            (i, means[i]),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    right.set_ylabel(f"epochs to {100 * summary['target']['accuracy']:.2f}% (seeds reaching it)")
    right.tick_params(axis="x", rotation=30)
    right.grid(alpha=0.3, axis="y")
    fig.suptitle("mean and 95% CI over seeds")
    return save_figure(fig, path)


def plot_all(
    frame: pd.DataFrame, runs: Sequence[RunResult], summary: dict, out: Path
) -> list[Path]:
    """Every plot of a comparison into directory ``out``."""
    return [
        plot_curves(frame, out / "curves.png"),
        plot_flips(runs, out / "flips.png"),
        plot_summary(summary, out / "summary.png"),
    ]
