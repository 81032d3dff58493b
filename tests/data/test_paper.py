"""MOSI / MOSEI (MMSA and MultiBench pickles) and MM-IMDb (HDF5): fixtures written in the public formats round-trip,
malformed files are refused with the split / key / shape named."""

from __future__ import annotations

import json
import pickle
import sys
from itertools import product
from pathlib import Path

import numpy as np
import pytest
import torch

from robult.batch import collate, validate_batch
from robult.data.paper import MMIMDB_MULTIBENCH_SPLIT, load_mmimdb, load_mosei, load_mosi
from robult.data.registry import load_dataset
from robult.data.safe_pickle import UnsafePickleError
from robult.specs import TaskKind

SIZES = {"train": 6, "valid": 3, "test": 4}


# ----------------------------------------------------------------------------------------------------------------
# Fixture writers (public formats)
# ----------------------------------------------------------------------------------------------------------------


def _mmsa_split(n: int, seed: int, aligned: bool, t: int = 8, text: bool = True) -> tuple[dict, np.ndarray]:
    """One MMSA split (aligned_50 / unaligned_50 layout, MOSI feature sizes); returns (split, text lengths)."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(1, t + 1, n)
    lens[0] = t
    ids = np.zeros((n, 3, t), dtype=np.float32)  # token ids, attention mask, segment ids
    for i, ln in enumerate(lens):
        ids[i, 0, :ln] = rng.integers(100, 30000, ln)
        ids[i, 1, :ln] = 1
    split = {
        "text_bert": ids,
        "raw_text": np.array([f"utterance number {i}" for i in range(n)], dtype=object),
        "id": np.array([f"vid{seed}$_${i}" for i in range(n)], dtype=object),
        "regression_labels": rng.uniform(-3, 3, n).astype(np.float32),
        "classification_labels": rng.integers(0, 3, n).astype(np.float32),
    }
    if text:  # BERT features: padding positions hold (non-zero) BERT outputs too
        split["text"] = rng.standard_normal((n, t, 768)).astype(np.float32)
    if aligned:
        for key, d in (("audio", 5), ("vision", 20)):
            x = rng.standard_normal((n, t, d)).astype(np.float32)
            for i, ln in enumerate(lens):
                x[i, ln:] = 0
            split[key] = x
    else:
        for key, d, tm in (("audio", 5, 10), ("vision", 20, 12)):
            ln = rng.integers(1, tm + 1, n)
            x = rng.standard_normal((n, tm, d)).astype(np.float32)
            for i, li in enumerate(ln):
                x[i, li:] = 0
            split[key] = x
            split[f"{key}_lengths"] = list(ln)  # MMSA stores plain lists of ints
    return split, lens.astype(np.int64)


def write_mmsa(path: Path, aligned: bool = True, text: bool = True) -> tuple[dict, dict]:
    data, lens = {}, {}
    for k, (s, n) in enumerate(SIZES.items()):
        data[s], lens[s] = _mmsa_split(n, k, aligned, text=text)
    path.write_bytes(pickle.dumps(data, protocol=4))
    return data, lens


def write_multibench(path: Path, t: int = 50, dims: tuple[int, int, int] = (300, 5, 20)) -> tuple[dict, dict]:
    """MultiBench / MulT ``mosi_data.pkl``: word-aligned, zero padding at the *front*, labels (N, 1, 1)."""
    data, lens = {}, {}
    for k, (s, n) in enumerate(SIZES.items()):
        rng = np.random.default_rng(10 + k)
        ln = rng.integers(1, t + 1, n)
        ln[0] = t
        split = {}
        for key, d in zip(("text", "audio", "vision"), dims, strict=True):
            x = rng.standard_normal((n, t, d)).astype(np.float32)
            for i, li in enumerate(ln):
                x[i, : t - li] = 0
            split[key] = x
        split["labels"] = rng.uniform(-3, 3, (n, 1, 1)).astype(np.float32)
        split["id"] = np.array([[f"vid{k}", str(i)] for i in range(n)])
        data[s], lens[s] = split, ln.astype(np.int64)
    path.write_bytes(pickle.dumps(data, protocol=4))
    return data, lens


def _dump(path: Path, data: dict) -> Path:
    path.write_bytes(pickle.dumps(data, protocol=4))
    return path


# ----------------------------------------------------------------------------------------------------------------
# MOSI / MOSEI
# ----------------------------------------------------------------------------------------------------------------


def test_mmsa_aligned_round_trip(tmp_path: Path) -> None:
    data, lens = write_mmsa(tmp_path / "aligned_50.pkl")
    b = load_mosi(tmp_path / "aligned_50.pkl")
    assert b.name == "mosi" and b.primary_metric == "mae" and b.notes["format"] == "mmsa"
    assert b.task.kind == TaskKind.REGRESSION and b.task.target_range == (-3.0, 3.0)
    assert [(s.name, s.kind.value, s.shape) for s in b.modalities] == [
        ("text", "sequence", (8, 768)),
        ("audio", "sequence", (8, 5)),
        ("vision", "sequence", (8, 20)),
    ]
    for split, ds in (("train", b.train), ("valid", b.val), ("test", b.test)):
        src = data[split]
        assert len(ds) == SIZES[split]
        for key in ("text", "audio", "vision"):
            assert np.array_equal(np.asarray(ds.inputs[key]), src[key])
            # text from the BERT mask; aligned audio/vision follow the text lengths
            assert torch.equal(ds.lengths[key], torch.as_tensor(lens[split]))
        assert torch.allclose(ds.target, torch.as_tensor(src["regression_labels"]))
    batch = collate(b.train.__getitems__([0, 2, 3]))
    validate_batch(batch, b.modalities, b.task)


def test_mmsa_unaligned_uses_given_lengths(tmp_path: Path) -> None:
    data, lens = write_mmsa(tmp_path / "unaligned_50.pkl", aligned=False)
    b = load_mosi(tmp_path / "unaligned_50.pkl", fmt="mmsa")
    assert [s.shape for s in b.modalities] == [(8, 768), (10, 5), (12, 20)]
    for split, ds in (("train", b.train), ("valid", b.val), ("test", b.test)):
        assert torch.equal(ds.lengths["text"], torch.as_tensor(lens[split]))
        for key in ("audio", "vision"):
            assert ds.lengths[key].tolist() == [int(v) for v in data[split][f"{key}_lengths"]]
            assert np.array_equal(np.asarray(ds.inputs[key]), data[split][key])


def test_mmsa_text_bert_only_gives_tokens(tmp_path: Path) -> None:
    data, lens = write_mmsa(tmp_path / "aligned_50.pkl", text=False)
    b = load_mosi(tmp_path / "aligned_50.pkl")
    text = b.modalities[0]
    assert text.kind.value == "tokens" and text.shape == (8,)
    assert np.array_equal(np.asarray(b.train.inputs["text"]), data["train"]["text_bert"][:, 0].astype(np.int64))
    assert torch.equal(b.train.lengths["text"], torch.as_tensor(lens["train"]))
    assert b.notes["text_vocab_size"] > 100


def test_multibench_left_padding_is_shifted(tmp_path: Path) -> None:
    data, lens = write_multibench(tmp_path / "mosi_data.pkl")
    b = load_mosi(tmp_path / "mosi_data.pkl")
    assert b.notes["format"] == "multibench"
    assert [s.shape for s in b.modalities] == [(50, 300), (50, 5), (50, 20)]
    for split, ds in (("train", b.train), ("valid", b.val), ("test", b.test)):
        src = data[split]
        assert torch.allclose(ds.target, torch.as_tensor(src["labels"].reshape(-1)))
        for key in ("text", "audio", "vision"):
            assert torch.equal(ds.lengths[key], torch.as_tensor(lens[split]))
            x = np.asarray(ds.inputs[key])
            for i, ln in enumerate(lens[split]):  # valid rows first, zeros behind
                assert np.array_equal(x[i, :ln], src[key][i, 50 - ln :])
                assert not x[i, ln:].any()
    assert b.notes["left_padded_shifted"]["train/text"] == int((lens["train"] < 50).sum())


def test_nonfinite_replaced_and_all_zero_sequence(tmp_path: Path) -> None:
    data, _ = write_multibench(tmp_path / "in.pkl")
    data["train"]["audio"][1, -1, 0] = -np.inf  # as in the public audio features
    data["train"]["vision"][2, -1, :3] = np.nan
    for key in ("text", "audio", "vision"):
        data["test"][key][3] = 0  # an empty sample
    b = load_mosei(_dump(tmp_path / "mosei_senti_data.pkl", data))
    assert b.name == "mosei"
    assert b.notes["nonfinite_replaced"] == {"train/audio": 1, "train/vision": 3}
    assert np.isfinite(np.asarray(b.train.inputs["audio"])).all()
    assert np.asarray(b.train.inputs["audio"])[1, -1, 0] == 0.0
    assert b.test.lengths["text"][3] == 1 and b.notes["all_zero_sequences"]["test/text"] == 1


def test_multibench_label_shapes(tmp_path: Path) -> None:
    data, _ = write_multibench(tmp_path / "a.pkl")
    for split in SIZES:
        data[split]["labels"] = data[split]["labels"].reshape(-1, 1)
    b = load_mosi(_dump(tmp_path / "b.pkl", data), fmt="multibench")
    assert b.train.target.shape == (SIZES["train"],)


def test_malformed_affect_pickles(tmp_path: Path) -> None:
    data, _ = write_mmsa(tmp_path / "ok.pkl")

    bad = {k: v for k, v in data.items() if k != "valid"}
    with pytest.raises(ValueError, match=r"missing split key 'valid'"):
        load_mosi(_dump(tmp_path / "nosplit.pkl", bad))

    bad = {s: dict(v) for s, v in data.items()}
    del bad["train"]["vision"]
    with pytest.raises(ValueError, match=r"nokey\.pkl: split 'train' has no key 'vision'"):
        load_mosi(_dump(tmp_path / "nokey.pkl", bad))

    bad = {s: dict(v) for s, v in data.items()}
    bad["test"]["regression_labels"] = np.zeros((4, 2), dtype=np.float32)
    with pytest.raises(ValueError, match=r"split 'test' key 'regression_labels' has shape \(4, 2\)"):
        load_mosi(_dump(tmp_path / "label.pkl", bad))

    bad = {s: dict(v) for s, v in data.items()}
    bad["valid"]["audio"] = bad["valid"]["audio"][:2]
    with pytest.raises(ValueError, match=r"split 'valid': key 'audio' has 2 rows \(shape \(2, 8, 5\)\)"):
        load_mosi(_dump(tmp_path / "rows.pkl", bad))

    bad = {s: dict(v) for s, v in data.items()}
    bad["train"]["vision"] = bad["train"]["vision"][:, :, 0]
    with pytest.raises(ValueError, match=r"key 'vision' has shape \(6, 8\), expected 3 dimensions"):
        load_mosi(_dump(tmp_path / "rank.pkl", bad))

    bad = {s: dict(v) for s, v in data.items()}
    bad["train"]["regression_labels"] = bad["train"]["regression_labels"] * 10
    with pytest.raises(ValueError, match=r"outside the sentiment range"):
        load_mosi(_dump(tmp_path / "range.pkl", bad))

    with pytest.raises(ValueError, match=r"no key 'labels' \(multibench format\)"):
        load_mosi(tmp_path / "ok.pkl", fmt="multibench")

    with pytest.raises(ValueError, match=r"expected a dict with keys"):
        load_mosi(_dump(tmp_path / "list.pkl", [1, 2, 3]))  # type: ignore[arg-type]

    bad = {s: dict(v) for s, v in data.items()}
    bad["train"]["audio"] = torch.zeros(6, 8, 5)  # an object of another type
    with pytest.raises(UnsafePickleError, match=r"torch\.pkl.*torch\."):
        load_mosi(_dump(tmp_path / "torch.pkl", bad))

    bad = {s: {k: v for k, v in d.items() if k != "regression_labels"} for s, d in data.items()}
    with pytest.raises(ValueError, match=r"neither 'regression_labels' \(MMSA\) nor 'labels'"):
        load_mosi(_dump(tmp_path / "nolabels.pkl", bad))


def test_affect_registry(tmp_path: Path) -> None:
    (tmp_path / "mosi").mkdir()
    (tmp_path / "mosei").mkdir()
    write_mmsa(tmp_path / "mosi" / "aligned_50.pkl")
    write_multibench(tmp_path / "mosei" / "mosei_senti_data.pkl", dims=(300, 74, 35))
    b = load_dataset("mosi", data_dir=tmp_path)
    assert b.source.endswith("aligned_50.pkl") and len(b.train) == SIZES["train"]
    b = load_dataset("mosei", data_dir=tmp_path)
    assert b.name == "mosei" and [s.feature_dim for s in b.modalities] == [300, 74, 35]
    b = load_dataset("mosei", path=tmp_path / "mosi" / "aligned_50.pkl")
    assert b.notes["format"] == "mmsa"
    (tmp_path / "empty" / "mosi").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"aligned_50\.pkl"):
        load_dataset("mosi", data_dir=tmp_path / "empty")


# ----------------------------------------------------------------------------------------------------------------
# MM-IMDb
# ----------------------------------------------------------------------------------------------------------------

GENRES = ["Drama", "Comedy", "Romance", "Thriller", "Crime", "Action", "Adventure", "Horror", "Documentary",
          "Mystery", "Sci-Fi", "Fantasy", "Family", "Biography", "War", "History", "Music", "Animation",
          "Musical", "Western", "Sport", "Short", "Film-Noir"]  # fmt: skip


def _fuel_split_array(h5py, split_dict: dict) -> np.ndarray:
    """The root ``split`` attribute as Fuel's ``H5PYDataset.create_split_array`` lays it out."""
    sources = sorted({src for d in split_dict.values() for src in d})
    arr = np.empty(
        len(split_dict) * len(sources),
        dtype=np.dtype([
            ("split", "S", max(map(len, split_dict))),
            ("source", "S", max(map(len, sources))),
            ("start", np.int64),
            ("stop", np.int64),
            ("indices", h5py.special_dtype(ref=h5py.Reference)),
            ("available", np.bool_),
            ("comment", "S", 1),
        ]),
    )  # fmt: skip
    for i, (split, source) in enumerate(product(split_dict, sources)):
        start, stop = split_dict[split].get(source, (0, 0))
        arr[i] = (split.encode(), source.encode(), start, stop, h5py.Reference(), source in split_dict[split], b".")
    return arr


