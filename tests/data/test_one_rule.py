"""One split rule through every data path: the rows of each split equal those of the rule as the loaders wrote it
before :func:`robult.data.splits.train_val_test_split` existed (computed inline here)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from robult.data.arrays import bundle_from_arrays
from robult.data.multiview import MultiviewSource, load_multiview
from robult.data.registry import LoadOptions
from robult.data.splits import strata, stratified_split, train_val_test_split
from robult.data.synthetic import SyntheticConfig, generate_synthetic, synthetic_bundle
from robult.data.user import load_user_dataset, write_user_dataset
from robult.specs import TaskSpec

KINDS = ("multiclass", "binary", "multilabel", "regression")
N = 240


def _old_rule(
    groups: np.ndarray, seed: int, val_fraction: float, fixed_test: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 80/20 + ``seed + 1`` rule as data/{multiview,user,arrays,synthetic}.py each wrote it."""
    if fixed_test is None:
        trainval, test = stratified_split(groups, 0.2, seed)
    else:
        test = np.sort(fixed_test)
        trainval = np.setdiff1d(np.arange(len(groups)), test)
    rest, val = stratified_split(groups[trainval], val_fraction, seed + 1)
    return trainval[rest], trainval[val], test


def _task(kind: str) -> TaskSpec:
    return TaskSpec(kind, num_classes={"multiclass": 5, "multilabel": 4}.get(kind, 0))


def _target(kind: str, rng: np.random.Generator, n: int = N) -> np.ndarray:
    return {
        "multiclass": lambda: rng.integers(0, 5, n),
        "binary": lambda: rng.integers(0, 2, n).astype(np.float32),
        "multilabel": lambda: (rng.random((n, 4)) > 0.6).astype(np.float32),
        "regression": lambda: rng.normal(size=n).astype(np.float32),
    }[kind]()


def _ids(ds) -> np.ndarray:
    return np.asarray(ds.inputs["id"])[:, 0].astype(np.int64)


def _assert_rows(bundle, expected: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    for ds, rows in zip((bundle.train, bundle.val, bundle.test), expected, strict=True):
        np.testing.assert_array_equal(_ids(ds), rows)


def test_rule_function_equals_the_old_formula() -> None:
    y = np.random.default_rng(0).integers(0, 7, 500)
    for seed in (0, 3):
        for fixed in (None, np.arange(400, 500)):
            s = train_val_test_split(y, seed, 0.1, fixed_test=fixed)
            for got, want in zip((s.train, s.val, s.test), _old_rule(y, seed, 0.1, fixed), strict=True):
                np.testing.assert_array_equal(got, want)
            assert s.sizes == {"train": len(s.train), "val": len(s.val), "test": len(s.test)}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [0, 5])
def test_arrays_and_user_paths_keep_their_rows(tmp_path: Path, kind: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y, task = _target(kind, rng), _task(kind)
    x = {"id": np.arange(N, dtype=np.float32)[:, None], "v": rng.normal(size=(N, 3)).astype(np.float32)}
    groups = strata(torch.as_tensor(y), task)
    _assert_rows(bundle_from_arrays(x, y, task, seed=seed, val_fraction=0.15), _old_rule(groups, seed, 0.15))

    labeled = rng.random(N) > 0.3  # unlabeled rows form their own stratum (-2)
    user_groups = np.full(N, -2, dtype=np.int64)
    user_groups[labeled] = strata(torch.as_tensor(y)[labeled], task)
    write_user_dataset(tmp_path / "a", x, y, task, labeled=labeled)
    b = load_user_dataset(tmp_path / "a", seed=seed, val_fraction=0.15)
    _assert_rows(b, _old_rule(user_groups, seed, 0.15))

    split = rng.choice([0, 2], size=N, p=[0.75, 0.25])  # a split file without val rows
    write_user_dataset(tmp_path / "b", x, y, task, split=split, labeled=labeled)
    b = load_user_dataset(tmp_path / "b", seed=seed, val_fraction=0.15)
    train = np.flatnonzero(split == 0)
    rest, val = stratified_split(user_groups[train], 0.15, seed + 1)
    _assert_rows(b, (train[rest], train[val], np.flatnonzero(split == 2)))


@pytest.mark.parametrize("kind", KINDS)
def test_synthetic_path_keeps_its_rows(kind: str) -> None:
    cfg = SyntheticConfig(task=kind, n_samples=300, seed=2)
    data = generate_synthetic(cfg)
    b = synthetic_bundle(cfg, seed=4, val_fraction=0.15)
    expected = _old_rule(strata(torch.as_tensor(data.target), data.task), 4, 0.15)
    for ds, rows in zip((b.train, b.val, b.test), expected, strict=True):
        np.testing.assert_array_equal(np.asarray(ds.inputs["m0"]), data.inputs["m0"][rows])


def fake_multiview(root: Path, n: int = 120, classes: int = 4, fixed_test: bool = False) -> MultiviewSource:
    """A tiny checksummed ``.mat`` with an ``id`` view (the row index) and a random view, and its table entry."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % classes
    folder = root / "fake"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fake.mat"
    scipy.io.savemat(path, {"id": np.arange(n, dtype=np.float64)[:, None], "x": rng.normal(size=(n, 3)), "y": y + 1})

    def read(m: dict) -> tuple[list[np.ndarray], np.ndarray, np.ndarray | None]:
        test = np.arange(n - n // 5, n) if fixed_test else None
        return [m["id"].astype(np.float32), m["x"].astype(np.float32)], m["y"].ravel().astype(np.int64) - 1, test

    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return MultiviewSource(
        "fake", "fake", "fake", "fake.mat", sha, "o/r", "0" * 40, "fake.mat", ("id", "x"), (1, 3), n, classes, read
    )


@pytest.mark.parametrize("fixed_test", [False, True])
def test_multiview_path_keeps_its_rows(tmp_path: Path, fixed_test: bool) -> None:
    source = fake_multiview(tmp_path, fixed_test=fixed_test)
    b = load_multiview(source, LoadOptions(data_dir=tmp_path, seed=3, val_fraction=0.1))
    # the id view is z-scored (an increasing affine map), so ranks over all rows recover the row index
    values = np.concatenate([np.asarray(ds.inputs["id"])[:, 0] for ds in (b.train, b.val, b.test)])
    ranks = np.empty(len(values), dtype=np.int64)
    ranks[np.argsort(values)] = np.arange(len(values))
    sizes = np.cumsum([len(b.train), len(b.val)])
    y = np.arange(120) % 4
    expected = _old_rule(y, 3, 0.1, np.arange(96, 120) if fixed_test else None)
    for got, want in zip(np.split(ranks, sizes), expected, strict=True):
        np.testing.assert_array_equal(got, want)
