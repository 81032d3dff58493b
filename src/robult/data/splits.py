"""Seeded, stratified splits, labeled subsets and per-view standardisation.

The split rule of every loader whose source has no complete train / val / test split lives here once:
:func:`train_val_test_split` (a seeded stratified 80/20 train/test split, or the source's fixed test split, then a
stratified validation carve-out of train with ``seed + 1``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from robult.specs import TaskKind, TaskSpec


def strata(target: Tensor | np.ndarray, task: TaskSpec) -> np.ndarray:
    """An integer stratum per sample: the class (multiclass, binary), the rarest positive label (multilabel; -1
    for none) or a quantile bin (regression, 5 bins)."""
    y = target.numpy() if isinstance(target, Tensor) else np.asarray(target)
    if task.kind in (TaskKind.MULTICLASS, TaskKind.BINARY):
        return y.astype(np.int64).reshape(-1)
    if task.kind == TaskKind.MULTILABEL:
        freq = y.sum(axis=0)
        rank = np.where(y > 0, freq[None, :], np.inf)
        out = rank.argmin(axis=1).astype(np.int64)
        out[~(y > 0).any(axis=1)] = -1
        return out
    edges = np.quantile(y, [0.2, 0.4, 0.6, 0.8])
    return np.searchsorted(edges, y, side="right").astype(np.int64)


def stratified_split(groups: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (rest, part) with ``part`` holding about ``fraction`` of every stratum (at least one
    sample of a stratum with two or more). Deterministic for a seed; both halves sorted."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"split fraction must lie in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    part: list[np.ndarray] = []
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        idx = idx[rng.permutation(len(idx))]
        k = round(fraction * len(idx))
        k = min(max(k, 1 if len(idx) >= 2 else 0), len(idx) - 1 if len(idx) >= 2 else len(idx))
        part.append(idx[:k])
    chosen = np.sort(np.concatenate(part)) if part else np.array([], dtype=np.int64)
    rest = np.setdiff1d(np.arange(len(groups)), chosen)
    return rest, chosen


TEST_FRACTION = 0.2


@dataclass(frozen=True)
class SplitIndices:
    """Sorted row indices of the three splits and a one-line description of the rule that made them."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    rule: str

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def train_val_test_split(
    groups: np.ndarray,
    seed: int,
    val_fraction: float,
    *,
    test_fraction: float = TEST_FRACTION,
    fixed_test: np.ndarray | None = None,
) -> SplitIndices:
    """The split rule of every loader: test, then validation carved out of the rest.

    Test is ``fixed_test`` when the source fixes it, else a seeded stratified ``test_fraction`` of all rows
    (``stratified_split(groups, test_fraction, seed)``). Validation is a stratified ``val_fraction`` of the remaining
    rows with seed ``seed + 1``; train is what is left.

    Args:
        groups: one stratum per row (see :func:`strata`; any integer labels work).
        seed: seed of the test split; the validation carve-out uses ``seed + 1``.
        val_fraction: share of the non-test rows held out for validation.
        test_fraction: share of the rows held out for test when there is no fixed test split.
        fixed_test: row indices of a fixed test split, or ``None``.

    Returns:
        The three sorted index arrays and the rule in words.
    """
    groups = np.asarray(groups)
    if fixed_test is not None:
        test = np.sort(np.asarray(fixed_test, dtype=np.int64))
        trainval = np.setdiff1d(np.arange(len(groups)), test)
        rule = f"fixed test split: {len(trainval)} train+val / {len(test)} test"
    else:
        trainval, test = stratified_split(groups, test_fraction, seed=seed)
        rule = f"seeded stratified {1 - test_fraction:.0%}/{test_fraction:.0%} train/test (seed {seed})"
    rest, val = stratified_split(groups[trainval], val_fraction, seed=seed + 1)
    rule += f"; validation: stratified {val_fraction:g} of train (seed {seed + 1})"
    return SplitIndices(trainval[rest], trainval[val], test, rule)


def labeled_strata(target: np.ndarray, labeled: np.ndarray, task: TaskSpec) -> np.ndarray:
    """:func:`strata` of the labeled rows; the unlabeled rows (whose targets may hold anything) are a stratum of
    their own (-2)."""
    groups = np.full(len(labeled), -2, dtype=np.int64)
    if labeled.any():
        groups[labeled] = strata(target[labeled], task)
    return groups


SPLIT_NAMES = ("train", "val", "test")  # the split codes 0, 1, 2 of a split file or column


