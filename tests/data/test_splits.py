"""Labeled subsets: stratified, seeded, at least one label per class, and the requested share of labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robult.data.splits import labeled_subset
from robult.specs import TaskKind, TaskSpec


def _classes(sizes: list[int]) -> torch.Tensor:
    return torch.as_tensor(np.repeat(np.arange(len(sizes)), sizes))


def _per_class(mask: torch.Tensor, target: torch.Tensor, k: int) -> np.ndarray:
    return np.bincount(target[mask].numpy(), minlength=k)


def test_large_classes_get_exact_per_class_proportions() -> None:
    target, task = _classes([144] * 10), TaskSpec(TaskKind.MULTICLASS, num_classes=10)
    mask = labeled_subset(target, task, 0.05, seed=0)
    np.testing.assert_array_equal(_per_class(mask, target, 10), np.full(10, 7))  # round(7.2) in every class
    assert torch.equal(mask, labeled_subset(target, task, 0.05, seed=0))
    assert not torch.equal(mask, labeled_subset(target, task, 0.05, seed=1))
    assert labeled_subset(target, task, 1.0, seed=0).all()
    big = labeled_subset(target, task, 0.5, seed=0)
    assert (mask & ~big).sum() < mask.sum()  # a different ratio draws from the same per-class order
    with pytest.raises(ValueError, match="label ratio must lie in"):
        labeled_subset(target, task, 0.0, seed=0)


def test_small_classes_still_get_the_requested_share() -> None:
    """68 classes of 7 (the pie layout): per-class rounding would give 1 label per class at 5%, 10% and 20%."""
    target, task = _classes([7] * 68), TaskSpec(TaskKind.MULTICLASS, num_classes=68)
    n = len(target)
    counts = {r: _per_class(labeled_subset(target, task, r, seed=0), target, 68) for r in (0.05, 0.1, 0.2, 0.5)}
    assert (counts[0.05] == 1).all() and (counts[0.1] == 1).all()  # the floor: one label per class (68 > 10%)
    assert counts[0.2].sum() == round(0.2 * n) == 95 and set(counts[0.2]) == {1, 2}
    assert counts[0.5].sum() == round(0.5 * n) == 238 and set(counts[0.5]) == {3, 4}


def test_imbalanced_classes_are_proportional_with_one_label_minimum() -> None:
    target, task = _classes([400, 100, 3]), TaskSpec(TaskKind.MULTICLASS, num_classes=3)
    counts = _per_class(labeled_subset(target, task, 0.1, seed=2), target, 3)
    np.testing.assert_array_equal(counts, [40, 10, 1])


def test_split_from_codes_keeps_the_source_rows_and_carves_val_when_there_is_none() -> None:
    from robult.data.splits import split_from_codes, train_val_test_split

    groups = np.arange(40) % 4
    codes = np.array([0, 1, 2, 0] * 10)
    split = split_from_codes(codes, groups, 3, 0.25, source="split file s.npy", where="s.npy (split)")
    np.testing.assert_array_equal(split.train, np.flatnonzero(codes == 0))
    np.testing.assert_array_equal(split.val, np.flatnonzero(codes == 1))
    np.testing.assert_array_equal(split.test, np.flatnonzero(codes == 2))
    assert split.rule == "split file s.npy"

    codes = np.where(codes == 1, 0, codes)  # no val rows: carved out of train, the test rows kept
    split = split_from_codes(codes, groups, 3, 0.25, source="split column", where="t.csv: split")
    carved = train_val_test_split(groups, 3, 0.25, fixed_test=np.flatnonzero(codes == 2))
    np.testing.assert_array_equal(split.train, carved.train)
    np.testing.assert_array_equal(split.val, carved.val)
    np.testing.assert_array_equal(split.test, np.flatnonzero(codes == 2))
    assert (len(split.train), len(split.val)) == (24, 6)  # a quarter of each stratum of the 30 train rows, rounded
    assert split.rule == f"split column (no val rows: {carved.rule})"

    with pytest.raises(ValueError, match=r"^t\.csv: split: no sample in the test split \(2\)$"):
        split_from_codes(np.zeros(5, dtype=np.int64), np.zeros(5), 0, 0.2, source="split column", where="t.csv: split")


def test_labeled_strata_puts_unlabeled_rows_in_a_stratum_of_their_own() -> None:
    from robult.data.splits import labeled_strata

    target = np.array([2, -1, 0, 2, 7], dtype=np.int64)  # an unlabeled row's target may hold anything
    labeled = np.array([True, False, True, True, False])
    task = TaskSpec("multiclass", num_classes=3)
    np.testing.assert_array_equal(labeled_strata(target, labeled, task), [2, -2, 0, 2, -2])
    np.testing.assert_array_equal(labeled_strata(target, np.zeros(5, dtype=bool), task), [-2] * 5)
