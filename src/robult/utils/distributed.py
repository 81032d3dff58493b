"""``torch.distributed`` helpers that degrade to no-ops in a single process."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 (ranks may hold different sizes); backward sums the incoming gradients over ranks
    and returns this rank's slice, so the gradient equals that of one process holding the concatenated batch."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:  # type: ignore[override]
        sizes = _gather_sizes(tensor.shape[0], tensor.device)
        ctx.sizes = sizes
        ctx.rank = dist.get_rank()
        return _pad_gather(tensor.contiguous(), sizes)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]]


def _gather_sizes(n: int, device: torch.device) -> list[int]:
    size = torch.tensor([n], device=device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s) for s in sizes]


def _pad_gather(tensor: Tensor, sizes: list[int]) -> Tensor:
    longest = max(sizes)
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)])


def gather_with_grad(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` from all ranks along dim 0, keeping the gradient path to every rank's input."""
    if not is_distributed():
        return tensor
    return _GatherWithGrad.apply(tensor)


def gather_no_grad(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` from all ranks along dim 0 (no gradient)."""
    if not is_distributed():
        return tensor
    return _pad_gather(tensor.detach().contiguous(), _gather_sizes(tensor.shape[0], tensor.device))


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum over ranks (a detached copy; the input is not modified)."""
    if not is_distributed():
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def mean_over_ranks(total: Tensor, count: Tensor) -> Tensor:
    """The mean ``Σ_r total_r / Σ_r count_r`` over the samples of every rank, as this rank's share of it.

    DDP averages the ranks' gradients. A per-rank mean ``total_r / count_r`` would weigh each sample by its own
    rank's ``1 / count_r``, so a rank holding fewer (sample, modality) pairs (an uneven last batch, fewer labeled
    rows) would weigh each of them more than one process with the whole batch does. This returns
    ``total_r · world / Σ_r count_r`` (the count summed over ranks, no gradient), whose average over ranks is the
    global mean. In one process it is ``total / count`` (``count`` clamped to 1). Every rank must call it.
    """
    if not is_distributed():
        return total / count.clamp(min=1)
    return total * world_size() / all_reduce_sum(count).clamp(min=1)


def rank_offset(n: int, device: torch.device) -> int:
    """Index of this rank's first sample in the gathered batch."""
    if not is_distributed():
        return 0
    return sum(_gather_sizes(n, device)[: dist.get_rank()])
