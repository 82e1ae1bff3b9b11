"""FER, LoCal and Gradient Correction in an ordinary PyTorch training loop, on MNIST.

    python examples/plain_loop.py            # 10 000 MNIST images, 4 epochs per algorithm
    python examples/plain_loop.py --smoke    # 1024 images, 3 epochs: seconds

The MNIST copy bundled with the package is used (``advanced_optimizers.bench.data`` needs the
``bench`` extra); without it the script falls back to synthetic MNIST-shaped data. Each algorithm adds
its calls to the same loop:

- FER: the loader yields each sample's index (``IndexedDataset``), ``optimizer.set_epoch`` at every
  epoch, the loss is ``optimizer.fer_loss(logits, y, index)``;
- LoCal: ``optimizer.observe_loss(loss)`` every step and ``optimizer.end_epoch(mean loss)`` every
  epoch (the transition layer moves there);
- Gradient Correction: nothing (a plain optimizer).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advanced_optimizers import IndexedDataset
from advanced_optimizers.registry import create_optimizer


def load_mnist(n_train: int, n_test: int) -> tuple[TensorDataset, TensorDataset, str]:
    """The bundled MNIST (first n images), or synthetic images if the bench extra is missing."""
    try:
        from advanced_optimizers.bench.data import load_dataset

        data = load_dataset("mnist", download_ok=False, progress=False).subset(n_train, n_test)
        train, test = (data.x_train, data.y_train), (data.x_test, data.y_test)
        source = "bundled MNIST"
    except Exception as exc:  # no bench extra, no bundled copy
        g = torch.Generator().manual_seed(0)
        y = torch.randint(0, 10, (n_train + n_test,), generator=g)
        x = torch.randn(n_train + n_test, 1, 28, 28, generator=g) * 0.3
        for k in range(10):  # class k lights up rows 2k+3, 2k+4
            x[y == k, 0, 2 * k + 3 : 2 * k + 5] += 1.0
        train, test = (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])
        source = f"synthetic data ({type(exc).__name__})"
    return TensorDataset(*train), TensorDataset(*test), source


def mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 128),
        nn.ReLU(),
        nn.Linear(128, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


@torch.no_grad()
def accuracy(model: nn.Module, test: TensorDataset) -> float:
    model.eval()
    x, y = test.tensors
    correct = (model(x).argmax(1) == y).float().mean().item()
    model.train()
    return correct


def train_fer(train, test, epochs: int, batch: int) -> str:
    model = mlp()
    optimizer = create_optimizer("fer-adam", model, lr=1e-3, memory_size=len(train), epochs=epochs)
    loader = DataLoader(IndexedDataset(train), batch_size=batch, shuffle=True)
    for epoch in range(1, epochs + 1):
        optimizer.set_epoch(epoch)
        for x, y, index in loader:
            optimizer.zero_grad()
            loss = optimizer.fer_loss(model(x), y, index)
            loss.backward()
            optimizer.step()
    s = optimizer.store_summary()
    return (
        f"fer-adam      acc {accuracy(model, test):.3f}  store: {s['fer_flagged']:.0%} of the "
        f"samples flagged, lambda {s['fer_lambda']:.2f}"
    )


def train_localized(train, test, epochs: int, batch: int) -> str:
    model = mlp()
    optimizer = create_optimizer(
        "localized-sgd", model, lr=0.05, selection_mode="static", warmup_epochs=1, max_transition=1
    )
    loader = DataLoader(train, batch_size=batch, shuffle=True)
    for _ in range(epochs):
        total = 0.0
        for x, y in loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            optimizer.observe_loss(loss)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)
        optimizer.end_epoch(total / len(train))
    return (
        f"localized-sgd acc {accuracy(model, test):.3f}  transition {optimizer.transition}, "
        f"modes {optimizer.modes}"
    )


def train_gc(train, test, epochs: int, batch: int) -> str:
    model = mlp()
    optimizer = create_optimizer("gc-adam", model, lr=1e-3)
    loader = DataLoader(train, batch_size=batch, shuffle=True)
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    coef = optimizer.diagnostics()["gcode_coef"]
    return f"gc-adam       acc {accuracy(model, test):.3f}  mean GC-ODE coefficient {coef:.3f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny data, 3 epochs (seconds)")
    args = parser.parse_args(argv)
    n_train, n_test, epochs = (1024, 512, 3) if args.smoke else (10_000, 2_000, 4)
    torch.manual_seed(0)
    train, test, source = load_mnist(n_train, n_test)
    print(f"{source}: {len(train)} training / {len(test)} test images, {epochs} epochs")
    for run in (train_fer, train_localized, train_gc):
        print(run(train, test, epochs, batch=64), flush=True)


if __name__ == "__main__":
    main()
