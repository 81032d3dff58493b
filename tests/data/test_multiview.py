"""Real multi-view sets: shapes, classes, splits, standardisation, checksums, missing files, random presence."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

import robult.data.multiview as mv
from robult.data.multiview import SOURCES, random_presence
from robult.data.registry import DatasetBundle, default_data_dir, load_dataset, registered_datasets
from robult.data.splits import train_val_test_split
from robult.utils.io import ChecksumError

# documented in each SOURCE.md: view widths, total samples, classes, per-class counts (sorted by class id)
EXPECTED: dict[str, tuple[dict[str, int], int, int]] = {
    "handwritten": ({"pix": 240, "fou": 76, "fac": 216, "zer": 47, "kar": 64, "mor": 6}, 2000, 10),
    "cub": ({"image": 1024, "text": 300}, 600, 10),
    "pie": ({"intensity": 484, "lbp": 256, "gabor": 279}, 680, 68),
    "scene15": ({"view0": 20, "view1": 59, "view2": 40}, 4485, 15),
    "landuse21": ({"view0": 20, "view1": 59, "view2": 40}, 2100, 21),
    "bbcsport": ({"segment0": 3183, "segment1": 3203}, 544, 5),
    "3sources": ({"view0": 3560, "view1": 3631, "view2": 3068}, 169, 6),
    "msrc_v1": ({"cm": 24, "hog": 576, "gist": 512, "lbp": 256, "centrist": 254}, 210, 7),
    "100leaves": ({"view0": 64, "view1": 64, "view2": 64}, 1600, 100),
    "webkb": ({"view0": 1840, "view1": 3000}, 1051, 2),
}
CLASS_COUNTS = {"3sources": [56, 21, 11, 18, 51, 12], "webkb": [230, 821]}
UNIFORM = {"handwritten": 200, "cub": 60, "pie": 10, "landuse21": 100, "msrc_v1": 30, "100leaves": 16}


def _data_dir() -> Path:
    root = default_data_dir()
    if root is None or not root.is_dir():
        pytest.skip("…/shared/data not found; set ROBULT_DATA_DIR")
    return root


def _source_file(name: str) -> Path:
    src = SOURCES[name]
    path = _data_dir() / src.folder / src.file
    if not path.is_file():
        pytest.skip(f"{path} not found; set ROBULT_DATA_DIR")
    return path


@functools.cache
def _load(name: str, seed: int = 0, rate: float = 0.0) -> DatasetBundle:
    return load_dataset(name, data_dir=default_data_dir(), seed=seed, train_missing_rate=rate)


def _bundle(name: str, seed: int = 0, rate: float = 0.0) -> DatasetBundle:
    _source_file(name)
    return _load(name, seed, rate)


def test_table_and_registry() -> None:
    assert set(SOURCES) == set(EXPECTED)
    reg = registered_datasets()
    for name, src in SOURCES.items():
        assert reg[name].group == "multiview" and reg[name].folder == src.folder
        assert len(src.sha256) == 64 and src.url.startswith("https://raw.githubusercontent.com/")
        assert src.commit in src.url and " " not in src.url
    assert SOURCES["handwritten"].url.endswith("/TMC%20ICLR/datasets/handwritten_6views.mat")


@pytest.mark.parametrize("name", list(EXPECTED))
def test_shapes_classes_and_splits(name: str) -> None:
    dims, n, classes = EXPECTED[name]
    b = _bundle(name)
    assert b.name == name and b.primary_metric == "accuracy"
    assert [(s.name, s.kind.value, s.shape) for s in b.modalities] == [(k, "vector", (d,)) for k, d in dims.items()]
    assert b.task.kind.value == "multiclass" and b.task.num_classes == classes
    assert len(b.train) + len(b.val) + len(b.test) == n
    assert b.notes["sizes"] == {"train": len(b.train), "val": len(b.val), "test": len(b.test)}

    y_all = torch.cat([b.train.target, b.val.target, b.test.target]).numpy()
    counts = np.bincount(y_all, minlength=classes)
    assert len(counts) == classes
    if name in UNIFORM:
        assert (counts == UNIFORM[name]).all()
    if name in CLASS_COUNTS:
        assert counts.tolist() == CLASS_COUNTS[name]

    # stratification: every class in train and test, test share per class as the split rule says
    test_counts = np.bincount(b.test.target.numpy(), minlength=classes)
    train_counts = np.bincount(b.train.target.numpy(), minlength=classes)
    assert (test_counts >= 1).all() and (train_counts >= 1).all()
    if name == "handwritten":
        assert len(b.train) + len(b.val) == 1600 and len(b.test) == 400
        assert (test_counts == 40).all()
    else:
        expected = [min(max(round(0.2 * c), 1), c - 1) for c in counts]
        assert test_counts.tolist() == expected

    for ds in (b.train, b.val, b.test):
        assert ds.present.dtype == torch.bool and ds.present.shape == (len(ds), len(dims)) and bool(ds.present.all())
        for spec in b.modalities:
            x = ds.inputs[spec.name]
            assert x.dtype == torch.float32 and x.shape == (len(ds), spec.shape[0])
            assert bool(torch.isfinite(x).all())

    # standardisation fitted on train only: train mean 0, unit std for non-constant features
    for spec in b.modalities:
        x = b.train.inputs[spec.name].double()
        assert x.mean(0).abs().max().item() < 1e-4
        std = x.std(0, unbiased=False)
        nonconst = std > 1e-3
        assert torch.allclose(std[nonconst], torch.ones_like(std[nonconst]), atol=1e-3)


def _split(y: np.ndarray, seed: int, fixed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    s = train_val_test_split(y, seed, 0.1, fixed_test=fixed)
    return s.train, s.val, s.test, s.rule


@pytest.mark.parametrize("name", ["handwritten", "scene15", "bbcsport", "3sources"])
def test_split_indices_disjoint_and_deterministic(name: str) -> None:
    src = SOURCES[name]
    mat = scipy.io.loadmat(str(_source_file(name)))
    _views, y, fixed = src.reader(mat)
    tr, va, te, rule = _split(y, 0, fixed)
    assert len(np.intersect1d(tr, va)) == 0 and len(np.intersect1d(tr, te)) == 0 and len(np.intersect1d(va, te)) == 0
    assert np.array_equal(np.sort(np.concatenate([tr, va, te])), np.arange(len(y)))
    again = _split(y, 0, fixed)
    assert all(np.array_equal(a, b) for a, b in zip((tr, va, te), again[:3], strict=True))
    other = _split(y, 1, fixed)
    if name == "handwritten":
        assert "fixed test split" in rule and np.array_equal(te, np.arange(1600, 2000)) and np.array_equal(te, other[2])
        assert len(tr) == 1440 and len(va) == 160
    else:
        assert "stratified" in rule and not np.array_equal(te, other[2])


def test_values_match_the_raw_file() -> None:
    """handwritten test rows = the file's x?_test rows, standardised with train-split statistics."""
    mat = scipy.io.loadmat(str(_source_file("handwritten")))
    b = _bundle("handwritten")
    _v, y, fixed = SOURCES["handwritten"].reader(mat)
    tr, _va, _te, _ = _split(y, 0, fixed)
    for v, name in enumerate(SOURCES["handwritten"].views, start=1):
        raw_train = np.concatenate([mat[f"x{v}_train"], mat[f"x{v}_test"]]).astype(np.float64)[tr]
        mean, std = raw_train.mean(0), raw_train.std(0)
        std[std < 1e-8] = 1.0
        raw_test = mat[f"x{v}_test"].astype(np.float64)
        got = b.test.inputs[name].double().numpy() * std + mean
        np.testing.assert_allclose(got, raw_test, rtol=1e-4, atol=1e-3 * (np.abs(raw_test).max() + 1))
    assert torch.equal(b.test.target, torch.from_numpy(mat["gt_test"].ravel().astype(np.int64) - 1))


