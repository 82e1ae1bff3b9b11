"""FER (or LoCal, or any optimizer of the library) inside PyTorch Lightning, on MNIST.

    python examples/lightning_fer.py                       # fer-adam, 10 000 images, 4 epochs
    python examples/lightning_fer.py --optimizer localized-sgd
    python examples/lightning_fer.py --smoke               # 512 images, 2 epochs: seconds

The LightningModule is ordinary: ``configure_optimizers`` returns the optimizer, ``training_step``
computes ``F.cross_entropy(self(x), y)``. ``AdvancedOptimizersCallback`` does the rest (FER's epoch
and per-sample indices, FER's loss through the logits of ``self(x)``, LoCal's loss gate and epoch
hook, the distributed syncs). Needs ``pip install 'advanced_optimizers[integrations]'``.
"""

from __future__ import annotations

import argparse
import warnings

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advanced_optimizers import IndexedDataset
from advanced_optimizers.integrations.lightning import AdvancedOptimizersCallback
from advanced_optimizers.registry import create_optimizer

OPTIONS = {
    "fer-adam": {"lr": 1e-3},
    "localized-sgd": {"lr": 0.05, "selection_mode": "static", "max_transition": 1},
    "gc-adam": {"lr": 1e-3},
}


def load_mnist(n_train: int, n_test: int) -> tuple[TensorDataset, TensorDataset]:
    """The bundled MNIST (first n images), or synthetic images if the bench extra is missing."""
    try:
        from advanced_optimizers.bench.data import load_dataset

        data = load_dataset("mnist", download_ok=False, progress=False).subset(n_train, n_test)
        return TensorDataset(data.x_train, data.y_train), TensorDataset(data.x_test, data.y_test)
    except Exception:
        g = torch.Generator().manual_seed(0)
        y = torch.randint(0, 10, (n_train + n_test,), generator=g)
        x = torch.randn(n_train + n_test, 1, 28, 28, generator=g) * 0.3
        for k in range(10):
            x[y == k, 0, 2 * k + 3 : 2 * k + 5] += 1.0
        return TensorDataset(x[:n_train], y[:n_train]), TensorDataset(x[n_train:], y[n_train:])


class Classifier(L.LightningModule):
    def __init__(self, optimizer: str, train_size: int, epochs: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
            nn.Linear(64, 10),
        )  # fmt: skip
        self.optimizer_name, self.train_size, self.epochs = optimizer, train_size, epochs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y, _index = batch  # the index is for FER; the callback reads it
        loss = F.cross_entropy(self(x), y)  # from self(x): FER acts on these logits
        self.log("train_loss", loss, prog_bar=False)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        options = dict(OPTIONS[self.optimizer_name])
        if self.optimizer_name.startswith("fer"):
            options.update(memory_size=self.train_size, epochs=self.epochs)
        return create_optimizer(self.optimizer_name, self, **options)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", choices=sorted(OPTIONS), default="fer-adam")
    parser.add_argument("--smoke", action="store_true", help="tiny data, 2 epochs (seconds)")
    args = parser.parse_args(argv)
    n_train, n_test, epochs = (512, 256, 2) if args.smoke else (10_000, 2_000, 4)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")  # Lightning 2.6 on torch 2.13
    L.seed_everything(0, verbose=False)
    train, test = load_mnist(n_train, n_test)
    model = Classifier(args.optimizer, len(train), epochs)
    callback = AdvancedOptimizersCallback()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(
        model,
        DataLoader(IndexedDataset(train), batch_size=64, shuffle=True),
        DataLoader(test, batch_size=512),
    )
    metrics = {k: round(float(v), 4) for k, v in trainer.callback_metrics.items()}
    print(f"{args.optimizer}: {epochs} epochs on {len(train)} images -> {metrics}")


if __name__ == "__main__":
    main()
