"""Worker of ``test_distributed.py``: one rank of a 2-process gloo run of a loss on a tiny model:

- ``pu``: the soft PU loss alone;
- ``robult``: Robult's whole objective (supervised, soft PU, reconstruction and self-training terms);
- ``shared_private``: the ``shared_private`` baseline's whole objective (supervised, CMD, difference and
  reconstruction terms) on 3 modalities;
- ``contrastive``: the ``contrastive`` baseline's whole objective (supervised and instance InfoNCE) on 3 modalities;
- ``queue``: two training steps of the soft PU loss with a target queue (the second step meets the first one's
  targets and some of its own samples again); its state holds the queue after the second step.

Run as ``python gloo_worker.py RANK WORLD INIT_FILE OUT_FILE SIZES MODES`` (SIZES like ``7,4``, MODES like
``pu,queue``: one after the other in one process group); every rank writes ``{mode: result}`` to
``OUT_FILE.RANK``. The test imports the same file for the single-process reference, so both sides build identical
data and models.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from robult import Batch, ModalitySpec, TaskSpec
from robult.losses import RobultLoss, RobultLossConfig, contrastive_chunks
from robult.losses.baselines import (
    InstanceContrastiveLoss,
    InstanceContrastiveLossConfig,
    SharedPrivateLoss,
    SharedPrivateLossConfig,
)
from robult.losses.contrastive import SoftPUContrastiveLoss, TargetQueue
from robult.models import RobultConfig, RobultModel

StepResult = tuple[Tensor, list[Tensor], dict[str, Tensor]]


def make_data(sizes: tuple[int, ...], modalities: int = 2):
    g = torch.Generator().manual_seed(0)
    n = sum(sizes)
    x = torch.randn(n, modalities, 6, generator=g, dtype=torch.float64)
    keys = torch.randint(0, 3, (n,), generator=g)
    labeled = torch.rand(n, generator=g) > 0.5
    present = torch.rand(n, modalities, generator=g) > 0.2
    present[~present.any(1), 0] = True
    return x, keys, labeled, present


def step(x, keys, labeled, present) -> StepResult:
    """Loss, parameter gradients and EMA state of one step of a tiny model."""
    torch.manual_seed(1)
    proj, fuse = torch.nn.Linear(6, 4).double(), torch.nn.Linear(12, 4).double()
    loss = SoftPUContrastiveLoss(2, temperature=0.5, ema=0.5)
    out = loss(proj(x), fuse(x.flatten(1)), present, keys, labeled)
    total = out.labeled + out.unlabeled
    total.backward()
    grads = [p.grad.clone() for p in (*proj.parameters(), *fuse.parameters())]
    return total.detach(), grads, {"mu": loss.mu.clone(), "sigma": loss.sigma.clone()}


def _model(modalities: int, specific_dim: int = 4) -> tuple[RobultModel, TaskSpec]:
    torch.manual_seed(1)
    specs = [ModalitySpec(f"m{i}", "vector", (6,)) for i in range(modalities)]
    task = TaskSpec("multiclass", num_classes=3)
    config = RobultConfig(hidden_dim=8, shared_dim=4, specific_dim=specific_dim, encoder_hidden=(8,), dropout=0.0)
    return RobultModel(specs, task, config).double(), task


def _batch(x, keys, labeled, present) -> Batch:
    return Batch({f"m{i}": x[:, i] for i in range(x.shape[1])}, present, keys, labeled)


def _grads(model: nn.Module) -> list[Tensor]:
    """Every trainable parameter's gradient (zeros where a parameter got none)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]


def robult_step(x, keys, labeled, present) -> StepResult:
    """Loss, parameter gradients and EMA state of one step of a tiny Robult model (no dropout) with every term on
    (a low pseudo-label threshold, so the self-training term has kept samples)."""
    model, task = _model(x.shape[1])
    loss = RobultLoss(task, x.shape[1], RobultLossConfig(ema=0.5, pseudo_confidence=0.34))
    batch = _batch(x, keys, labeled, present)
    out = loss(model(batch), batch, epoch=10.0)
    out.total.backward()
    return (
        out.total.detach(),
        _grads(model),
        {"mu": loss.contrastive.mu.clone(), "sigma": loss.contrastive.sigma.clone()},
    )


def shared_private_step(x, keys, labeled, present) -> StepResult:
    """One step of the ``shared_private`` baseline's objective (every term weighted 1, so none is negligible;
    ``d_u ≠ d_z``). State: the CMD and difference terms, batch statistics that every rank computes whole."""
    model, task = _model(x.shape[1], specific_dim=3)
    config = SharedPrivateLossConfig(lambda_sim=1.0, lambda_diff=1.0, lambda_rec_mean=1.0)
    loss = SharedPrivateLoss(task, model.reconstructors, config)
    batch = _batch(x, keys, labeled, present)
    out = loss(model(batch), batch)
    out.total.backward()
    return out.total.detach(), _grads(model), {"batch_terms": torch.stack([out.similarity, out.difference]).detach()}


