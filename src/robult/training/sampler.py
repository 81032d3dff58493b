"""Batch sampling for semi-supervised training: labeled samples in every batch at a fixed share."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


class SemiSupervisedBatchSampler(Sampler[list[int]]):
    """Yields index batches holding ``round(labeled_share · batch_size)`` labeled samples (at least one) and the
    rest unlabeled.

    With 5% labels a plain shuffle leaves most batches without a labeled pair, and the contrastive loss needs
    them. An epoch is one pass over the unlabeled samples; the labeled ones are drawn from reshuffled passes over
    the labeled set, cycled as often as needed. With no unlabeled samples (or no labeled ones) it is a plain
    shuffle. The order depends only on ``(seed, epoch)`` (``set_epoch`` is called by the trainer), so a resumed
    run sees the same batches. Under DDP the batches are drawn as one process with batch size
    ``world · batch_size`` would draw them, and rank ``r`` takes every ``world``-th labeled and every ``world``-th
    unlabeled sample of each, starting at the ``r``-th: together the ranks train on exactly the batches of a
    one-process run with the global batch size (a global batch with fewer than ``world`` samples is dropped).

    Args:
        labeled: indices of labeled samples.
        unlabeled: indices of unlabeled samples.
        batch_size: samples per batch.
        labeled_share: share of labeled samples per batch.
        seed: base seed.
        rank, world: this process's rank and the number of processes.
    """

    def __init__(
        self,
        labeled: np.ndarray,
        unlabeled: np.ndarray,
        batch_size: int,
        labeled_share: float,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.labeled = np.asarray(labeled, dtype=np.int64)
        self.unlabeled = np.asarray(unlabeled, dtype=np.int64)
        if len(self.labeled) == 0 and len(self.unlabeled) == 0:
            raise ValueError("cannot sample batches from an empty training set")
        if batch_size < 2:
            raise ValueError(f"batch_size must be at least 2, got {batch_size}")
        if not 0 <= rank < world:
            raise ValueError(f"rank must lie in [0, world), got rank {rank} of {world}")
        self.batch_size = batch_size * world  # the global batch, split over the ranks
        self.seed, self.rank, self.world = seed, rank, world
        self.epoch = 0
        self.mixed = len(self.labeled) > 0 and len(self.unlabeled) > 0
        size = self.batch_size
        if self.mixed:
            self.n_labeled = min(size - 1, max(1, round(labeled_share * size)))
            self.n_unlabeled = size - self.n_labeled
            total = math.ceil(len(self.unlabeled) / self.n_unlabeled)
            last = self.n_labeled + len(self.unlabeled) - (total - 1) * self.n_unlabeled
        else:
            n = len(self.labeled) + len(self.unlabeled)
            total = math.ceil(n / size)
            last = n - (total - 1) * size
        self.num_batches = total - 1 if last < world and total > 1 else total

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> list[tuple[list[int], list[int]]]:
        """The global batches as (labeled part, unlabeled part); a plain shuffle has everything in the first."""
        rng = np.random.default_rng([self.seed, self.epoch])
        if not self.mixed:
            pool = self.labeled if len(self.labeled) else self.unlabeled
            perm = pool[rng.permutation(len(pool))]
            return [(perm[i : i + self.batch_size].tolist(), []) for i in range(0, len(perm), self.batch_size)]
        unl = self.unlabeled[rng.permutation(len(self.unlabeled))]
        n_batches = math.ceil(len(unl) / self.n_unlabeled)
        lab = self._labeled_slices(rng, n_batches)
        return [(lab[b], unl[b * self.n_unlabeled : (b + 1) * self.n_unlabeled].tolist()) for b in range(n_batches)]

    def _labeled_slices(self, rng: np.random.Generator, n_batches: int) -> list[list[int]]:
        """Consecutive slices of reshuffled passes over the labeled set (every labeled sample is used equally
        often); a slice that straddles two passes never repeats a sample: the new pass moves the samples of the
        previous pass's tail out of its head."""
        n, k = len(self.labeled), min(self.n_labeled, len(self.labeled))
        perm = self.labeled[rng.permutation(n)]
        pos = 0
        out = []
        for _ in range(n_batches):
            if pos + k <= n:
                out.append(perm[pos : pos + k].tolist())
                pos += k
                continue
            tail = perm[pos:]
            nxt = self.labeled[rng.permutation(n)]
            head_len = k - len(tail)
            clash = np.isin(nxt[:head_len], tail)
            if clash.any():  # swap clashing head items with later items that are not in the tail
                free = [i for i in range(head_len, n) if nxt[i] not in set(tail.tolist())]
                for i, j in zip(np.flatnonzero(clash), free, strict=False):
                    nxt[i], nxt[j] = nxt[j], nxt[i]
            out.append(tail.tolist() + nxt[:head_len].tolist())
            perm, pos = nxt, head_len
        return out

    def __iter__(self) -> Iterator[list[int]]:
        r, w = self.rank, self.world
        for lab, unl in self._all_batches()[: self.num_batches]:
            yield lab[r::w] + unl[r::w]

    def __len__(self) -> int:
        return self.num_batches


def drop_modalities(present: torch.Tensor, rate: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Modality dropout: drop each present entry with probability ``rate``, keeping at least one modality of
    every sample (a sample that would lose all keeps one of its present modalities, chosen at random)."""
    if rate <= 0:
        return present
    keep = torch.rand(present.shape, generator=generator, device=present.device) >= rate
    out = present & keep
    empty = ~out.any(1)
    if empty.any():
        scores = torch.rand(present.shape, generator=generator, device=present.device).masked_fill(~present, -1.0)
        pick = scores.argmax(1)
        restore = torch.zeros_like(present)
        restore[torch.arange(len(pick), device=present.device), pick] = True
        out = torch.where(empty[:, None], restore, out)
    return out
