"""The LR sweep across widths and the coordinate check (μP diagnostics).

* :func:`lr_sweep` trains the harness model (``adam`` for SP, ``mup-adam`` for μP, via
  :func:`~advanced_optimizers.bench.train.train_run`) for every width × log2(LR) × seed, interleaving
  SP and μP run by run, and records the final epoch's mean training loss. :func:`sweep_summary` gives
  mean loss per (parametrization, width, LR) and the best LR per width; :func:`plot_lr_sweep` draws loss
  against log2(LR), one line per width, SP and μP side by side (the optimum drifts under SP and stays
  put under μP when μP works). A diagnostic of LR transfer only: the tuned comparison of μTransfer
  against SP is :mod:`.routes` (``advopt mu-study``).
* :func:`coord_check` records the mean absolute value of every layer's output (``mean |x|`` over a fixed
  batch) after 0..``steps`` training steps, for several widths: under μP these stay flat in width,
  under SP they grow with width (the "coordinate check" of Tensor Programs V / mup).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...mup import apply_mup_init, classify_parameters, create_mu_transfer_optimizer
from ..data import Dataset
from ..models import ModelSpec
from ..train import RunConfig, train_run

__all__ = [
    "PARAMETRIZATIONS",
    "coord_check",
    "lr_sweep",
    "plot_coord_check",
    "plot_lr_sweep",
    "sweep_markdown",
    "sweep_summary",
]

PARAMETRIZATIONS = {"sp": "adam", "mup": "mup-adam"}


# ----------------------------------------------------------------------------------------------
# LR sweep
# ----------------------------------------------------------------------------------------------
def lr_sweep(
    dataset: Dataset,
    widths: Sequence[int],
    log2_lrs: Sequence[float],
    *,
    seeds: Sequence[int] = (0, 1),
    epochs: int = 3,
    batch_size: int = 128,
    depth: int = 2,
    arch: str = "mlp",
    base_width: int = 64,
    parametrizations: Sequence[str] = ("sp", "mup"),
    mup_options: dict[str, Any] | None = None,
    on_run: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per run: parametrization, width, log2_lr, seed, train_loss (final epoch), test_acc.

    SP is the harness ``adam`` method, μP ``mup-adam`` with ``base_width``; the two alternate run by
    run so background load affects both alike. A diverged run has ``train_loss = inf``.
    ``mup_options``: extra options of ``mup-adam`` (e.g. ``{"readout_zero_init": True}``).
    """
    rows = []
    for width in widths:
        for log2_lr in log2_lrs:
            for seed in seeds:
                for param in parametrizations:
                    method = PARAMETRIZATIONS[param]
                    options = (
                        {"base_width": base_width, **(mup_options or {})} if param == "mup" else {}
                    )
                    config = RunConfig(
                        method,
                        options=options,
                        arch=arch,
                        width=width,
                        depth=depth,
                        epochs=epochs,
                        batch_size=batch_size,
                        lr=2.0**log2_lr,
                        seed=seed,
                    )
                    final = train_run(config, dataset).final
                    loss = final["train_loss"]
                    row = {
                        "parametrization": param,
                        "width": width,
                        "log2_lr": float(log2_lr),
                        "seed": seed,
                        "train_loss": loss if math.isfinite(loss) else math.inf,
                        "test_acc": final["test_acc"],
                        "train_seconds": final["train_seconds"],
                    }
                    rows.append(row)
                    if on_run is not None:
                        on_run(row)
    return rows


def sweep_summary(rows: Sequence[dict[str, Any]]) -> dict[str, dict[int, dict[str, Any]]]:
    """``{param: {width: {'loss': {log2_lr: mean}, 'best_log2_lr', 'best_loss'}}}`` (mean over seeds)."""
    sums: dict[tuple[str, int, float], list[float]] = {}
    for row in rows:
        key = (row["parametrization"], row["width"], row["log2_lr"])
        sums.setdefault(key, []).append(row["train_loss"])
    out: dict[str, dict[int, dict[str, Any]]] = {}
    order = {p: i for i, p in enumerate(PARAMETRIZATIONS)}
    for (param, width, log2_lr), losses in sorted(
        sums.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1], kv[0][2])
    ):
        entry = out.setdefault(param, {}).setdefault(width, {"loss": {}})
        entry["loss"][log2_lr] = sum(losses) / len(losses)
    for per_width in out.values():
        for entry in per_width.values():
            best = min(entry["loss"], key=lambda lr: entry["loss"][lr])
            entry["best_log2_lr"] = best
            entry["best_loss"] = entry["loss"][best]
    return out


