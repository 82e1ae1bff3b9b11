"""Every algorithm inside a real ``DistributedDataParallel`` wrapper: two CPU processes (gloo on the
loopback), each rank training on its own shard, end with the same parameters and algorithm state.

One ``torch.multiprocessing.spawn`` runs every scenario (a few seconds); each rank saves what it
ended with, and the tests below compare the ranks. A scenario that raised on a rank is reported by
its test with the rank's traceback.
"""

from __future__ import annotations

import datetime
import gc
import os
import socket
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

WORLD = 2
EPOCHS = 3
STEPS = 2  # per epoch
SHARD = 12  # rows per rank and step
CLASSES = 3


def _mlp(layers: int = 3) -> nn.Sequential:
    torch.manual_seed(0)
    mods: list[nn.Module] = [nn.Flatten(), nn.Linear(16, 8), nn.ReLU()]
    for _ in range(layers - 2):
        mods += [nn.Linear(8, 8), nn.ReLU()]
    return nn.Sequential(*mods, nn.Linear(8, CLASSES))


def _shards(rank: int, epoch: int = 0) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """This rank's rows of every global batch of an epoch: (x, y, dataset index)."""
    g = torch.Generator().manual_seed(1)
    out = []
    for step in range(STEPS):
        n = SHARD * WORLD
        y = torch.randint(0, CLASSES, (n,), generator=g)
        x = torch.randn(n, 16, generator=g)
        x[:, 0] += 2.0 * y
        index = torch.arange(step * n, (step + 1) * n)
        out.append((x[rank::WORLD], y[rank::WORLD], index[rank::WORLD]))
    return out


def _flat(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in module.parameters()])


def _fer(rank: int) -> dict:
    from advanced_optimizers import FEROptimizer

    model = _mlp()
    ddp = DDP(model)
    opt = FEROptimizer(
        ddp.parameters(),
        torch.optim.Adam,
        {"lr": 1e-2},
        memory_size=STEPS * SHARD * WORLD,
        epochs=EPOCHS,
        consistency_threshold=0.0,
        num_classes=CLASSES,
    )
    for epoch in range(1, EPOCHS + 1):
        opt.set_epoch(epoch)
        for x, y, index in _shards(rank):
            opt.zero_grad()
            opt.fer_loss(ddp(x), y, index).backward()
            opt.sync_distributed()
            opt.step()
    return {
        "params": _flat(model),
        "soft_targets": opt.soft_targets.clone(),
        "ever_correct": opt.ever_correct.clone(),
    }


def _gc(rank: int) -> dict:
    from advanced_optimizers import create_gradient_correction_optimizer

    model = _mlp()
    ddp = DDP(model)
    opt = create_gradient_correction_optimizer(
        ddp.parameters(), lr=1e-2, gcw_strength=0.5, meta_lr=1e-2
    )
    start = [c.clone() for c in opt.coefficients()]
    for _ in range(EPOCHS):
        for x, y, _index in _shards(rank):
            opt.zero_grad()
            F.cross_entropy(ddp(x), y).backward()
            opt.step()
    return {"params": _flat(model), "coefs": opt.coefficients(), "coefs_start": start}


def _localized(rank: int) -> dict:
    from advanced_optimizers import create_localized_optimizer

    model = _mlp(layers=4)
    ddp = DDP(model, find_unused_parameters=True)
    opt = create_localized_optimizer(
        ddp,
        lr=0.1,
        hebbian_lr=0.05,
        selection_mode="static",
        warmup_epochs=0,
        weak_supervision_weight=10.0,
    )
    transitions = [opt.transition]
    for _ in range(EPOCHS):
        total = 0.0
        for x, y, _index in _shards(rank):
            opt.zero_grad()
            loss = F.cross_entropy(ddp(x), y)
            opt.observe_loss(loss.detach())
            loss.backward()
            opt.sync_distributed()
            opt.step()
            total += loss.item()
        opt.end_epoch(total / STEPS)  # this rank's own mean: LoCal averages it over the ranks
        transitions.append(opt.transition)
    return {
        "params": _flat(model),
        "transitions": transitions,
        "gate": opt.gate,
        "hebbian_steps": opt.hebbian_steps,
    }


def _sigprop(rank: int) -> dict:
    from advanced_optimizers import SigPropNet, create_sigprop_optimizer

    torch.manual_seed(0)
    model = SigPropNet(16, [8, 8], CLASSES)
    ddp = DDP(model)
    opt = create_sigprop_optimizer(model, lr=1e-2, signal_lr=1e-3)
    hidden_before = [b[0].weight.detach().clone() for b in model.blocks]
    for _ in range(EPOCHS):
        for x, y, _index in _shards(rank):
            opt.zero_grad()
            ddp(x, y).backward()  # the training loss through the wrapper
            opt.step()
    return {
        "params": _flat(model),
        "hidden_changed": [
            not torch.equal(b[0].weight.detach(), w)
            for b, w in zip(model.blocks, hidden_before, strict=True)
        ],
    }


