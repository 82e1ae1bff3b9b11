"""Datasets whose items carry their own index, for the algorithms that keep per-sample state (FER).

:class:`IndexedDataset` wraps any map-style dataset: a tuple item ``(x, y)`` becomes
``(x, y, index)``, a dict item (Hugging Face style) gets an ``"index"`` key, any other item ``x``
becomes ``(x, index)``. torch's default collate stacks the indices into a ``(B,)`` int64 tensor, so
``for x, y, index in DataLoader(IndexedDataset(ds), ...)`` works as it is.
:func:`collate_with_index` is for a base collate that would drop or choke on the index (a Hugging
Face data collator, say): it takes the indices out of the items, calls the base collate on the rest
and puts them back into the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, default_collate

__all__ = ["IndexedDataset", "collate_with_index"]


class IndexedDataset(Dataset):
    """``dataset`` whose every item also carries its index (module docstring).

    Args:
        dataset: a map-style dataset (``__getitem__`` and ``__len__``), e.g. a
            ``torch.utils.data.TensorDataset`` or a Hugging Face ``datasets.Dataset``.
        key: the name of the index in dict items (``"index"``).

    Batched fetching (``__getitems__``, which Hugging Face datasets implement) is kept when the
    wrapped dataset has it.
    """

    def __init__(self, dataset: Any, key: str = "index") -> None:
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError(
                "IndexedDataset needs a map-style dataset (with __getitem__ and __len__), got "
                f"{type(dataset).__name__}; an IterableDataset has no stable per-sample index"
            )
        if not isinstance(key, str) or not key:
            raise TypeError(f"key must be a non-empty string, got {key!r}")
        self.dataset = dataset
        self.key = key

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self._with_index(self.dataset[index], int(index))

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        getitems = getattr(self.dataset, "__getitems__", None)
        items = getitems(list(indices)) if getitems is not None else None
        if items is None:
            items = [self.dataset[i] for i in indices]
        return [self._with_index(item, int(i)) for item, i in zip(items, indices, strict=True)]

    def _with_index(self, item: Any, index: int) -> Any:
        if isinstance(item, Mapping):
            if self.key in item:
                raise KeyError(
                    f"the dataset's items already have a {self.key!r} key; pass "
                    f"IndexedDataset(dataset, key=...) with another name"
                )
            return {**item, self.key: index}
        if isinstance(item, (tuple, list)):
            return (*item, index)
        return (item, index)

    def __repr__(self) -> str:
        return f"IndexedDataset({self.dataset!r}, key={self.key!r})"


def collate_with_index(
    base_collate: Callable[[list[Any]], Any] | None = None, key: str = "index"
) -> Callable[[list[Any]], Any]:
    """A collate that keeps the items' indices through ``base_collate`` (torch's default if None).

    Dict items: ``key`` is taken out of every item, ``base_collate`` batches the rest, and the batch
    (a mapping) gets ``batch[key]``, a ``(B,)`` int64 tensor. Tuple items: the last element is the
    index and the batch becomes ``(*base_collate(rest), indices)``. Items without the index (an
    evaluation set that is not indexed) go to ``base_collate`` unchanged.
    """
    base = default_collate if base_collate is None else base_collate
    if not callable(base):
        raise TypeError(f"base_collate must be callable, got {type(base).__name__}")

    def collate(items: list[Any]) -> Any:
        if not items:
            return base(items)
        first = items[0]
        if isinstance(first, Mapping):
            if key not in first:
                return base(items)
            indices = torch.tensor([int(item[key]) for item in items], dtype=torch.long)
            batch = base([{k: v for k, v in item.items() if k != key} for item in items])
            if not isinstance(batch, Mapping):
                raise TypeError(
                    f"collate_with_index: the base collate returned {type(batch).__name__} for dict "
                    f"items; it must return a mapping to receive {key!r}"
                )
            batch[key] = indices
            return batch
        if isinstance(first, tuple) and _is_index(first[-1]):
            indices = torch.tensor([int(item[-1]) for item in items], dtype=torch.long)
            batch = base([item[:-1] for item in items])
            return (*batch, indices) if isinstance(batch, (tuple, list)) else (batch, indices)
        return base(items)

    collate.base_collate = base  # type: ignore[attr-defined]
    return collate


def _is_index(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point()