def write_mmimdb(path: Path, n: int = 12, ranges: dict | None = None, d_text: int = 300, d_img: int = 4096,
                 fuel: bool = True) -> dict:  # fmt: skip
    """``multimodal_imdb.hdf5`` as gmu-mmimdb's make_dataset.py writes it (tiny images to keep it small)."""
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    arrays = {
        "features": rng.standard_normal((n, d_text)).astype(np.float32),
        "vgg_features": rng.random((n, d_img)).astype(np.float32),
        "genres": (rng.random((n, 23)) < 0.2).astype(np.int32),
    }
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
        f["genres"].attrs["target_names"] = json.dumps(GENRES)
        f.create_dataset("images", data=rng.integers(0, 255, (n, 3, 4, 3)).astype(np.int32))
        seqs = f.create_dataset("sequences", (n,), dtype=h5py.special_dtype(vlen=np.dtype("int32")))
        for i in range(n):
            seqs[i] = rng.integers(0, 100, 1 + i % 5).astype(np.int32)
        f.create_dataset("imdb_ids", data=np.array([f"{i:07d}".encode() for i in range(n)], dtype="S7"))
        f.create_dataset("three_grams", data=np.zeros((n, 3), dtype=np.float32))
        f.create_dataset("word_grams", data=np.zeros((n, 2), dtype=np.float32))
        if fuel:
            ranges = ranges or {"train": (0, 6), "dev": (6, 8), "test": (8, n)}
            sources = ["features", "genres", "images", "imdb_ids", "sequences", "three_grams", "vgg_features",
                       "word_grams"]  # fmt: skip
            f.attrs["split"] = _fuel_split_array(h5py, {s: dict.fromkeys(sources, r) for s, r in ranges.items()})
    return arrays