def _mup(rank: int) -> dict:
    from advanced_optimizers import create_mu_transfer_optimizer

    model = _mlp()
    ddp = DDP(model)
    opt = create_mu_transfer_optimizer(
        ddp, {"width": 4}, {"width": 8}, {"lr": 1e-2, "weight_decay": 0.01}
    )
    for _ in range(EPOCHS):
        for x, y, _index in _shards(rank):
            opt.zero_grad()
            F.cross_entropy(ddp(x), y).backward()
            opt.step()
    return {"params": _flat(model), "lrs": sorted({g["lr"] for g in opt.param_groups})}


def _misuse(rank: int) -> dict:
    """The two clear failures: LoCal without find_unused_parameters, SigProp's bypassing call."""
    from advanced_optimizers import SigPropNet, create_localized_optimizer

    out = {}
    ddp = DDP(_mlp())
    try:
        create_localized_optimizer(ddp)
    except Exception as error:  # the test checks the type
        out["localized"] = (type(error).__name__, str(error))
    sig = DDP(SigPropNet(16, [8], CLASSES))
    x, y, _index = _shards(rank)[0]
    try:
        sig.module.training_loss(x, y)
    except Exception as error:
        out["sigprop"] = (type(error).__name__, str(error))
    return out


SCENARIOS = {
    "fer": _fer,
    "gradient_correction": _gc,
    "localized": _localized,
    "sigprop": _sigprop,
    "mup": _mup,
    "misuse": _misuse,
}


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60)
    )
    results: dict = {}
    try:
        for name, scenario in SCENARIOS.items():
            try:
                results[name] = scenario(rank)
            except Exception:  # reported by the scenario's test
                results[name] = {"error": traceback.format_exc()}
            dist.barrier()
    finally:
        torch.save(results, Path(out) / f"rank{rank}.pt")
        gc.collect()  # free DDP's gloo work objects before the group goes
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _results(ranks: list[dict], name: str) -> list[dict]:
    got = [r[name] for r in ranks]
    for rank, result in enumerate(got):
        if "error" in result:
            pytest.fail(f"{name} raised on rank {rank}:\n{result['error']}")
    return got


def _assert_same_params(results: list[dict]) -> None:
    first = results[0]["params"]
    for other in results[1:]:
        assert torch.equal(first, other["params"]), (first - other["params"]).abs().max()


@pytest.mark.parametrize("name", ["fer", "gradient_correction", "localized", "sigprop", "mup"])
def test_ddp_ranks_end_with_identical_parameters(ranks: list[dict], name: str) -> None:
    _assert_same_params(_results(ranks, name))


def test_ddp_fer_store_filled_and_identical(ranks: list[dict]) -> None:
    a, b = _results(ranks, "fer")
    assert a["ever_correct"].sum() > STEPS * SHARD  # flags from both ranks' shards
    assert torch.equal(a["ever_correct"], b["ever_correct"])
    assert torch.equal(a["soft_targets"], b["soft_targets"])
    assert a["soft_targets"].abs().sum() > 0


def test_ddp_gradient_correction_learns_identical_coefficients(ranks: list[dict]) -> None:
    a, b = _results(ranks, "gradient_correction")
    for mine, theirs, start in zip(a["coefs"], b["coefs"], a["coefs_start"], strict=True):
        assert torch.equal(mine, theirs)
        assert not torch.equal(mine, start)


def test_ddp_localized_transition_moves_identically(ranks: list[dict]) -> None:
    a, b = _results(ranks, "localized")
    assert a["transitions"][0] == 0 and a["transitions"][-1] > 0, a["transitions"]
    assert a["transitions"] == b["transitions"]
    assert a["hebbian_steps"] == b["hebbian_steps"] > 0
    assert a["gate"] == b["gate"]


def test_ddp_sigprop_trains_hidden_layers_through_the_wrapper(ranks: list[dict]) -> None:
    for result in _results(ranks, "sigprop"):
        assert all(result["hidden_changed"]), result["hidden_changed"]


def test_ddp_mup_groups_keep_their_learning_rates(ranks: list[dict]) -> None:
    a, b = _results(ranks, "mup")
    assert len(a["lrs"]) > 1 and a["lrs"] == b["lrs"]  # μP's per-role learning rates


def test_ddp_localized_without_find_unused_parameters_is_refused(ranks: list[dict]) -> None:
    for result in _results(ranks, "misuse"):
        kind, message = result["localized"]
        assert kind == "ValueError" and "find_unused_parameters=True" in message


def test_ddp_sigprop_training_loss_bypassing_the_wrapper_is_refused(ranks: list[dict]) -> None:
    for result in _results(ranks, "misuse"):
        kind, message = result["sigprop"]
        assert kind == "RuntimeError" and "model(x, y)" in message
