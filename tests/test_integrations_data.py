"""IndexedDataset and collate_with_index: every item carries its index through the DataLoader."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import advanced_optimizers as ao
from advanced_optimizers.data import IndexedDataset, collate_with_index


def test_tuple_items_get_their_index_and_the_default_collate_stacks_it() -> None:
    x, y = torch.randn(10, 3), torch.arange(10) % 2
    ds = IndexedDataset(TensorDataset(x, y))
    assert len(ds) == 10
    xi, yi, i = ds[7]
    assert torch.equal(xi, x[7]) and yi == y[7] and i == 7
    seen = []
    for xb, yb, idx in DataLoader(ds, batch_size=4, shuffle=True):
        assert idx.dtype == torch.long and torch.equal(xb, x[idx]) and torch.equal(yb, y[idx])
        seen += idx.tolist()
    assert sorted(seen) == list(range(10))


def test_dict_and_plain_items() -> None:
    rows = [{"input_ids": torch.tensor([i, i + 1]), "labels": i % 3} for i in range(6)]
    ds = IndexedDataset(rows)
    assert ds[4] == {**rows[4], "index": 4}
    batch = next(iter(DataLoader(ds, batch_size=6)))
    assert torch.equal(batch["index"], torch.arange(6))
    assert IndexedDataset([torch.zeros(2)] * 3)[2][1] == 2  # a bare item becomes (item, index)
    assert IndexedDataset(rows, key="row")[1]["row"] == 1
    assert ao.IndexedDataset is IndexedDataset and ao.collate_with_index is collate_with_index


def test_batched_fetch_is_kept() -> None:
    class Batched(list):
        calls = 0

        def __getitems__(self, keys):
            Batched.calls += 1
            return [self[k] for k in keys]

    ds = IndexedDataset(Batched({"a": float(i)} for i in range(8)))
    batch = next(iter(DataLoader(ds, batch_size=8)))
    assert Batched.calls == 1 and torch.equal(batch["index"], torch.arange(8))


def test_misuse_is_reported() -> None:
    with pytest.raises(TypeError, match="map-style"):
        IndexedDataset(iter(range(3)))
    with pytest.raises(KeyError, match="already have a 'index' key"):
        IndexedDataset([{"index": 0}])[0]
    with pytest.raises(TypeError, match="callable"):
        collate_with_index(3)


def test_collate_with_index_survives_a_collate_that_drops_unknown_keys() -> None:
    def keep_known(items):  # like a data collator that keeps only the model's inputs
        return {
            "input_ids": torch.stack([it["input_ids"] for it in items]),
            "labels": torch.tensor([it["labels"] for it in items]),
        }

    rows = [{"input_ids": torch.tensor([i, 0]), "labels": i % 2, "text": "s"} for i in range(5)]
    items = [IndexedDataset(rows)[i] for i in (3, 0, 4)]
    batch = collate_with_index(keep_known)(items)
    assert batch["index"].tolist() == [3, 0, 4] and batch["labels"].tolist() == [1, 0, 0]
    # tuple items: the base collate sees (x, y), the indices come back last
    tuples = [IndexedDataset(TensorDataset(torch.randn(5, 2), torch.arange(5)))[i] for i in (1, 2)]
    xb, yb, idx = collate_with_index()(tuples)
    assert xb.shape == (2, 2) and yb.tolist() == [1, 2] and idx.tolist() == [1, 2]
    # items without an index (an evaluation set) pass through unchanged
    assert collate_with_index(keep_known)(rows[:2])["labels"].tolist() == [0, 1]


def test_fer_gradient_follows_the_trainers_loss_scale() -> None:
    """wrap_logits(loss_scale=c): a loss multiplied by c (accumulation, AMP) gets c x FER's
    gradient."""
    torch.manual_seed(0)
    logits = torch.randn(6, 4)
    targets, indices = torch.randint(0, 4, (6,)), torch.arange(6)
    store = ao.FERLoss(6, epochs=3, consistency_threshold=0.0)
    store.set_epoch(1)
    store(logits, targets, indices)  # warm-up epoch: fill the store
    store.commit()
    store.set_epoch(2)
    assert store.ever_correct.any()

    def gradient(loss_fn) -> torch.Tensor:
        z = logits.clone().requires_grad_(True)
        loss_fn(z).backward()
        store.discard()
        return z.grad

    reference = gradient(lambda z: store(z, targets, indices))
    for scale in (1.0, 0.5, 1024.0):
        got = gradient(
            lambda z, s=scale: (
                s
                * torch.nn.functional.cross_entropy(
                    store.wrap_logits(z, targets, indices, loss_scale=s), targets
                )
            )
        )
        assert torch.allclose(got, scale * reference, rtol=1e-4, atol=1e-6), scale