def test_transposed_and_sparse_layouts() -> None:
    """PIE is stored features × samples, BBCSport as sparse terms × docs: both read as samples × features."""
    pie = scipy.io.loadmat(str(_source_file("pie")))
    views, y, _ = SOURCES["pie"].reader(pie)
    assert [v.shape for v in views] == [(680, 484), (680, 256), (680, 279)]
    np.testing.assert_array_equal(views[2][5], pie["X"][0, 2][:, 5].astype(np.float32))
    assert y.min() == 0 and y.max() == 67
    bbc = scipy.io.loadmat(str(_source_file("bbcsport")))
    views, y, _ = SOURCES["bbcsport"].reader(bbc)
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in views)
    assert [v.shape for v in views] == [(544, 3183), (544, 3203)]
    assert views[0].sum() == pytest.approx(float(bbc["data"][0, 0].sum()))
    assert np.bincount(y).tolist() == np.bincount(bbc["truelabel"][0, 1].ravel() - 1).tolist()


def test_determinism_and_seed() -> None:
    _source_file("cub")
    a = load_dataset("cub", data_dir=default_data_dir(), seed=3)
    b = load_dataset("cub", data_dir=default_data_dir(), seed=3)
    c = load_dataset("cub", data_dir=default_data_dir(), seed=4)
    for split in ("train", "val", "test"):
        da, db = getattr(a, split), getattr(b, split)
        assert torch.equal(da.target, db.target)
        assert all(torch.equal(da.inputs[k], db.inputs[k]) for k in a.modality_names)
    assert not torch.equal(a.test.inputs["image"], c.test.inputs["image"])


