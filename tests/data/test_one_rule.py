"""One split rule and one default-metric table through every data path.

Splits: the rows of each split equal those of the rule as the loaders wrote it before
:func:`robult.data.splits.train_val_test_split` existed (computed inline here). Metrics: every loader, for every task
kind it serves, defaults to :data:`robult.data.registry.DEFAULT_METRICS`, a metric registered for that kind.
"""

from __future__ import annotations

import ast
import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from robult.data.arrays import bundle_from_arrays
from robult.data.multiview import MultiviewSource, load_multiview
from robult.data.paper import load_mmimdb, load_mosi
from robult.data.registry import CACHE_DIR_ENV, DEFAULT_METRICS, DatasetBundle, LoadOptions, cache_dir, default_metric
from robult.data.splits import strata, stratified_split, train_val_test_split
from robult.data.synthetic import SyntheticConfig, generate_synthetic, synthetic_bundle
from robult.data.user import load_user_dataset, write_user_dataset
from robult.evaluation import METRICS, default_primary_metric
from robult.specs import TaskKind, TaskSpec

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


# ------------------------------------------------------------------------------------------------- default metrics


def _check_metric(b: DatasetBundle, kind: str) -> None:
    assert b.task.kind == TaskKind(kind)
    assert b.primary_metric == DEFAULT_METRICS[b.task.kind] == default_metric(b.task) == default_primary_metric(b.task)
    assert b.primary_metric in METRICS and b.task.kind in METRICS[b.primary_metric].kinds


def test_the_table_names_registered_metrics() -> None:
    assert set(DEFAULT_METRICS) == set(TaskKind)
    for kind, name in DEFAULT_METRICS.items():
        assert name in METRICS and kind in METRICS[name].kinds


@pytest.mark.parametrize("kind", KINDS)
def test_generated_arrays_and_user_paths_default_to_the_table(tmp_path: Path, kind: str) -> None:
    _check_metric(synthetic_bundle(SyntheticConfig(task=kind, n_samples=200)), kind)
    rng = np.random.default_rng(0)
    y, task = _target(kind, rng, 60), _task(kind)
    x = {"v": rng.normal(size=(60, 3)).astype(np.float32)}
    _check_metric(bundle_from_arrays(x, y, task), kind)
    write_user_dataset(tmp_path / "u", x, y, task)  # no primary_metric in dataset.yaml
    _check_metric(load_user_dataset(tmp_path / "u"), kind)


def test_multiview_and_paper_loaders_default_to_the_table(tmp_path: Path) -> None:
    _check_metric(load_multiview(fake_multiview(tmp_path), LoadOptions(data_dir=tmp_path)), "multiclass")

    rng = np.random.default_rng(0)
    splits = {}
    for name, n in (("train", 8), ("valid", 4), ("test", 4)):
        splits[name] = {
            key: rng.normal(size=(n, 3, d)).astype(np.float32) for key, d in (("text", 4), ("audio", 2), ("vision", 3))
        }
        splits[name]["regression_labels"] = rng.uniform(-3, 3, n).astype(np.float32)
    (tmp_path / "mosi.pkl").write_bytes(pickle.dumps(splits, protocol=4))
    _check_metric(load_mosi(tmp_path / "mosi.pkl"), "regression")

    h5py = pytest.importorskip("h5py")
    n = 25959  # the MultiBench fixed split's row count, with 2-d features
    with h5py.File(tmp_path / "mmimdb.hdf5", "w") as f:
        f["features"] = rng.normal(size=(n, 2)).astype(np.float32)
        f["vgg_features"] = rng.normal(size=(n, 2)).astype(np.float32)
        f["genres"] = (rng.random((n, 3)) > 0.5).astype(np.int32)
        f["genres"].attrs["target_names"] = json.dumps(["a", "b", "c"])
    _check_metric(load_mmimdb(tmp_path / "mmimdb.hdf5"), "multilabel")


def test_raw_image_text_releases_default_to_the_table(tmp_path: Path) -> None:
    image = pytest.importorskip("PIL.Image")
    from robult.prepare.encoders import HashingTextEncoder, SmallCNN
    from robult.prepare.food101 import load_food101
    from robult.prepare.hateful_memes import load_hateful_memes

    rng = np.random.default_rng(0)

    def png(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(path, format="PNG")

    kw = {"text_encoder": HashingTextEncoder(dim=8), "image_encoder": SmallCNN(out_dim=4, width=2), "image_size": 8,
          "cache_dir": tmp_path / "cache"}  # fmt: skip
    food = tmp_path / "food101"
    (food / "texts").mkdir(parents=True)
    for split, count in (("train", 4), ("test", 1)):
        rows = []
        for c in ("pie", "ramen"):
            for k in range(count):
                png(food / "images" / split / c / f"{c}_{k}.png")
                rows.append(f"{c}_{k}.png,{c} number {k},{c}\n")
        (food / "texts" / f"{split}_titles.csv").write_text("".join(rows))
    _check_metric(load_food101(food, **kw), "multiclass")

    memes = tmp_path / "hateful_memes"
    for name, count in (("train", 8), ("dev_seen", 2)):
        recs = []
        for i in range(count):
            png(memes / "img" / f"{name}{i}.png")
            recs.append(json.dumps({"id": i, "img": f"img/{name}{i}.png", "text": f"meme {i}", "label": i % 2}))
        (memes / f"{name}.jsonl").write_text("\n".join(recs) + "\n")
    _check_metric(load_hateful_memes(memes, **kw), "binary")


# ---------------------------------------------------------------------------------------------- the cache variable


def test_one_cache_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``ROBULT_CACHE_DIR`` is spelled once in the code (data.registry); downloads and features both read it."""
    import robult
    from robult.prepare.cache import default_cache_dir

    package = Path(robult.__file__).parent
    spelled = [
        str(f.relative_to(package))
        for f in package.rglob("*.py")
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and node.value == CACHE_DIR_ENV
    ]
    assert spelled == ["data/registry.py"]
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path))
    assert cache_dir() == tmp_path and default_cache_dir() == tmp_path
    monkeypatch.delenv(CACHE_DIR_ENV)
    assert default_cache_dir() == Path.home() / ".cache" / "robult" / "features"
    assert cache_dir() == Path.home() / ".cache" / "robult"