def split_from_codes(
    codes: np.ndarray, groups: np.ndarray, seed: int, val_fraction: float, *, source: str, where: str
) -> SplitIndices:
    """The split a source gives row by row as codes 0 (train), 1 (val) and 2 (test).

    Train and test need a row each; without val rows, validation is carved out of train by
    :func:`train_val_test_split` with the source's test rows fixed.

    Args:
        codes: one code per row, each 0, 1 or 2.
        groups: one stratum per row (for the carve-out).
        seed, val_fraction: of the carve-out.
        source: the source in words, the rule's name (e.g. ``"split file split.npy"``).
        where: what an error message names first (the file and key).
    """
    for code in (0, 2):
        if not (codes == code).any():
            raise ValueError(f"{where}: no sample in the {SPLIT_NAMES[code]} split ({code})")
    train, val, test = (np.flatnonzero(codes == code) for code in (0, 1, 2))
    if len(val) == 0:
        carved = train_val_test_split(groups, seed, val_fraction, fixed_test=test)
        return SplitIndices(carved.train, carved.val, test, f"{source} (no val rows: {carved.rule})")
    return SplitIndices(train, val, test, source)


def labeled_subset(target: Tensor, task: TaskSpec, ratio: float, seed: int) -> Tensor:
    """A seeded, stratified labeled mask with ``ratio`` of the samples labeled and at least one label per
    class (multiclass / binary) or stratum. ``ratio == 1`` labels everything.

    Each stratum ``c`` of size ``n_c`` gets ``max(1, round(ratio · n_c))`` labels (exact per-class proportions).
    When small strata make that total miss ``max(#strata, round(ratio · n))`` by more than 1% of ``n`` (e.g.
    7 samples per class: 20% would give 1 label per class, 14%), the labels are instead allocated by largest
    remainder, at least one per stratum, so the total hits that target. Which samples are labeled within a
    stratum is a seeded permutation."""
    n = int(target.shape[0])
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"label ratio must lie in (0, 1], got {ratio}")
    if ratio >= 1.0:
        return torch.ones(n, dtype=torch.bool)
    groups = strata(target, task)
    rng = np.random.default_rng(seed)
    members = []
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        members.append(idx[rng.permutation(len(idx))])
    sizes = np.array([len(m) for m in members])
    counts = np.maximum(1, np.round(ratio * sizes).astype(np.int64))
    goal = max(len(sizes), round(ratio * n))
    if abs(int(counts.sum()) - goal) > 0.01 * n:
        counts = _largest_remainder(ratio * sizes, sizes, goal, rng)
    chosen = np.concatenate([m[:k] for m, k in zip(members, counts, strict=True)])
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.as_tensor(chosen, dtype=torch.long)] = True
    return mask


def _largest_remainder(quota: np.ndarray, sizes: np.ndarray, goal: int, rng: np.random.Generator) -> np.ndarray:
    """Integers ``1 <= k_c <= sizes_c`` summing to ``goal`` (clipped to what fits), closest to ``quota``: floors
    first, then one more for the largest fractional parts (ties in seeded order), or one less for the smallest."""
    counts = np.clip(np.floor(quota).astype(np.int64), 1, sizes)
    goal = int(min(max(goal, len(sizes)), sizes.sum()))
    frac = quota - np.floor(quota)
    order = rng.permutation(len(sizes))
    up = order[np.argsort(-frac[order], kind="stable")]
    while counts.sum() < goal:
        for c in up:
            if counts.sum() < goal and counts[c] < sizes[c]:
                counts[c] += 1
    while counts.sum() > goal:
        for c in up[::-1]:
            if counts.sum() > goal and counts[c] > 1:
                counts[c] -= 1
    return counts


class Standardizer:
    """Per-view z-scoring fitted on the training split only (on rows where the view is present).

    Constant features get a unit scale, so they map to zero instead of NaN.
    """

    def __init__(self) -> None:
        self.mean: dict[str, np.ndarray] = {}
        self.std: dict[str, np.ndarray] = {}

    def fit(self, views: Mapping[str, np.ndarray], present: np.ndarray | None = None) -> Standardizer:
        for m, (name, x) in enumerate(views.items()):
            rows = x if present is None else x[present[:, m]]
            if len(rows) == 0:
                raise ValueError(f"cannot standardise view {name!r}: no training sample has it")
            mean = rows.mean(axis=0, dtype=np.float64)
            std = rows.std(axis=0, dtype=np.float64)
            std[std < 1e-8] = 1.0
            self.mean[name], self.std[name] = mean, std
        return self

    def transform(self, views: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [k for k in views if k not in self.mean]
        if missing:
            raise ValueError(f"standardiser was not fitted on view {missing[0]!r}")
        return {k: ((x - self.mean[k]) / self.std[k]).astype(np.float32) for k, x in views.items()}
