"""The semi-supervised batch sampler and modality dropout."""

from __future__ import annotations

import numpy as np
import torch

from robult.training.sampler import SemiSupervisedBatchSampler, drop_modalities


def test_every_batch_has_its_labeled_share_and_epoch_covers_unlabeled() -> None:
    labeled = np.arange(0, 20)  # 20 labeled of 420 (~5%)
    unlabeled = np.arange(20, 420)
    s = SemiSupervisedBatchSampler(labeled, unlabeled, batch_size=32, labeled_share=0.25, seed=3)
    s.set_epoch(0)
    batches = list(s)
    assert len(batches) == len(s) == 17  # ceil(400 / 24)
    for b in batches:
        n_lab = sum(i < 20 for i in b)
        assert n_lab == 8
        assert len(set(b)) == len(b)
    seen = sorted(i for b in batches for i in b if i >= 20)
    assert seen == list(range(20, 420))  # each unlabeled sample exactly once per epoch
    # labeled samples are cycled evenly: each appears 6 or 7 times in 136 labeled slots
    counts = np.bincount([i for b in batches for i in b if i < 20], minlength=20)
    assert counts.min() >= 6 and counts.max() <= 7


def test_order_depends_only_on_seed_and_epoch() -> None:
    a = SemiSupervisedBatchSampler(np.arange(10), np.arange(10, 100), 16, 0.25, seed=1)
    b = SemiSupervisedBatchSampler(np.arange(10), np.arange(10, 100), 16, 0.25, seed=1)
    a.set_epoch(4)
    b.set_epoch(4)
    assert list(a) == list(b)
    b.set_epoch(5)
    assert list(a) != list(b)


def test_labeled_only_is_a_plain_shuffle_and_ranks_split_batches() -> None:
    s = SemiSupervisedBatchSampler(np.arange(50), np.array([], dtype=np.int64), 16, 0.25, seed=0)
    got = sorted(i for b in s for i in b)
    assert got == list(range(50))
    r0 = SemiSupervisedBatchSampler(np.arange(10), np.arange(10, 200), 20, 0.25, seed=0, rank=0, world=2)
    r1 = SemiSupervisedBatchSampler(np.arange(10), np.arange(10, 200), 20, 0.25, seed=0, rank=1, world=2)
    b0, b1 = list(r0), list(r1)
    assert len(b0) == len(b1)
    assert not {i for b in b0 for i in b if i >= 10} & {i for b in b1 for i in b if i >= 10}


def test_drop_modalities_keeps_one_present_modality() -> None:
    g = torch.Generator().manual_seed(0)
    present = torch.rand(2000, 3, generator=g) > 0.3
    present[~present.any(1), 1] = True
    out = drop_modalities(present, 0.6, torch.Generator().manual_seed(1))
    assert out.any(1).all()
    assert not (out & ~present).any()  # never adds an absent modality
    kept = out.sum() / present.sum()
    assert 0.4 < kept < 0.6  # about 1 - 0.6 plus the give-back
    assert torch.equal(drop_modalities(present, 0.0), present)
