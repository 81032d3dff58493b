"""``torch.distributed`` helpers that degrade to no-ops in a single process."""

from __future__ import annotations

import os

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
    def forward(ctx, tensor: Tensor, sizes: list[int]) -> Tensor:  # type: ignore[override]
        ctx.sizes = sizes
        ctx.rank = dist.get_rank()
        return _pad_gather(tensor.contiguous(), sizes)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = rank_start(ctx.sizes, ctx.rank)
        return grad[start : start + ctx.sizes[ctx.rank]], None


class _SumWithGrad(torch.autograd.Function):
    """All-reduce (sum) whose backward sums the incoming gradients over ranks: every rank receives the sum, and
    its input's gradient is the sum of every rank's gradient of that sum."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:  # type: ignore[override]
        out = tensor.contiguous().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def _gather_sizes(n: int, device: torch.device) -> list[int]:
    size = torch.tensor([n], device=device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s) for s in sizes]


def rank_start(sizes: list[int], rank_: int | None = None) -> int:
    """Index of rank ``rank_``'s (default: this rank's) first row among rows gathered from ranks of ``sizes``."""
    return sum(sizes[: rank() if rank_ is None else rank_])


def gather_sizes(n: int, device: torch.device) -> list[int]:
    """Every rank's number of rows ``n`` (``[n]`` in one process): pass it to :func:`gather_with_grad` and
    :func:`gather_no_grad` when several tensors of the same rows are gathered, to exchange the sizes once."""
    return _gather_sizes(n, device) if is_distributed() else [n]


def _pad_gather(tensor: Tensor, sizes: list[int]) -> Tensor:
    longest = max(sizes)
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)])


def _sizes_of(tensor: Tensor, sizes: list[int] | None) -> list[int]:
    if sizes is None:
        return _gather_sizes(tensor.shape[0], tensor.device)
    if len(sizes) != dist.get_world_size() or sizes[dist.get_rank()] != tensor.shape[0]:
        raise ValueError(
            f"sizes {sizes} do not match this rank's {tensor.shape[0]} rows (rank {dist.get_rank()} of "
            f"{dist.get_world_size()})"
        )
    return sizes


def gather_with_grad(tensor: Tensor, sizes: list[int] | None = None) -> Tensor:
    """Concatenate ``tensor`` from all ranks along dim 0, keeping the gradient path to every rank's input.

    ``sizes``: every rank's number of rows (from :func:`gather_sizes`; exchanged here when not given)."""
    if not is_distributed():
        return tensor
    return _GatherWithGrad.apply(tensor, _sizes_of(tensor, sizes))


def gather_no_grad(tensor: Tensor, sizes: list[int] | None = None) -> Tensor:
    """Concatenate ``tensor`` from all ranks along dim 0 (no gradient); ``sizes`` as in :func:`gather_with_grad`."""
    if not is_distributed():
        return tensor
    return _pad_gather(tensor.detach().contiguous(), _sizes_of(tensor, sizes))


def sum_over_ranks(*tensors: Tensor) -> tuple[Tensor, ...]:
    """The sums over ranks of ``tensors`` (one collective for all of them), with gradient.

    Every rank receives the same sums; the backward pass sums the incoming gradients over ranks, so a loss that
    every rank computes alike from these sums (a batch statistic) gives, once DDP averages the ranks' gradients,
    the gradient of one process holding every rank's samples. In one process the tensors are returned as they are.
    Every rank must call it with tensors of the same shapes.
    """
    if not is_distributed():
        return tensors
    flat = torch.cat([t.reshape(-1) for t in tensors])
    total = _SumWithGrad.apply(flat)
    parts = total.split([t.numel() for t in tensors])
    return tuple(p.reshape(t.shape).to(t.dtype) for p, t in zip(parts, tensors, strict=True))


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
    return rank_start(_gather_sizes(n, device))


def launched_rank() -> int:
    """Nonzero when a launcher started this process as a worker of a multi-device run, else 0: the global rank
    of torchrun (``RANK``), SLURM (``SLURM_PROCID``) or MPI (``OMPI_COMM_WORLD_RANK``, ``PMI_RANK``), or, for the
    processes Lightning's script launcher starts, ``LOCAL_RANK`` plus ``NODE_RANK`` (zero exactly for rank 0). A
    grid command runs in every process of a multi-device run (``train.devices > 1``): each trains its share of
    every run, and only rank 0 reads the results and writes the grid's files."""

    def value(key: str) -> int:
        return int(os.environ.get(key, "").strip() or 0)

    for key in ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        if key in os.environ:
            return value(key)
    return value("LOCAL_RANK") + value("NODE_RANK")


def launcher_layout() -> tuple[int, int] | None:
    """``(nodes, processes per node)`` of a run whose processes a cluster launcher started, read from its
    environment as Lightning reads it (SLURM first): SLURM's ``srun`` (``SLURM_NTASKS``, ``SLURM_NNODES``,
    ``SLURM_NTASKS_PER_NODE``; not inside an interactive allocation, job name ``bash`` or ``interactive``) or
    ``torchrun`` (``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``). ``None`` when no launcher started this process, or it
    started one process only."""
    env = os.environ

    def number(key: str, default: int) -> int:
        text = env.get(key, "").strip()
        digits = text[: len(text) - len(text.lstrip("0123456789"))]  # SLURM may write "2(x3)"
        return int(digits) if digits else default

    if "SLURM_NTASKS" in env and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        tasks = number("SLURM_NTASKS", 1)
        nodes = max(1, number("SLURM_NNODES", number("SLURM_JOB_NUM_NODES", 1)))
        return (nodes, number("SLURM_NTASKS_PER_NODE", max(1, tasks // nodes))) if tasks > 1 else None
    if "TORCHELASTIC_RUN_ID" in env and "WORLD_SIZE" in env and "LOCAL_WORLD_SIZE" in env:
        world, per_node = number("WORLD_SIZE", 1), max(1, number("LOCAL_WORLD_SIZE", 1))
        return (max(1, world // per_node), per_node) if world > 1 else None
    return None