def test_train_missing_rate() -> None:
    b = _bundle("100leaves", rate=0.3)
    p = b.train.present
    assert bool(p.any(dim=1).all())
    assert (~p).sum().item() == round(0.3 * p.numel())
    assert bool(b.val.present.all()) and bool(b.test.present.all())
    for j, name in enumerate(b.modality_names):
        assert bool((b.train.inputs[name][~p[:, j]] == 0).all())
    assert b.notes["train_missing_rate"] == 0.3
    with pytest.raises(ValueError, match="missing rate"):
        load_dataset("webkb", data_dir=default_data_dir(), train_missing_rate=0.6)


def test_random_presence() -> None:
    p = random_presence(1000, 3, 0.4, seed=7)
    assert p.dtype == bool and p.shape == (1000, 3)
    assert p.any(axis=1).all()
    assert (~p).sum() == 1200
    assert np.array_equal(p, random_presence(1000, 3, 0.4, seed=7))
    assert not np.array_equal(p, random_presence(1000, 3, 0.4, seed=8))
    # every view is dropped about equally often
    assert np.allclose((~p).mean(axis=0), 0.4, atol=0.06)
    full = random_presence(500, 2, 0.5, seed=0)  # the maximum for 2 views: every sample keeps exactly one
    assert (full.sum(axis=1) == 1).all()
    assert random_presence(10, 4, 0.0, seed=0).all()
    assert random_presence(10, 1, 0.0, seed=0).all()
    with pytest.raises(ValueError, match="missing rate"):
        random_presence(10, 2, 0.6, seed=0)


def _copy_tree(tmp_path: Path, name: str) -> tuple[Path, Path]:
    src = SOURCES[name]
    original = _source_file(name)
    dest = tmp_path / "data" / src.folder / src.file
    dest.parent.mkdir(parents=True)
    shutil.copyfile(original, dest)
    dest.chmod(0o644)
    return tmp_path / "data", dest


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupted_file_is_detected(tmp_path: Path, damage: str) -> None:
    root, dest = _copy_tree(tmp_path, "3sources")
    data = bytearray(dest.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) - 1000]
    dest.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=r"3Sources\.mat") as info:
        load_dataset("3sources", data_dir=root, cache_dir=tmp_path / "cache")
    assert str(dest) in str(info.value)


def test_intact_copy_loads(tmp_path: Path) -> None:
    root, dest = _copy_tree(tmp_path, "3sources")
    b = load_dataset("3sources", data_dir=root, cache_dir=tmp_path / "cache")
    assert b.source == str(dest) and len(b.test) == 33  # 11+4+2+4+10+2 (20% per class)


def test_missing_file_names_path_and_url(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("msrc_v1", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    msg = str(info.value)
    assert str(tmp_path / "msrc_v1" / "MSRC_v1.mat") in msg
    assert SOURCES["msrc_v1"].url in msg and "download=True" in msg


def test_download_goes_to_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = _source_file("msrc_v1")
    calls: list[tuple[str, Path]] = []

    def fake_fetch(url: str, dest: str | Path, sha256: str) -> Path:
        calls.append((url, Path(dest)))
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(original, dest)
        return Path(dest)

    monkeypatch.setattr(mv, "fetch_file", fake_fetch)
    cache = tmp_path / "cache"
    b = load_dataset("msrc_v1", data_dir=tmp_path, download=True, cache_dir=cache)
    assert calls == [(SOURCES["msrc_v1"].url, cache / "MSRC_v1.mat")]
    assert b.source == str(cache / "MSRC_v1.mat") and len(b.train) + len(b.val) + len(b.test) == 210
    # a cached copy is used without downloading again, and is checksummed too
    b2 = load_dataset("msrc_v1", data_dir=tmp_path, cache_dir=cache)
    assert len(calls) == 1 and b2.source == b.source
    (cache / "MSRC_v1.mat").write_bytes(b"not a mat file")
    with pytest.raises(ChecksumError, match=r"MSRC_v1\.mat"):
        load_dataset("msrc_v1", data_dir=tmp_path, cache_dir=cache)


def test_random_split_option_ignores_the_fixed_test_split() -> None:
    """``split=random``: a seeded stratified 80/20 train/test split per seed even where the file fixes one."""
    _source_file("handwritten")
    a = load_dataset("handwritten", data_dir=default_data_dir(), seed=0, split="random")
    b = load_dataset("handwritten", data_dir=default_data_dir(), seed=1, split="random")
    assert "seeded stratified 80%/20%" in a.notes["split"] and len(a.test) == 400
    assert len(a.train) + len(a.val) == 1600
    assert not torch.equal(a.test.inputs["mor"], b.test.inputs["mor"])  # another test split for another seed
    assert torch.bincount(a.test.target).tolist() == [40] * 10  # stratified
    fixed = load_dataset("handwritten", data_dir=default_data_dir(), seed=0, split="default")
    assert "fixed test split" in fixed.notes["split"]
    with pytest.raises(ValueError, match=r"dataset 'handwritten': dataset.options.split='speaker' is not a split"):
        load_dataset("handwritten", data_dir=default_data_dir(), split="speaker")
