"""The pieces every ``advopt`` subcommand shares: argument types, the workload flags, the device.

``_add_workload`` adds the flags that define a workload (data, model, optimisation) to ``compare``
and ``tune``; ``_workload`` reads them back with the preset's defaults filled in.
"""

from __future__ import annotations

import argparse
import ast
import math
from typing import Any

EPILOG = """examples:
  advopt compare                                   # every method, bundled MNIST, MLP, quick preset
  advopt tune --preset full --trials 20 --out results/tune-mlp     # equal tuning budget per method
  advopt compare --preset full --tuned results/tune-mlp/tuning.json  # 5 seeds at the tuned settings
  advopt compare --preset full --methods sgd,adam  # 5 seeds x 10 epochs, 784-512-512-10, 10k val
  advopt compare --arch cnn --methods adam,fer-adam --epochs 5 --seeds 3
  advopt compare --opt fer-adam:fer_weight=0.2 --methods adam,fer-adam
  advopt report --out results/mnist-mlp-quick      # rebuild summary.md and plots from runs/
  advopt compare --preset full --arch cnn --width 16 --n-train 20000   # the CNN study
  advopt profile results/mnist-mlp-full results/mnist-cnn-full   # time-to-target profile
"""


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.replace(" ", ",").split(",") if part.strip()]


def _seeds(text: str) -> list[int]:
    """``"5"`` → seeds 0..4; ``"0,3,7"`` → those seeds."""
    parts = _csv(text)
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds takes a count or a comma list of ints, got {text!r}"
        ) from None
    if len(values) == 1 and "," not in text:
        if values[0] < 1:
            raise argparse.ArgumentTypeError(f"--seeds count must be >= 1, got {values[0]}")
        return list(range(values[0]))
    return values


