"""Wider is better? The transferred μP setting at every width, in our μP and in microsoft/mup.

The oracle is microsoft/mup (``pip install --no-deps mup``): the same MLP with its last layer a
``mup.MuReadout(output_mult=readout_multiplier)``, ``mup.set_base_shapes(model, base, delta=...)``
(which rescales the readout by √m and every ``Linear`` bias by √m_in) and ``mup.MuAdam``; the
``init_scale`` σ multiplies every weight (≥ 2-D parameter) after ``set_base_shapes``, as our μP does
(mup's examples multiply their weights' init by ``init_std``; mup itself has no such argument).
Both models are built right after ``torch.manual_seed(seed)`` in the same layer order, so they
start from the same torch default draws; both train in :func:`fit`, which is the harness's loop
(:func:`~..train.train_run`: same batches, same order per ``(seed, epoch)``, the same loss),
evaluating the validation split after every epoch and the training cross-entropy at chosen epochs
(never the test set).

The two implementations differ in one place: Adam's eps. Ours divides the eps of input, hidden and
vector parameters by their width multiplier, and applies the readout's in the no-multiplier form
(an explicit-multiplier readout with eps·α/m); mup keeps one eps. :func:`trajectory_check` trains both
side by side in float64 with eps → 0 (identical in exact arithmetic) and in float32 with eps = 1e-8
(the sweep's setting).

A run is one JSON file per (implementation, width, seed) under ``widths/``; a re-run reuses the files
of the same settings. With a constant learning rate, the first ``epochs`` epochs of a
``long_epochs`` run *are* the short run, so one run gives both horizons.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...mup import create_mu_transfer_optimizer
from ..atomic import write_json
from ..data import Dataset
from ..methods import get_method
from ..models import ModelSpec
from ..stats import mean_ci
from .routes import METHOD, StudyConfig

__all__ = [
    "IMPLEMENTATIONS",
    "build_oracle",
    "build_ours",
    "fit",
    "import_mup",
    "trajectory_check",
    "width_summary",
    "width_sweep",
]

IMPLEMENTATIONS = ("ours", "oracle")


def import_mup() -> Any:
    """microsoft/mup, also when a local ``mup.py`` (``benchmarks/mup.py``) shadows it on sys.path."""
    module = sys.modules.get("mup")
    if module is not None and hasattr(module, "MuReadout"):
        return module
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if not (Path(p or ".").resolve() / "mup.py").exists()]
    shadow = sys.modules.pop("mup", None)
    try:
        return importlib.import_module("mup")
    except ImportError as exc:
        raise ImportError(
            "the oracle needs microsoft/mup: pip install --no-deps mup (torch is not touched)"
        ) from exc
    finally:
        sys.path[:] = saved
        if shadow is not None and "mup" not in sys.modules:
            sys.modules["mup"] = shadow


def _shapes(spec: ModelSpec, width: int) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = ModelSpec(spec.arch, spec.input_shape, spec.num_classes, width, spec.depth).build()
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Build the model in ``dtype`` (its draws and rescales then happen in it: float64 draws are
    not float32's, but both implementations draw the same)."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


def build_ours(
    spec: ModelSpec,
    base_width: int,
    setting: dict[str, float],
    *,
    eps: float = 1e-8,
    dtype: torch.dtype = torch.float32,
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """Our μP model (the harness method ``mup-adam``'s) and its Adam; call after ``manual_seed``."""
    alpha, sigma = float(setting["readout_multiplier"]), float(setting["init_scale"])
    method = get_method(METHOD, base_width=base_width, readout_multiplier=alpha, init_scale=sigma)
    with _default_dtype(dtype):  # drawn and rescaled in dtype
        model = method.build_model(spec)
    optimizer = create_mu_transfer_optimizer(
        model,
        base_model=_shapes(spec, base_width),
        delta_model=_shapes(spec, base_width + 1),
        base_hyperparams={"lr": float(setting["lr"]), "eps": eps},
        optimizer="adam",
        rescale_init=False,  # done by build_model
        readout_multiplier=alpha,
        init_scale=sigma,
        nonfinite="ignore",
    )
    return model, optimizer


def build_oracle(
    spec: ModelSpec,
    base_width: int,
    setting: dict[str, float],
    *,
    eps: float = 1e-8,
    dtype: torch.dtype = torch.float32,
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The same MLP in microsoft/mup (``MuReadout``, ``set_base_shapes``, ``MuAdam``)."""
    mup = import_mup()
    alpha, sigma = float(setting["readout_multiplier"]), float(setting["init_scale"])

    def make(width: int) -> nn.Sequential:
        layers: list[nn.Module] = [nn.Flatten()]
        fan = spec.input_dim
        for _ in range(spec.depth):
            layers += [nn.Linear(fan, width), nn.ReLU()]
            fan = width
        layers.append(mup.MuReadout(fan, spec.num_classes, output_mult=alpha))
        return nn.Sequential(*layers)

    state = torch.get_rng_state()
    with torch.device("meta"):
        base = {n: p.shape for n, p in make(base_width).named_parameters()}
        delta = {n: p.shape for n, p in make(base_width + 1).named_parameters()}
    torch.set_rng_state(state)  # the meta models draw nothing; make sure of it
    with _default_dtype(dtype):
        model = make(spec.width)
        mup.set_base_shapes(model, base, delta=delta)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.mul_(sigma)
    return model, mup.MuAdam(model.parameters(), lr=float(setting["lr"]), eps=eps)


BUILDERS = {"ours": build_ours, "oracle": build_oracle}


@torch.no_grad()
def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype) -> tuple:
    model.eval()
    loss, hits = 0.0, 0
    for start in range(0, len(y), 1000):
        logits = model(x[start : start + 1000].to(dtype))
        loss += F.cross_entropy(logits, y[start : start + 1000], reduction="sum").item()
        hits += (logits.argmax(1) == y[start : start + 1000]).sum().item()
    model.train()
    return loss / len(y), hits / len(y)


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Dataset,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    train_eval_at: Sequence[int] = (),
    dtype: torch.dtype = torch.float32,
    on_step: Callable[[int, float], None] | None = None,
    max_steps: int | None = None,
) -> list[dict[str, Any]]:
    """The harness's training loop (batches of :meth:`Dataset.train_batches`); per epoch
    ``train_loss`` (the epoch's sample-weighted mean), ``val_loss``/``val_acc``, ``train_seconds``,
    and ``train_ce``/``train_acc`` (first 10 000 training samples, eval mode) at ``train_eval_at``.
    Stops after a non-finite training loss."""
    history: list[dict[str, Any]] = []
    step = 0
    model.train()
    for epoch in range(1, epochs + 1):
        total, start = 0.0, time.perf_counter()
        for batch in data.train_batches(batch_size, seed, epoch):
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(batch.x.to(dtype)), batch.y)
            loss.backward()
            optimizer.step()
            value = loss.item()
            total += value * len(batch.y)
            step += 1
            if on_step is not None:
                on_step(step, value)
            if max_steps is not None and step >= max_steps:
                return history
        record: dict[str, Any] = {"epoch": epoch, "train_loss": total / data.n_train}
        record["train_seconds"] = time.perf_counter() - start
        if not math.isfinite(record["train_loss"]):
            history.append(record)
            break
        if data.n_val:
            record["val_loss"], record["val_acc"] = _evaluate(model, data.x_val, data.y_val, dtype)
        if epoch in train_eval_at:
            n = min(10_000, data.n_train)
            record["train_ce"], record["train_acc"] = _evaluate(
                model, data.x_train[:n], data.y_train[:n], dtype
            )
        history.append(record)
    return history


def width_sweep(
    config: StudyConfig,
    setting: dict[str, float],
    data: Dataset,
    out: Path,
    say: Callable[[str], None] = print,
    implementations: Sequence[str] = IMPLEMENTATIONS,
) -> list[dict[str, Any]]:
    """Every width × seed × implementation at ``setting`` for ``long_epochs`` (the two interleaved,
    so background load affects both alike); ``data`` must have no test split."""
    if data.n_test:
        raise ValueError("the width sweep reads no test set: pass Dataset.without_test()")
    rows = []
    for width in config.widths:
        spec = ModelSpec("mlp", data.input_shape, data.num_classes, width, config.depth)
        for seed in config.width_seeds:
            for impl in implementations:
                key = {"impl": impl, "width": width, "seed": seed, "setting": setting,
                       "epochs": config.long_epochs, "base_width": config.proxy_width,
                       "batch_size": config.batch_size, "n_train": data.n_train,
                       "n_val": data.n_val}  # fmt: skip
                key = json.loads(json.dumps(key))
                path = out / f"{impl}_w{width}_s{seed}.json"
                if path.exists():
                    saved = json.loads(path.read_text())
                    if saved["key"] == key:
                        rows.append(saved)
                        continue
                torch.manual_seed(seed)
                model, opt = BUILDERS[impl](spec, config.proxy_width, setting)
                start = time.perf_counter()
                history = fit(
                    model,
                    opt,
                    data,
                    epochs=config.long_epochs,
                    batch_size=config.batch_size,
                    seed=seed,
                    train_eval_at=(config.epochs, config.long_epochs),
                )
                row = {"key": key, "history": history, "wall_seconds": time.perf_counter() - start}
                write_json(path, row)
                last = history[-1]
                say(
                    f"width {width:>5} seed {seed} {impl:>6}: train loss at epoch "
                    f"{config.epochs} {history[min(config.epochs, len(history)) - 1]['train_loss']:.4f}, "
                    f"at {last['epoch']} {last['train_loss']:.4f}, val acc {last.get('val_acc', math.nan):.4f} "
                    f"({row['wall_seconds']:.0f} s)"
                )
                rows.append(row)
    return rows


def width_summary(rows: Sequence[dict[str, Any]], horizons: Sequence[int]) -> dict[str, Any]:
    """``{impl: {horizon: {width: {metric: {mean, std, n}}}}}`` and the wider-is-better verdicts.

    Metrics at epoch ``horizon``: ``train_loss`` (that epoch's mean training loss), ``val_acc``,
    ``val_loss``, ``train_ce`` where measured, and ``train_loss_run_mean`` (the mean of the epochs'
    training losses up to it: the whole trajectory, less sensitive to one late loss spike). A verdict
    holds when the mean over seeds improves at every width step (training loss falls, validation
    accuracy rises); ``violations`` lists the steps where it does not."""
    table: dict[str, Any] = {}
    for row in rows:
        key = row["key"]
        for horizon in horizons:
            if len(row["history"]) < horizon:
                continue
            record = row["history"][horizon - 1]
            cell = (
                table.setdefault(key["impl"], {})
                .setdefault(horizon, {})
                .setdefault(key["width"], {})
            )
            for metric in ("train_loss", "val_acc", "val_loss", "train_ce"):
                if metric in record:
                    cell.setdefault(metric, []).append(record[metric])
            run_mean = sum(h["train_loss"] for h in row["history"][:horizon]) / horizon
            cell.setdefault("train_loss_run_mean", []).append(run_mean)
    verdicts: dict[str, Any] = {}
    for impl, per_h in table.items():
        for horizon, per_w in per_h.items():
            for cell in per_w.values():
                for metric, values in list(cell.items()):
                    stats = mean_ci(values)
                    cell[metric] = {"mean": stats["mean"], "std": stats["std"], "n": len(values),
                                    "min": min(values), "max": max(values)}  # fmt: skip
            widths = sorted(per_w)
            for metric, better in (("train_loss", -1), ("train_loss_run_mean", -1), ("val_acc", 1)):
                steps = [(a, b) for a, b in itertools.pairwise(widths)
                         if metric in per_w[a] and metric in per_w[b]]  # fmt: skip
                bad = [f"{a}->{b}" for a, b in steps
                       if not better * (per_w[b][metric]["mean"] - per_w[a][metric]["mean"]) > 0]  # fmt: skip
                verdicts.setdefault(impl, {}).setdefault(horizon, {})[metric] = {
                    "holds": not bad,
                    "violations": bad,
                }
    return {"table": table, "verdicts": verdicts}


def trajectory_check(
    config: StudyConfig,
    setting: dict[str, float],
    data: Dataset,
    widths: Sequence[int] = (128, 1024),
    seed: int = 0,
    max_steps: int | None = None,
) -> list[dict[str, Any]]:
    """Ours against the oracle at equal settings, step by step: per width and precision, the largest
    difference of the per-step training loss and of the final validation logits (one epoch unless
    ``max_steps``), from the same initial draws. With eps = 1e-30 (→ 0), in float64 and float32, the
    two are the same computation; with eps = 1e-8 (float32: what the sweep runs) they differ by
    where eps sits (see the module docstring)."""
    rows = []
    for dtype, eps in ((torch.float64, 1e-30), (torch.float32, 1e-30), (torch.float32, 1e-8)):
        for width in widths:
            spec = ModelSpec("mlp", data.input_shape, data.num_classes, width, config.depth)
            losses: dict[str, list[float]] = {}
            logits, start_logits = {}, {}
            start = time.perf_counter()
            for impl, build in BUILDERS.items():
                torch.manual_seed(seed)
                model, opt = build(spec, config.proxy_width, setting, eps=eps, dtype=dtype)
                with torch.no_grad():
                    start_logits[impl] = model(data.x_val[:1000].to(dtype))
                trace: list[float] = []
                fit(model, opt, data, epochs=1, batch_size=config.batch_size, seed=seed,
                    dtype=dtype, on_step=lambda _, v, t=trace: t.append(v), max_steps=max_steps)  # fmt: skip
                losses[impl] = trace
                with torch.no_grad():
                    logits[impl] = model.eval()(data.x_val[:1000].to(dtype))
            diffs = [abs(a - b) for a, b in zip(losses["ours"], losses["oracle"], strict=True)]
            rows.append(
                {
                    "dtype": str(dtype).replace("torch.", ""),
                    "eps": eps,
                    "width": width,
                    "steps": len(diffs),
                    "first_loss": losses["ours"][0],
                    "last_loss_ours": losses["ours"][-1],
                    "last_loss_oracle": losses["oracle"][-1],
                    "max_abs_loss_diff": max(diffs),
                    "max_abs_logit_diff": (logits["ours"] - logits["oracle"]).abs().max().item(),
                    "logit_scale": logits["ours"].abs().mean().item(),
                    "seconds": time.perf_counter() - start,
                    "max_abs_init_logit_diff": (start_logits["ours"] - start_logits["oracle"])
                    .abs()
                    .max()
                    .item(),
                }
            )
    return rows
