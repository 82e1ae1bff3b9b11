"""The Lightning callback: FER and LoCal act inside Lightning and give the plain loop's numbers."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset

L = pytest.importorskip("lightning.pytorch")

from advanced_optimizers import FERLoss, IndexedDataset  # noqa: E402
from advanced_optimizers.integrations.lightning import AdvancedOptimizersCallback  # noqa: E402
from advanced_optimizers.registry import create_optimizer  # noqa: E402

N, EPOCHS, BATCH = 48, 3, 8


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one intra-op thread (two mostly wait on a small shared machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning",  # Lightning's advice (workers, logging) on a toy run
    "ignore::DeprecationWarning",
    # Lightning 2.6 on torch 2.13 (third-party): torch's pytree deprecation of LeafSpec
    "ignore:.*LeafSpec.*:FutureWarning",
)


def toy_data(seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(N, 8, generator=g), torch.randint(0, 3, (N,), generator=g)
    x[:, 0] += 2.0 * y  # learnable
    return TensorDataset(x, y)


def make_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)
    )


class Net(L.LightningModule):
    def __init__(self, build, net: nn.Module | None = None) -> None:
        super().__init__()
        self.net = net if net is not None else make_net()
        self.build = build

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch[0], batch[1]
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return self.build(self)


def fit(module: L.LightningModule, loader: DataLoader, callback, **trainer_kwargs) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=EPOCHS,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
        **trainer_kwargs,
    )
    trainer.fit(module, loader)
    return trainer


def max_difference(a: nn.Module, b: nn.Module) -> float:
    return max(
        (p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )


def fer_adam(model):
    return create_optimizer(
        "fer-adam", model, lr=1e-2, memory_size=N, epochs=EPOCHS, consistency_threshold=0.0
    )


@pytest.mark.parametrize("accumulate", [1, 2])
def test_fer_optimizer_matches_the_plain_loop(accumulate: int) -> None:
    torch.manual_seed(0)
    data = IndexedDataset(toy_data())
    module = Net(fer_adam)
    plain = copy.deepcopy(module.net)
    callback = AdvancedOptimizersCallback()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no "FER is inactive"
        trainer = fit(
            module, DataLoader(data, batch_size=BATCH), callback, accumulate_grad_batches=accumulate
        )
    optimizer = trainer.optimizers[0]
    assert optimizer.ever_correct.any() and optimizer.epoch == EPOCHS
    assert callback.last_metrics["fer_lambda"] == pytest.approx(0.9)

    reference = fer_adam(plain)
    for epoch in range(1, EPOCHS + 1):
        reference.set_epoch(epoch, EPOCHS)
        for k, (x, y, index) in enumerate(DataLoader(data, batch_size=BATCH)):
            (reference.fer_loss(plain(x), y, index) / accumulate).backward()
            if k % accumulate == accumulate - 1:
                reference.step()
                reference.zero_grad()
    assert torch.equal(reference.ever_correct, optimizer.ever_correct)
    assert torch.allclose(reference.soft_targets, optimizer.soft_targets, atol=1e-5)
    assert max_difference(module.net, plain) < 1e-5


def test_fer_loss_with_a_plain_optimizer() -> None:
    torch.manual_seed(1)
    data = IndexedDataset(toy_data(1))
    module = Net(lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9))
    plain = copy.deepcopy(module.net)
    criterion = FERLoss(N, epochs=EPOCHS, consistency_threshold=0.0)
    fit(module, DataLoader(data, batch_size=BATCH), AdvancedOptimizersCallback(fer=criterion))
    assert criterion.ever_correct.any() and not criterion.deferred  # restored after fit

    reference = FERLoss(N, epochs=EPOCHS, consistency_threshold=0.0)
    optimizer = torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9)
    for epoch in range(1, EPOCHS + 1):
        reference.set_epoch(epoch, EPOCHS)
        for x, y, index in DataLoader(data, batch_size=BATCH):
            optimizer.zero_grad()
            reference(plain(x), y, index).backward()
            optimizer.step()
    assert torch.equal(reference.ever_correct, criterion.ever_correct)
    assert max_difference(module.net, plain) < 1e-5


def localized(model):
    return create_optimizer(
        "localized-sgd",
        model,
        lr=0.05,
        selection_mode="static",
        warmup_epochs=0,
        hebbian_lr=1e-3,
        max_transition=2,
    )


def test_localized_moves_its_transition_and_matches_the_plain_loop() -> None:
    torch.manual_seed(2)
    data = toy_data(2)  # LoCal needs no index
    module = Net(localized)
    plain = copy.deepcopy(module.net)
    callback = AdvancedOptimizersCallback()
    trainer = fit(module, DataLoader(data, batch_size=BATCH), callback)
    optimizer = trainer.optimizers[0]
    assert optimizer.transition > 0 and optimizer.hebbian_steps > 0
    assert callback.last_metrics["transition_next"] == optimizer.transition

    reference = localized(plain)
    for _ in range(EPOCHS):
        total = 0.0
        for x, y in DataLoader(data, batch_size=BATCH):
            reference.zero_grad()
            loss = F.cross_entropy(plain(x), y)
            reference.observe_loss(loss)
            loss.backward()
            reference.step()
            total += loss.item() * len(y)
        reference.end_epoch(total / N)
    assert reference.transition == optimizer.transition
    assert [h["transition"] for h in reference.history] == [
        h["transition"] for h in optimizer.history
    ]
    assert reference.gate == pytest.approx(optimizer.gate)
    assert reference.gate_rule.best == pytest.approx(optimizer.gate_rule.best)
    assert max_difference(module.net, plain) < 1e-5


def test_plain_and_wrapped_optimizers_are_left_alone() -> None:
    torch.manual_seed(3)
    loader = DataLoader(toy_data(3), batch_size=BATCH)  # not indexed: nothing needs the index
    for build in (
        lambda m: create_optimizer("gc-adam", m, lr=1e-2),
        lambda m: torch.optim.Adam(m.parameters(), lr=1e-2),
    ):
        callback = AdvancedOptimizersCallback()
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            fit(Net(build), loader, callback)
        assert callback.last_metrics == {}


class DictRows(Dataset):
    def __init__(self) -> None:
        self.data = toy_data(4)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i):
        x, y = self.data[i]
        return {"x": x, "labels": y}


class DictNet(Net):
    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch["x"]), batch["labels"])


def test_dict_batches() -> None:
    module = DictNet(fer_adam)
    trainer = fit(
        module,
        DataLoader(IndexedDataset(DictRows()), batch_size=BATCH),
        AdvancedOptimizersCallback(),
    )
    assert trainer.optimizers[0].ever_correct.any()


@pytest.mark.filterwarnings("ignore:FEROptimizer.step.. without fer_loss:RuntimeWarning")
def test_misuse_is_reported() -> None:
    with pytest.raises(ValueError, match="IndexedDataset"):
        fit(Net(fer_adam), DataLoader(toy_data(), batch_size=BATCH), AdvancedOptimizersCallback())

    class Bypass(Net):  # the loss does not come from self(x): FER cannot act
        def training_step(self, batch, batch_idx):
            return F.cross_entropy(self.net(batch[0]), batch[1])

    with pytest.warns(RuntimeWarning, match="self"):
        fit(
            Bypass(fer_adam),
            DataLoader(IndexedDataset(toy_data()), batch_size=BATCH),
            AdvancedOptimizersCallback(),
        )
    with pytest.raises(TypeError, match="FERLoss"):
        AdvancedOptimizersCallback(fer=torch.nn.CrossEntropyLoss())


DDP_SCRIPT = """
import json, sys, warnings
import torch
from torch.utils.data import DataLoader
import lightning.pytorch as L
sys.path.insert(0, {tests!r})
from test_integrations_lightning import Net, fer_adam, localized, toy_data
from advanced_optimizers import IndexedDataset
from advanced_optimizers.integrations.lightning import AdvancedOptimizersCallback
warnings.filterwarnings("ignore")
name = {name!r}


