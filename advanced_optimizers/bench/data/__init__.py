"""Datasets for the harness: MNIST (bundled), Fashion-MNIST and CIFAR-10, held in memory as tensors."""

from .dataset import (
    DATASETS,
    TRAIN_EVAL_SAMPLES,
    VALIDATION_DEFAULTS,
    Dataset,
    load_dataset,
    move_batch,
)
from .formats import DataFormatError, read_cifar_batch, read_idx
from .sources import CATALOG, DataNotFoundError

__all__ = [
    "CATALOG",
    "DATASETS",
    "TRAIN_EVAL_SAMPLES",
    "VALIDATION_DEFAULTS",
    "DataFormatError",
    "DataNotFoundError",
    "Dataset",
    "load_dataset",
    "move_batch",
    "read_cifar_batch",
    "read_idx",
]
