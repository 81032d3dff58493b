"""Worker of ``test_distributed.py``: one rank of a 2-process gloo run of the soft PU loss (``pu``) or of Robult's
whole objective on a tiny model (``robult``: supervised, soft PU, reconstruction and self-training terms).

Run as ``python gloo_worker.py RANK WORLD INIT_FILE OUT_FILE SIZES [pu|robult]`` (SIZES like ``7,4``); the test
imports the same file for the single-process reference, so both sides build identical data and models.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from robult import Batch, ModalitySpec, TaskSpec
from robult.losses import RobultLoss, RobultLossConfig, contrastive_chunks
from robult.losses.contrastive import SoftPUContrastiveLoss
from robult.models import RobultConfig, RobultModel


def make_data(sizes: tuple[int, ...]):
    g = torch.Generator().manual_seed(0)
    n = sum(sizes)
    x = torch.randn(n, 2, 6, generator=g, dtype=torch.float64)
    keys = torch.randint(0, 3, (n,), generator=g)
    labeled = torch.rand(n, generator=g) > 0.5
    present = torch.rand(n, 2, generator=g) > 0.2
    present[~present.any(1), 0] = True
    return x, keys, labeled, present


def step(x, keys, labeled, present):
    """Loss, parameter gradients and EMA state of one step of a tiny model."""
    torch.manual_seed(1)
    proj, fuse = torch.nn.Linear(6, 4).double(), torch.nn.Linear(12, 4).double()
    loss = SoftPUContrastiveLoss(2, temperature=0.5, ema=0.5)
    out = loss(proj(x), fuse(x.flatten(1)), present, keys, labeled)
    total = out.labeled + out.unlabeled
    total.backward()
    grads = [p.grad.clone() for p in (*proj.parameters(), *fuse.parameters())]
    return total.detach(), grads, loss.mu.clone(), loss.sigma.clone()


def robult_step(x, keys, labeled, present):
    """Loss, parameter gradients and EMA state of one step of a tiny Robult model (no dropout) with every term on
    (a low pseudo-label threshold, so the self-training term has kept samples)."""
    torch.manual_seed(1)
    specs = [ModalitySpec("a", "vector", (6,)), ModalitySpec("b", "vector", (6,))]
    task = TaskSpec("multiclass", num_classes=3)
    config = RobultConfig(hidden_dim=8, shared_dim=4, specific_dim=4, encoder_hidden=(8,), dropout=0.0)
    model = RobultModel(specs, task, config).double()
    loss = RobultLoss(task, 2, RobultLossConfig(ema=0.5, pseudo_confidence=0.34))
    batch = Batch({"a": x[:, 0], "b": x[:, 1]}, present, keys, labeled)
    out = loss(model(batch), batch, epoch=10.0)
    out.total.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    return out.total.detach(), grads, loss.contrastive.mu.clone(), loss.contrastive.sigma.clone()


STEPS = {"pu": step, "robult": robult_step}


def main(rank: int, world: int, init_file: str, out_file: str, sizes: tuple[int, ...], mode: str = "pu") -> None:
    contrastive_chunks.CHUNK_ELEMENTS = 8  # several chunks per rank (the single-process reference uses one)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        x, keys, labeled, present = make_data(sizes)
        start = sum(sizes[:rank])
        sl = slice(start, start + sizes[rank])
        total, grads, mu, sigma = STEPS[mode](x[sl], keys[sl], labeled[sl], present[sl])
        for g in grads:  # what DDP does: average the gradients over ranks
            dist.all_reduce(g)
            g /= world
        dist.all_reduce(total)  # the logged loss: mean over ranks
        total /= world
        if rank == 0:
            torch.save({"total": total, "grads": grads, "mu": mu, "sigma": sigma}, out_file)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    r, w, init, out, sz = sys.argv[1:6]
    main(int(r), int(w), init, out, tuple(int(s) for s in sz.split(",")), *sys.argv[6:7])