def sweep_markdown(summary: dict[str, dict[int, dict[str, Any]]]) -> str:
    """Markdown table: per width, the best log2(LR) and its loss under each parametrization."""
    params = list(summary)
    widths = sorted({w for per in summary.values() for w in per})
    head = "| width | " + " | ".join(
        f"{p.upper()} best log2(lr) | {p.upper()} best loss" for p in params
    )
    lines = [head + " |", "|---:|" + "---:|---:|" * len(params)]
    for width in widths:
        cells = []
        for p in params:
            entry = summary[p].get(width)
            cells += (
                [f"{entry['best_log2_lr']:g}", f"{entry['best_loss']:.4f}"] if entry else ["", ""]
            )
        lines.append(f"| {width} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_lr_sweep(summary: dict[str, dict[int, dict[str, Any]]], path: Path) -> Path:
    """Training loss against log2(LR), one line per width; SP and μP side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..plots import save_figure

    params = list(summary)
    fig, axes = plt.subplots(1, len(params), figsize=(5.5 * len(params), 4), sharey=True)
    axes = [axes] if len(params) == 1 else list(axes)
    finite = [
        v for per in summary.values() for e in per.values() for v in e["loss"].values() if v < 1e9
    ]
    top = min(max(finite), 2.0 * min(finite) + 1.0) if finite else 1.0
    for ax, param in zip(axes, params, strict=True):
        widths = sorted(summary[param])
        cmap = plt.get_cmap("viridis")
        for i, width in enumerate(widths):
            entry = summary[param][width]
            xs = sorted(entry["loss"])
            ys = [min(entry["loss"][x], top * 1.5) for x in xs]
            color = cmap(i / max(len(widths) - 1, 1))
            ax.plot(xs, ys, marker="o", ms=3, color=color, label=f"width {width}")
            ax.plot(entry["best_log2_lr"], entry["best_loss"], "*", ms=10, color=color)
        ax.set_title(
            {"sp": "standard parametrization (Adam)", "mup": "μP (Adam)"}.get(param, param)
        )
        ax.set_xlabel("log2(learning rate)")
        ax.set_ylim(top=top)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("final training loss")
    axes[-1].legend(fontsize=8)
    return save_figure(fig, Path(path))


# ----------------------------------------------------------------------------------------------
# Coordinate check
# ----------------------------------------------------------------------------------------------
def _build(
    spec: ModelSpec, parametrization: str, base_width: int, lr: float, optimizer: str
) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = spec.build()
    if parametrization == "mup":
        with torch.device("meta"):
            base = replace(spec, width=base_width).build()
        infos = classify_parameters(model, base)
        apply_mup_init(model, infos)
        opt = create_mu_transfer_optimizer(
            model, base_model=base, base_hyperparams={"lr": lr}, optimizer=optimizer
        )
    else:
        opt = create_mu_transfer_optimizer(
            model, base_hyperparams={"lr": lr}, optimizer=optimizer, parametrization="sp"
        )
    return model, opt


def _layer_means(model: nn.Sequential, x: torch.Tensor) -> dict[str, float]:
    """``mean |output|`` of every Linear/Conv layer (pre-activations and logits) on ``x``."""
    out = {}
    h = x
    with torch.no_grad():
        for i, layer in enumerate(model):
            h = layer(h)
            if isinstance(layer, (nn.Linear, nn.Conv2d)):
                out[f"{i}:{type(layer).__name__}"] = h.abs().mean().item()
    return out


def coord_check(
    widths: Sequence[int],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    parametrization: str = "mup",
    lr: float = 1e-2,
    steps: int = 4,
    optimizer: str = "adam",
    base_width: int = 64,
    depth: int = 2,
    arch: str = "mlp",
    num_classes: int = 10,
    seeds: Sequence[int] = (0,),
) -> list[dict[str, Any]]:
    """Rows ``(parametrization, width, seed, step, layer, l1)``: mean |layer output| on ``x`` after
    ``step`` = 0..steps training steps on the fixed batch ``(x, y)`` (as mup's coord check)."""
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(
            f"parametrization must be one of {list(PARAMETRIZATIONS)}; got {parametrization!r}"
        )
    rows = []
    for width in widths:
        spec = ModelSpec(arch, tuple(x.shape[1:]), num_classes, width, depth)
        for seed in seeds:
            torch.manual_seed(seed)
            model, opt = _build(spec, parametrization, base_width, lr, optimizer)
            for step in range(steps + 1):
                for layer, l1 in _layer_means(model, x).items():
                    rows.append(
                        {
                            "parametrization": parametrization,
                            "width": width,
                            "seed": seed,
                            "step": step,
                            "layer": layer,
                            "l1": l1,
                        }
                    )
                if step < steps:
                    opt.zero_grad()
                    F.cross_entropy(model(x), y).backward()
                    opt.step()
    return rows


def plot_coord_check(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """mean |activation| against width (log-log), one line per layer, at the last step; SP | μP."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..plots import save_figure

    params = [p for p in PARAMETRIZATIONS if any(r["parametrization"] == p for r in rows)]
    last = max(r["step"] for r in rows)
    fig, axes = plt.subplots(1, len(params), figsize=(5.5 * len(params), 4), sharey=True)
    axes = [axes] if len(params) == 1 else list(axes)
    for ax, param in zip(axes, params, strict=True):
        sel = [r for r in rows if r["parametrization"] == param and r["step"] == last]
        for layer in sorted({r["layer"] for r in sel}, key=lambda s: int(s.split(":")[0])):
            widths = sorted({r["width"] for r in sel})
            means = [
                sum(r["l1"] for r in sel if r["layer"] == layer and r["width"] == w)
                / max(1, sum(1 for r in sel if r["layer"] == layer and r["width"] == w))
                for w in widths
            ]
            ax.plot(widths, means, marker="o", label=f"layer {layer}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width")
        ax.set_title(f"{param.upper()}: after {last} steps")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean |activation|")
    axes[-1].legend(fontsize=8)
    return save_figure(fig, Path(path))