class Dump(L.Callback):  # rank 0 writes what the test compares (the ranks are forked workers)
    def on_train_end(self, trainer, module):
        optimizer = trainer.optimizers[0]
        result = {{"params": [p.detach().flatten().tolist() for p in module.parameters()]}}
        if name == "fer":
            result["ever_correct"] = optimizer.ever_correct.tolist()
        else:
            result["transitions"] = [h["transition"] for h in optimizer.history]
            result["gate"] = optimizer.gate
        if trainer.global_rank == 0:
            with open(sys.argv[1], "w") as f:
                json.dump(result, f)


torch.manual_seed(0)
module = Net(fer_adam if name == "fer" else localized)
trainer = L.Trainer(
    accelerator="cpu", devices=2, max_epochs={epochs}, logger=False,
    # forked ranks (no second start-up); LoCal freezes layers, so DDP must allow unused parameters
    strategy="ddp_fork" if name == "fer" else "ddp_fork_find_unused_parameters_true",
    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    callbacks=[AdvancedOptimizersCallback(), Dump()],
)
trainer.fit(module, DataLoader(IndexedDataset(toy_data()), batch_size={batch}))
"""


def ddp_fit(tmp_path, name: str) -> dict:
    """Lightning DDP on 2 CPU ranks (gloo) in a subprocess; rank 0's results."""
    script = tmp_path / "ddp_fit.py"
    tests = str(Path(__file__).resolve().parent)
    script.write_text(DDP_SCRIPT.format(tests=tests, name=name, epochs=EPOCHS, batch=BATCH))
    out = tmp_path / "results.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=300,
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def global_batches(data: IndexedDataset, epoch: int):
    """The global batches of 2 ranks x BATCH under Lightning's DistributedSampler (shuffled, seed
    0, set_epoch(epoch)); each rank's first rows first (LoCal's Hebbian subsample takes a batch's
    first quarter, on each rank)."""
    shards = []
    for rank in range(2):
        sampler = DistributedSampler(data, num_replicas=2, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(epoch)
        shards.append(list(sampler))
    quarter = BATCH // 4
    for start in range(0, N // 2, BATCH):
        parts = [shard[start : start + BATCH] for shard in shards]
        order = [i for p in parts for i in p[:quarter]] + [i for p in parts for i in p[quarter:]]
        x, y = data.dataset[order]
        yield x, y, torch.tensor(order)


def assert_same_parameters(model: nn.Module, saved: list[list[float]]) -> None:
    for mine, theirs in zip(model.parameters(), saved, strict=True):
        assert torch.allclose(mine.detach().flatten(), torch.tensor(theirs), atol=1e-5)


def test_fer_under_ddp_matches_one_process_with_the_global_batch(tmp_path) -> None:
    result = ddp_fit(tmp_path, "fer")
    data = IndexedDataset(toy_data())
    torch.manual_seed(0)
    net = Net(fer_adam).net
    reference = fer_adam(net)
    for epoch in range(1, EPOCHS + 1):
        reference.set_epoch(epoch, EPOCHS)
        for x, y, index in global_batches(data, epoch - 1):
            reference.zero_grad()
            reference.fer_loss(net(x), y, index).backward()
            reference.step()
    assert reference.ever_correct.any()
    assert reference.ever_correct.tolist() == result["ever_correct"]
    assert_same_parameters(net, result["params"])


def test_localized_under_ddp_matches_one_process_with_the_global_batch(tmp_path) -> None:
    result = ddp_fit(tmp_path, "localized")
    data = IndexedDataset(toy_data())
    torch.manual_seed(0)
    net = Net(localized).net
    reference = localized(net)
    for epoch in range(EPOCHS):
        total = 0.0
        for x, y, _index in global_batches(data, epoch):
            reference.zero_grad()
            loss = F.cross_entropy(net(x), y)
            reference.observe_loss(loss)
            loss.backward()
            reference.step()
            total += loss.item() * len(y)
        reference.end_epoch(total / N)
    assert reference.hebbian_steps > 0
    assert [h["transition"] for h in reference.history] == result["transitions"]
    assert reference.gate == pytest.approx(result["gate"], rel=1e-5)
    assert_same_parameters(net, result["params"])