def contrastive_step(x, keys, labeled, present) -> StepResult:
    """One step of the ``contrastive`` baseline's objective (its reconstructors frozen, as its builder does)."""
    model, task = _model(x.shape[1])
    model.reconstructors.requires_grad_(False)
    loss = InstanceContrastiveLoss(task, InstanceContrastiveLossConfig(lambda_nce=1.0, temperature=0.3))
    batch = _batch(x, keys, labeled, present)
    out = loss(model(batch), batch, epoch=10.0)
    out.total.backward()
    return out.total.detach(), _grads(model), {}


def _queue_loss() -> SoftPUContrastiveLoss:
    return SoftPUContrastiveLoss(2, temperature=0.5, ema=0.5, queue=TargetQueue(size=9, dim=4)).double()


def queue_step(x, keys, labeled, present, offset: int = 0) -> StepResult:
    """Two training steps of the soft PU loss with a queue smaller than the batch of all ranks: the first step's
    targets fill it, the second step (other anchors, ids shifted by 7, so the queue holds past targets of samples in
    the batch, left out, and of others) reads it. ``offset``: this rank's first row in the batch of all ranks.
    Loss and gradients of the second step; state: the queue (and the EMA state)."""
    torch.manual_seed(1)
    proj, fuse = torch.nn.Linear(6, 4).double(), torch.nn.Linear(12, 4).double()
    loss = _queue_loss()
    ids = torch.arange(x.shape[0]) + offset
    with torch.no_grad():
        loss(proj(x), fuse(x.flatten(1)), present, keys, labeled, ids)
    out = loss(proj(x.flip(-1)), fuse(x.flatten(1)), present, keys, labeled, ids + 7)
    total = out.labeled + out.unlabeled
    total.backward()
    grads = [p.grad.clone() for p in (*proj.parameters(), *fuse.parameters())]
    state = {f"queue.{k}": v.clone() for k, v in loss.queue.state_dict().items()}
    return total.detach(), grads, {**state, "mu": loss.mu.clone(), "sigma": loss.sigma.clone()}


def count_collectives(fn: Callable[[], object]) -> int:
    """How many ``all_gather``/``all_reduce`` calls ``fn`` makes."""
    calls = 0
    originals = {name: getattr(dist, name) for name in ("all_gather", "all_reduce")}

    def counting(original):
        def call(*args, **kwargs):
            nonlocal calls
            calls += 1
            return original(*args, **kwargs)

        return call

    for name, original in originals.items():
        setattr(dist, name, counting(original))
    try:
        fn()
    finally:
        for name, original in originals.items():
            setattr(dist, name, original)
    return calls


def queue_collectives(x, keys, labeled, present) -> dict[str, Tensor]:
    """Collectives of one forward training step of the soft PU loss with and without a queue."""
    fused = x.flatten(1)[:, :4]
    ids = torch.arange(x.shape[0]) + 100 * dist.get_rank()

    def run(loss: SoftPUContrastiveLoss) -> Callable[[], object]:
        return lambda: loss(x[..., :4], fused, present, keys, labeled, ids)

    plain = SoftPUContrastiveLoss(2).double()
    return {
        "collectives_with_queue": torch.tensor(count_collectives(run(_queue_loss()))),
        "collectives_without_queue": torch.tensor(count_collectives(run(plain))),
    }


STEPS = {
    "pu": step,
    "robult": robult_step,
    "shared_private": shared_private_step,
    "contrastive": contrastive_step,
    "queue": queue_step,
}
MODALITIES = {"shared_private": 3, "contrastive": 3}


def main(rank: int, world: int, init_file: str, out_file: str, sizes: tuple[int, ...], modes: list[str]) -> None:
    contrastive_chunks.CHUNK_ELEMENTS = 8  # several chunks per rank (the single-process reference uses one)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = {}
        for mode in modes:
            x, keys, labeled, present = make_data(sizes, MODALITIES.get(mode, 2))
            start = sum(sizes[:rank])
            sl = slice(start, start + sizes[rank])
            kwargs = {"offset": start} if mode == "queue" else {}
            total, grads, state = STEPS[mode](x[sl], keys[sl], labeled[sl], present[sl], **kwargs)
            for g in grads:  # what DDP does: average the gradients over ranks
                dist.all_reduce(g)
                g /= world
            dist.all_reduce(total)  # the logged loss: mean over ranks
            total /= world
            if mode == "queue":
                state.update(queue_collectives(x[sl], keys[sl], labeled[sl], present[sl]))
            results[mode] = {"total": total, "grads": grads, "state": state}
        torch.save(results, f"{out_file}.{rank}")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    r, w, init, out, sz, md = sys.argv[1:7]
    main(int(r), int(w), init, out, tuple(int(s) for s in sz.split(",")), md.split(","))