def test_mmimdb_round_trip(tmp_path: Path) -> None:
    arrays = write_mmimdb(tmp_path / "multimodal_imdb.hdf5")
    b = load_mmimdb(tmp_path / "multimodal_imdb.hdf5")
    assert b.name == "mmimdb" and b.primary_metric == "macro_f1" and "micro_f1" in b.notes["metrics"]
    assert b.task.kind == TaskKind.MULTILABEL and b.task.num_classes == 23 and b.task.label_names == tuple(GENRES)
    assert [(s.name, s.kind.value, s.shape) for s in b.modalities] == [
        ("text", "vector", (300,)),
        ("image", "vector", (4096,)),
    ]
    assert b.notes["split_ranges"] == {"train": [0, 6], "val": [6, 8], "test": [8, 12]}
    for ds, (lo, hi) in ((b.train, (0, 6)), (b.val, (6, 8)), (b.test, (8, 12))):
        assert np.array_equal(np.asarray(ds.inputs["text"]), arrays["features"][lo:hi])
        assert np.array_equal(np.asarray(ds.inputs["image"]), arrays["vgg_features"][lo:hi])
        assert torch.equal(ds.target, torch.as_tensor(arrays["genres"][lo:hi], dtype=torch.float32))
    validate_batch(b.test.__getitems__([0, 1]), b.modalities, b.task)


