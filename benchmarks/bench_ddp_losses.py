"""Collectives and time of one training step of a method's objective on 2 gloo processes (CPU).

For each objective (``robult`` with a target queue, ``shared_private``, ``contrastive``): a default-size
:class:`robult.models.RobultModel` on 3 vector modalities, ``--batch`` samples per rank, forward, loss and backward
(no optimizer, no DDP wrapper: the gradient all-reduce is the same for every version of the losses). Reports the
number of ``all_gather``/``all_reduce`` calls of one step and the median step time over ``--steps`` steps.

    python benchmarks/bench_ddp_losses.py --batch 256 --steps 30

Run it on two checkouts (``PYTHONPATH=<checkout>/src``) to compare versions of the losses side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from robult import Batch, ModalitySpec, TaskSpec
from robult.losses import RobultLoss, RobultLossConfig
from robult.losses.baselines import (
    InstanceContrastiveLoss,
    InstanceContrastiveLossConfig,
    SharedPrivateLoss,
    SharedPrivateLossConfig,
)
from robult.models import RobultConfig, RobultModel

MODALITIES = 3
FEATURES = 32


def _objective(name: str):
    torch.manual_seed(0)
    specs = [ModalitySpec(f"m{i}", "vector", (FEATURES,)) for i in range(MODALITIES)]
    task = TaskSpec("multiclass", num_classes=4)
    model = RobultModel(specs, task, RobultConfig(dropout=0.0))
    if name == "robult":
        loss = RobultLoss(task, MODALITIES, RobultLossConfig(queue_size=1024), target_dim=model.config.shared_dim)
    elif name == "shared_private":
        loss = SharedPrivateLoss(task, model.reconstructors, SharedPrivateLossConfig())
    else:
        model.reconstructors.requires_grad_(False)
        loss = InstanceContrastiveLoss(task, InstanceContrastiveLossConfig())
    return model, loss


def _batch(batch: int, step: int, rank: int) -> Batch:
    g = torch.Generator().manual_seed(1000 * step + rank)
    x = {f"m{i}": torch.randn(batch, FEATURES, generator=g) for i in range(MODALITIES)}
    present = torch.rand(batch, MODALITIES, generator=g) > 0.3
    present[~present.any(1), 0] = True
    target = torch.randint(0, 4, (batch,), generator=g)
    labeled = torch.rand(batch, generator=g) < 0.1
    index = torch.arange(batch) + batch * (2 * step + rank)
    return Batch(x, present, target, labeled, index=index)


def _count_calls(counter: list[int]) -> dict:
    originals = {name: getattr(dist, name) for name in ("all_gather", "all_reduce")}

    def counting(original):
        def call(*args, **kwargs):
            counter[0] += 1
            return original(*args, **kwargs)

        return call

    for name, original in originals.items():
        setattr(dist, name, counting(original))
    return originals


def _worker(rank: int, init: str, batch: int, steps: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=2)
    results = {}
    try:
        for name in ("robult", "shared_private", "contrastive"):
            model, loss = _objective(name)
            times, calls = [], []
            for s in range(steps + 2):
                b = _batch(batch, s, rank)
                counter = [0]
                originals = _count_calls(counter)
                dist.barrier()
                t0 = time.perf_counter()
                try:
                    res = loss(model(b), b, epoch=10.0)
                    res.total.backward()
                finally:
                    for k, v in originals.items():
                        setattr(dist, k, v)
                if s >= 2:  # the first steps fill the queue and warm up
                    times.append(time.perf_counter() - t0)
                    calls.append(counter[0])
                model.zero_grad(set_to_none=True)
            results[name] = {"collectives_per_step": max(calls), "median_step_ms": 1e3 * statistics.median(times)}
        if rank == 0:
            with open(out, "w") as f:
                json.dump(results, f)
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256, help="samples per rank")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        init, out = os.path.join(tmp, "init"), os.path.join(tmp, "out.json")
        mp.spawn(_worker, args=(init, args.batch, args.steps, out), nprocs=2)
        with open(out) as f:
            results = json.load(f)
    print(json.dumps({"batch_per_rank": args.batch, "steps": args.steps, **results}, indent=1))


if __name__ == "__main__":
    main()