def _option(text: str) -> tuple[str, str, Any]:
    """``METHOD:KEY=VALUE`` → (method, key, value); VALUE is a Python literal or a plain string."""
    try:
        method, assignment = text.split(":", 1)
        key, raw = assignment.split("=", 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--opt takes METHOD:KEY=VALUE, got {text!r}") from None
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return method.strip(), key.strip(), value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {text}")
    return value


def _real(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _learning_rate(text: str) -> float:
    value = _real(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _momentum(text: str) -> float:
    value = _real(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(
            f"must be in [0, 1) (0 = no momentum, 0.9 = the usual), got {text}"
        )
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an int >= 0, got {text}")
    return value


def _nonnegative(text: str) -> float:
    value = _real(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _device(text: str) -> str:
    """``--device``: one of auto/cpu/cuda/mps that this machine has (checked at parse time)."""
    from ..device import DEVICES, available_devices

    if text not in DEVICES:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(DEVICES)}, got {text!r}")
    available = available_devices()
    if text not in available:
        raise argparse.ArgumentTypeError(
            f"{text} is not available on this machine; available: {', '.join(available)}"
        )
    return text


_TRUST_HELP = (
    "read local dataset files without checking their SHA-256 sums (your own copies, e.g. a "
    "cifar-10-batches-py unpacked by hand); CIFAR-10 batches are still read with a restricted "
    "unpickler that cannot run code"
)


def _preset_text(presets: dict[str, dict[str, Any]]) -> str:
    unset = {"n_train": "all", "n_test": "all", "validation": "dataset default", "depth": "default"}
    lines = []
    for name, preset in presets.items():
        parts = [f"{k}={unset.get(k, v) if v is None else v}" for k, v in preset.items()]
        lines.append(f"  {name:<6} " + ", ".join(parts))
    return "\n".join(lines)


def _add_workload(p: argparse.ArgumentParser, what: str) -> None:
    """The flags that define a workload (data, model, optimisation), shared by compare and tune."""
    from ..compare import PRESETS
    from ..data import DATASETS
    from ..models import ARCHITECTURES
    from ..train import SCHEDULES

    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        default="quick",
        help=f"defaults for {what} (default: quick; see the list above)",
    )
    p.add_argument(
        "--methods",
        type=_csv,
        default=None,
        help="comma-separated method names (default: all registered methods)",
    )
    p.add_argument("--dataset", choices=DATASETS, default="mnist", help="default: mnist (bundled)")
    p.add_argument(
        "--arch", choices=ARCHITECTURES, default=None, help="model (default: the preset's)"
    )
    p.add_argument(
        "--width",
        type=_positive_int,
        default=None,
        help="hidden width (mlp, default 512) or first conv channels (cnn, default 16)",
    )
    p.add_argument(
        "--depth",
        type=int,
        default=None,
        help="hidden layers (mlp: default 1, full preset 2) or conv blocks (cnn: default 2); "
        "the CNN study: --preset full --arch cnn",
    )
    p.add_argument("--epochs", type=_positive_int, default=None, help="epochs per run")
    p.add_argument("--batch-size", type=_positive_int, default=128, help="default: 128")
    p.add_argument(
        "--momentum", type=_momentum, default=0.9, help="for SGD-based methods, in [0, 1) (0.9)"
    )
    p.add_argument("--weight-decay", type=_nonnegative, default=0.0, help=">= 0 (default: 0)")
    p.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default=None,
        help="learning-rate schedule: constant, or cosine annealing to 0 per step "
        "(default: the preset's — quick: constant, full: cosine)",
    )
    p.add_argument(
        "--validation",
        type=_nonnegative_int,
        default=None,
        metavar="N",
        help="validation split: the last N training images (default: the preset's — quick 2000, "
        "full the dataset's default: 10000 for MNIST/Fashion-MNIST, 5000 for CIFAR-10); every "
        "selection is made on it. 0 = no validation split (smoke tests and legacy comparisons "
        "only: then the test set is evaluated every epoch and the report says so)",
    )
    p.add_argument(
        "--n-train",
        type=_positive_int,
        default=None,
        help="use the first N training samples left after the validation split (default: preset)",
    )
    p.add_argument(
        "--opt",
        type=_option,
        action="append",
        default=[],
        metavar="METHOD:KEY=VALUE",
        help="a method option, e.g. fer-adam:fer_weight=0.2 (repeatable)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="directory with the dataset files (default: $ADVOPT_DATA_DIR, ./data, "
        "~/.cache/advanced_optimizers, bundled MNIST, then download)",
    )
    p.add_argument(
        "--device",
        type=_device,
        default="auto",
        help="where to train: auto (cuda if available, else cpu), cpu, cuda or mps (default: auto)",
    )
    p.add_argument("--trust-local-data", action="store_true", help=_TRUST_HELP)
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="torch intra-op threads (default: torch's choice); 1 keeps timings steady "
        "while other work shares the machine",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _workload(args: argparse.Namespace) -> dict[str, Any]:
    """The workload settings of ``args`` with the preset's defaults filled in."""
    from ..compare import PRESETS

    preset = PRESETS[args.preset]
    options: dict[str, dict[str, Any]] = {}
    for method, key, value in args.opt:
        options.setdefault(method, {})[key] = value
    return {
        "methods": args.methods or [],
        "dataset": args.dataset,
        "arch": args.arch or preset["arch"],
        "width": args.width,
        "depth": args.depth if args.depth is not None else preset["depth"],
        "epochs": args.epochs or preset["epochs"],
        "batch_size": args.batch_size,
        "momentum": args.momentum,
        "weight_decay": args.weight_decay,
        "n_train": args.n_train or preset["n_train"],
        "validation": args.validation if args.validation is not None else preset["validation"],
        "schedule": args.schedule or preset["schedule"],
        "method_options": options,
    }


def _setup_device(args: argparse.Namespace) -> Any:
    from ..device import resolve_device
    from ..distributed import init_from_env

    device = resolve_device(args.device)
    init_from_env(device)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    return device