def test_mmimdb_multibench_fixed_split(tmp_path: Path) -> None:
    n = MMIMDB_MULTIBENCH_SPLIT["test"][1]
    write_mmimdb(tmp_path / "m.hdf5", n=n, d_text=3, d_img=4, fuel=False)  # narrow features keep the file small
    b = load_mmimdb(tmp_path / "m.hdf5")
    assert (len(b.train), len(b.val), len(b.test)) == (15552, 2608, 7799)
    assert b.notes["split"] == "MultiBench fixed ranges"


def test_mmimdb_split_choice(tmp_path: Path) -> None:
    write_mmimdb(tmp_path / "m.hdf5", fuel=False)
    with pytest.raises(ValueError, match=r"12 rows and no Fuel 'split' attribute.*25959"):
        load_mmimdb(tmp_path / "m.hdf5")
    write_mmimdb(tmp_path / "f.hdf5")
    with pytest.raises(ValueError, match=r"needs 25959 rows"):
        load_mmimdb(tmp_path / "f.hdf5", split="multibench")
    with pytest.raises(ValueError, match=r"no root attribute 'split'"):
        load_mmimdb(tmp_path / "m.hdf5", split="file")


def test_malformed_mmimdb(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    write_mmimdb(tmp_path / "ok.hdf5")

    def variant(name: str, edit) -> Path:
        path = tmp_path / name
        path.write_bytes((tmp_path / "ok.hdf5").read_bytes())
        with h5py.File(path, "a") as f:
            edit(f)
        return path

    with pytest.raises(ValueError, match=r"nov\.hdf5: no dataset 'vgg_features'"):
        load_mmimdb(variant("nov.hdf5", lambda f: f.__delitem__("vgg_features")))

    def flat_genres(f) -> None:
        del f["genres"]
        f.create_dataset("genres", data=np.zeros(12, dtype=np.int32))

    with pytest.raises(ValueError, match=r"dataset 'genres' has shape \(12,\)"):
        load_mmimdb(variant("g.hdf5", flat_genres))

    def short_text(f) -> None:
        x = f["features"][:10]
        del f["features"]
        f.create_dataset("features", data=x)

    with pytest.raises(ValueError, match=r"dataset 'features' has 10 rows, 'genres' has 12"):
        load_mmimdb(variant("rows.hdf5", short_text))

    def twos(f) -> None:
        f["genres"][0, 0] = 2

    with pytest.raises(ValueError, match=r"'genres' holds values other than 0 and 1"):
        load_mmimdb(variant("two.hdf5", twos))

    def bad_range(f) -> None:
        f.attrs["split"] = _fuel_split_array(h5py, {"train": {"genres": (0, 6)}, "dev": {"genres": (6, 8)},
                                                    "test": {"genres": (8, 40)}})  # fmt: skip

    with pytest.raises(ValueError, match=r"split 'test' range \[8, 40\) does not fit the 12 rows"):
        load_mmimdb(variant("range.hdf5", bad_range))

    (tmp_path / "junk.hdf5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match=r"junk\.hdf5: not a readable HDF5 file"):
        load_mmimdb(tmp_path / "junk.hdf5")


def test_mmimdb_without_h5py(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match=r"pip install 'robult\[hdf5\]'"):
        load_mmimdb(tmp_path / "multimodal_imdb.hdf5")


def test_mmimdb_registry(tmp_path: Path) -> None:
    (tmp_path / "mmimdb").mkdir()
    write_mmimdb(tmp_path / "mmimdb" / "multimodal_imdb.hdf5")
    b = load_dataset("mmimdb", data_dir=tmp_path)
    assert (len(b.train), len(b.val), len(b.test)) == (6, 2, 4)
