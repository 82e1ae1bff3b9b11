"""FER under DistributedDataParallel: each rank trains on its shard, the store stays one store.

    torchrun --nproc-per-node 2 examples/torchrun_ddp.py --smoke   # CPU, gloo: seconds
    torchrun --nproc-per-node 2 examples/torchrun_ddp.py
    python examples/torchrun_ddp.py --smoke                        # one process works too

Each rank computes ``optimizer.fer_loss`` on its own samples, so it writes only their rows of FER's
per-sample store. ``optimizer.sync_distributed()`` after ``backward()`` and before ``step()`` gives
every rank every other rank's rows, so all ranks hold the store one process would hold after the
global batch (the script checks it at the end). The same call exists on ``LocalizedOptimizer``
(LoCal's Hebbian terms and loss gate); Lightning's and Hugging Face's integrations make it for you.
"""

from __future__ import annotations

import argparse
import gc
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from advanced_optimizers import IndexedDataset
from advanced_optimizers.registry import create_optimizer


def synthetic(n: int) -> TensorDataset:
    g = torch.Generator().manual_seed(0)  # every rank builds the same data
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.randn(n, 64, generator=g)
    x[torch.arange(n), y] += 3.0  # learnable
    return TensorDataset(x, y)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny data, 3 epochs (seconds)")
    args = parser.parse_args(argv)
    n, epochs = (1024, 3) if args.smoke else (20_000, 5)

    distributed = "WORLD_SIZE" in os.environ
    if distributed:
        dist.init_process_group("gloo")  # CPU; use "nccl" with one GPU per rank
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts them)
    torch.set_num_threads(1)

    data = IndexedDataset(synthetic(n))
    sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(data, batch_size=64, sampler=sampler)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = create_optimizer("fer-adam", model, lr=1e-2, memory_size=n, epochs=epochs)
    ddp = DistributedDataParallel(model) if distributed else model

    for epoch in range(1, epochs + 1):
        sampler.set_epoch(epoch)
        optimizer.set_epoch(epoch)
        total = torch.zeros(2)
        for x, y, index in loader:
            optimizer.zero_grad()
            loss = optimizer.fer_loss(ddp(x), y, index)
            loss.backward()  # DDP averages the gradients
            optimizer.sync_distributed()  # ...and this the store rows (no-op in one process)
            optimizer.step()
            total += torch.tensor([loss.item() * len(y), len(y)])
        if distributed:
            dist.all_reduce(total)
        if rank == 0:
            s = optimizer.store_summary()
            print(
                f"epoch {epoch}: loss {total[0] / total[1]:.4f}, store {s['fer_flagged']:.0%} "
                f"flagged, lambda {s['fer_lambda']:.2f}",
                flush=True,
            )

    # every rank holds the same store (and, through DDP, the same weights)
    check = torch.stack(
        [optimizer.soft_targets.double().sum(), optimizer.ever_correct.sum().double()]
    )
    copies = [torch.zeros_like(check) for _ in range(world)]
    if distributed:
        dist.all_gather(copies, check)
    else:
        copies = [check]
    if rank == 0:
        same = all(torch.allclose(c, copies[0]) for c in copies)
        print(f"{world} rank(s): identical FER stores on every rank: {same}")
        if not same:
            raise SystemExit(1)
    if distributed:
        # DDP's reducer holds gloo work objects: free them while the interpreter is fully alive
        # (freed at interpreter shutdown, they can abort the process: "terminate called without an
        # active exception"), then tear the group down together
        del ddp, optimizer, model
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
