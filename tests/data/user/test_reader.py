"""The user data format (dataset.yaml + .npy): round trips, splits, presence, standardisation and clear errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from robult.batch import collate
from robult.data.registry import load_dataset
from robult.data.user import MappedArray, MissingFileError, load_user_dataset, write_user_dataset
from robult.specs import TaskSpec

N = 120


def _arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "audio": (rng.standard_normal((N, 6)) * 3 + 2).astype(np.float32),
        "text": rng.standard_normal((N, 7, 4)).astype(np.float32),
        "ids": rng.integers(0, 50, (N, 9)).astype(np.int32),
        "image": rng.random((N, 2, 4, 4)).astype(np.float32),
    }


def _labels(seed: int = 0, classes: int = 4) -> np.ndarray:
    return np.random.default_rng(seed + 100).permutation(np.arange(N) % classes)


def _lengths(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + 200)
    return {"text": rng.integers(1, 8, N), "ids": rng.integers(1, 10, N)}


def _write(tmp_path: Path, **kwargs) -> Path:
    kwargs.setdefault("lengths", _lengths())
    write_user_dataset(tmp_path, _arrays(), _labels(), TaskSpec("multiclass", num_classes=4), name="toy", **kwargs)
    return tmp_path


def _edit_yaml(directory: Path, **changes) -> None:
    path = directory / "dataset.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg.update(changes)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def _rows(ds, name: str) -> np.ndarray:
    return np.asarray(ds.inputs[name])


def test_round_trip_with_split_and_presence(tmp_path: Path) -> None:
    split = np.zeros(N, dtype=np.int8)
    split[::5] = 2
    split[1::10] = 1
    present = np.ones((N, 4), dtype=bool)
    present[::3, 0] = False
    present[1::4, 2] = False
    yaml_path = write_user_dataset(
        tmp_path,
        _arrays(),
        _labels(),
        TaskSpec("multiclass", num_classes=4),
        name="toy",
        lengths=_lengths(),
        split=split,
        present=present,
        primary_metric="macro_f1",
    )
    cfg = yaml.safe_load(yaml_path.read_text())
    assert [m["kind"] for m in cfg["modalities"]] == ["vector", "sequence", "tokens", "image"]
    assert cfg["split"] == "split.npy" and cfg["present"] == "present.npy"

    b = load_user_dataset(tmp_path)
    assert b.name == "toy" and b.primary_metric == "macro_f1" and b.source == str(yaml_path)
    assert [(s.name, s.kind.value, s.shape) for s in b.modalities] == [
        ("audio", "vector", (6,)),
        ("text", "sequence", (7, 4)),
        ("ids", "tokens", (9,)),
        ("image", "image", (2, 4, 4)),
    ]
    arrays, labels, lengths = _arrays(), _labels(), _lengths()
    for code, ds in ((0, b.train), (1, b.val), (2, b.test)):
        idx = np.flatnonzero(split == code)
        assert len(ds) == len(idx)
        assert np.array_equal(ds.target.numpy(), labels[idx])
        assert np.array_equal(ds.present.numpy(), present[idx])
        for name, arr in arrays.items():
            np.testing.assert_array_equal(_rows(ds, name), arr[idx])
        for name, ln in lengths.items():
            assert np.array_equal(ds.lengths[name].numpy(), ln[idx])
    assert len(b.train) == 84 and len(b.val) == 12 and len(b.test) == 24

    # never loaded whole: each split reads rows of the file through a lazy row view
    for name in arrays:
        view = b.train.inputs[name]
        assert isinstance(view.base, MappedArray) and view.base.path == tmp_path / f"{name}.npy"

    # a batch through a DataLoader matches the source rows and the dtypes the models expect
    loader = torch.utils.data.DataLoader(
        b.test, batch_size=7, shuffle=True, collate_fn=collate, generator=torch.Generator().manual_seed(0)
    )
    batch = next(iter(loader))
    rows = np.flatnonzero(split == 2)[batch.index.numpy()]
    assert batch.inputs["audio"].dtype == torch.float32 and batch.inputs["ids"].dtype == torch.int64
    np.testing.assert_array_equal(batch.inputs["text"].numpy(), arrays["text"][rows])
    np.testing.assert_array_equal(batch.inputs["ids"].numpy(), arrays["ids"][rows])
    assert torch.equal(batch.lengths["text"], torch.from_numpy(lengths["text"][rows]))
    assert torch.equal(batch.present, torch.from_numpy(present[rows]))


def test_default_split_is_stratified_and_seeded(tmp_path: Path) -> None:
    b = load_user_dataset(_write(tmp_path), seed=0)
    assert (len(b.train), len(b.val), len(b.test)) == (88, 8, 24)  # 30 per class: 6 test, then 2 of 24 for val
    assert np.bincount(b.test.target.numpy(), minlength=4).tolist() == [6] * 4
    assert np.bincount(b.val.target.numpy(), minlength=4).tolist() == [2] * 4
    assert "stratified" in b.notes["split"]
    again = load_user_dataset(tmp_path, seed=0)
    other = load_user_dataset(tmp_path, seed=1)
    np.testing.assert_array_equal(_rows(b.test, "audio"), _rows(again.test, "audio"))
    assert not np.array_equal(_rows(b.test, "audio"), _rows(other.test, "audio"))
    # the splits partition the rows
    seen = np.concatenate([_rows(ds, "audio") for ds in (b.train, b.val, b.test)])
    assert np.array_equal(np.sort(seen[:, 0]), np.sort(_arrays()["audio"][:, 0]))


def test_split_without_val_rows_carves_validation(tmp_path: Path) -> None:
    split = np.where(np.arange(N) % 4 == 0, 2, 0).astype(np.int8)
    _write(tmp_path, split=split)
    b = load_user_dataset(tmp_path, val_fraction=0.25)
    per_class = np.bincount(_labels()[split == 0], minlength=4)
    assert len(b.test) == 30 and len(b.train) + len(b.val) == 90
    assert np.bincount(b.val.target.numpy(), minlength=4).tolist() == [round(0.25 * c) for c in per_class]
    assert "no val rows" in b.notes["split"]


def test_standardize_by_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("robult.data.user.stats._CHUNK_BYTES", 100)  # force many tiny chunks
    _write(tmp_path, standardize=True)
    b = load_user_dataset(tmp_path)
    audio = _rows(b.train, "audio").astype(np.float64)
    np.testing.assert_allclose(audio.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(audio.std(0), 1.0, atol=1e-5)
    # sequences: statistics over valid steps only
    text = _rows(b.train, "text").astype(np.float64)
    valid = np.arange(7)[None, :] < b.train.lengths["text"].numpy()[:, None]
    np.testing.assert_allclose(text[valid].mean(0), 0.0, atol=1e-5)
    # images: per channel
    image = _rows(b.train, "image").astype(np.float64)
    np.testing.assert_allclose(image.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
    # test rows use the train statistics: same affine map of the raw values
    raw_train = _arrays()["audio"][_index_of(b.train, "audio")].astype(np.float64)
    mean, std = raw_train.mean(0), raw_train.std(0)
    raw_test = _arrays()["audio"][_index_of(b.test, "audio")]
    np.testing.assert_allclose(_rows(b.test, "audio"), (raw_test - mean) / std, rtol=1e-5, atol=1e-5)
    # tokens are never standardised
    np.testing.assert_array_equal(_rows(b.test, "ids"), _arrays()["ids"][_index_of(b.test, "audio")])


def _index_of(ds, name: str) -> np.ndarray:
    return ds.inputs[name].rows


def test_registry_loader_and_pickle(tmp_path: Path) -> None:
    _write(tmp_path)
    b = load_dataset("user", path=str(tmp_path), seed=2, val_fraction=0.2)
    assert b.name == "toy" and len(b.train) + len(b.val) + len(b.test) == N
    clone = pickle.loads(pickle.dumps(b.train))  # workers re-open the file by path: small pickle
    assert len(pickle.dumps(b.train)) < 20_000
    np.testing.assert_array_equal(_rows(clone, "text"), _rows(b.train, "text"))
    with pytest.raises(ValueError, match="path=DIR"):
        load_dataset("user")


def test_other_tasks(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = {"v": rng.standard_normal((50, 3)).astype(np.float32)}
    y = np.linspace(-3, 3, 50)
    write_user_dataset(tmp_path / "reg", x, y, {"kind": "regression", "target_range": [-3, 3]})
    b = load_user_dataset(tmp_path / "reg")
    assert b.task.kind.value == "regression" and b.task.target_range == (-3.0, 3.0) and b.primary_metric == "mae"
    assert b.train.target.dtype == torch.float32
    ml = (rng.random((50, 5)) > 0.5).astype(np.float32)
    write_user_dataset(tmp_path / "ml", x, ml, TaskSpec("multilabel", num_classes=5))
    b = load_user_dataset(tmp_path / "ml")
    assert b.task.num_classes == 5 and b.train.target.shape[1] == 5
    # unlabeled samples may carry any label value
    yb = (np.arange(50) % 2).astype(np.int64)
    labeled = np.arange(50) % 3 != 0
    yb[~labeled] = -1
    write_user_dataset(tmp_path / "semi", x, yb, TaskSpec("multiclass", num_classes=2), labeled=labeled)
    b = load_user_dataset(tmp_path / "semi")
    total = sum(int(ds.labeled.sum()) for ds in (b.train, b.val, b.test))
    assert total == int(labeled.sum())


# ------------------------------------------------------------------------------------------------------ errors


def test_row_count_mismatch_names_modality_and_file(tmp_path: Path) -> None:
    _write(tmp_path)
    np.save(tmp_path / "audio.npy", np.zeros((N - 1, 6), dtype=np.float32))
    with pytest.raises(ValueError, match=r"modality 'audio' \(.*audio\.npy\) has 119 rows, but labels\.npy has 120"):
        load_user_dataset(tmp_path)


@pytest.mark.parametrize(
    ("change", "culprit"),
    [
        ({"labelz": "labels.npy"}, "labelz: unknown key"),
        ({"modalities": [{"name": "audio", "kind": "vector", "file": "audio.npy", "scale": 2}]}, "modalities.0.scale"),
        ({"task": {"kind": "multiclass", "num_classes": 4, "classes": 4}}, "task.classes"),
        ({"task": {"kind": "multiclass"}}, "num_classes"),
        ({"modalities": [{"name": "text", "kind": "sequence", "file": "text.npy"}]}, "needs a lengths file"),
    ],
)
def test_bad_yaml_names_the_key(tmp_path: Path, change: dict, culprit: str) -> None:
    _write(tmp_path)
    _edit_yaml(tmp_path, **change)
    with pytest.raises(ValueError, match=r"dataset\.yaml") as info:
        load_user_dataset(tmp_path)
    assert culprit in str(info.value)


def test_malformed_yaml_names_the_file(tmp_path: Path) -> None:
    _write(tmp_path)
    (tmp_path / "dataset.yaml").write_text("task: {kind: multiclass\nmodalities: [\n")
    with pytest.raises(ValueError, match=r"dataset\.yaml: not valid YAML \(while parsing"):
        load_user_dataset(tmp_path)
    (tmp_path / "dataset.yaml").write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match=r"dataset\.yaml: expected a mapping at the top level, got list"):
        load_user_dataset(tmp_path)


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match=r"dataset\.yaml"):
        load_user_dataset(tmp_path)
    _write(tmp_path)
    (tmp_path / "image.npy").unlink()
    with pytest.raises(ValueError, match=r"image\.npy: file not found \(modality 'image'"):
        load_user_dataset(tmp_path)
    _write(tmp_path)
    (tmp_path / "labels.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"labels\.npy: file not found"):
        load_user_dataset(tmp_path)


def test_bad_presence_mask(tmp_path: Path) -> None:
    _write(tmp_path, present=np.ones((N, 4), dtype=bool))
    np.save(tmp_path / "present.npy", np.ones((N, 3), dtype=bool))
    with pytest.raises(ValueError, match=r"present\.npy \(present\): shape \(120, 3\), expected \(120, 4\)"):
        load_user_dataset(tmp_path)
    mask = np.ones((N, 4), dtype=bool)
    mask[17] = False
    np.save(tmp_path / "present.npy", mask)
    with pytest.raises(ValueError, match="sample 17 has no modality present"):
        load_user_dataset(tmp_path)


def test_labels_out_of_range(tmp_path: Path) -> None:
    _write(tmp_path)
    bad = _labels()
    bad[5] = 4
    np.save(tmp_path / "labels.npy", bad)
    with pytest.raises(ValueError, match=r"labels\.npy \(labels\): label 4 is outside the task's range \[0, 3\]"):
        load_user_dataset(tmp_path)


def test_out_of_range_label_names_its_file_row(tmp_path: Path) -> None:
    # rows are counted in labels.npy, not among the labeled rows the check sees
    labels = _labels()
    labels[[40, 90]] = [9, -3]  # the message names row 40 and the value it holds
    labeled = np.ones(N, dtype=bool)
    labeled[:30] = False
    write_user_dataset(
        tmp_path, _arrays(), labels, TaskSpec("multiclass", num_classes=4), lengths=_lengths(), labeled=labeled
    )
    with pytest.raises(ValueError, match=r"label 9 is outside the task's range \[0, 3\] \(4 classes\): row 40, 2 such"):
        load_user_dataset(tmp_path)


def test_other_malformed_inputs(tmp_path: Path) -> None:
    _write(tmp_path, split=np.zeros(N, dtype=np.int8))
    with pytest.raises(ValueError, match=r"split\.npy \(split\): no sample in the test split"):
        load_user_dataset(tmp_path)
    np.save(tmp_path / "split.npy", np.full(N, 3, dtype=np.int8))
    with pytest.raises(ValueError, match=r"split\.npy \(split\): values must be"):
        load_user_dataset(tmp_path)
    _write(tmp_path)
    ln = _lengths()["text"]
    ln[3] = 8
    np.save(tmp_path / "text_lengths.npy", ln)
    with pytest.raises(
        ValueError, match=r"lengths of modality 'text' \(text_lengths\.npy\): length 8 outside \[1, 7\]"
    ):
        load_user_dataset(tmp_path)
    _write(tmp_path)
    np.save(tmp_path / "ids.npy", np.zeros((N, 9), dtype=np.float32))
    with pytest.raises(ValueError, match=r"modality 'ids' .*tokens need an integer array"):
        load_user_dataset(tmp_path)
    _write(tmp_path)
    np.save(tmp_path / "audio.npy", np.array([{"a": 1}] * N, dtype=object))
    with pytest.raises(ValueError, match=r"audio\.npy: cannot read"):
        load_user_dataset(tmp_path)
    np.save(tmp_path / "audio.npy", np.zeros((N, 2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"modality 'audio' .*shape \(120, 2, 3\)"):
        load_user_dataset(tmp_path)


# ------------------------------------------------------------------------------------------ the row reader


@pytest.mark.parametrize(
    ("value", "message"),
    [(1.5, r"row 7 holds 1\.5: not a class id"), (np.nan, r"row 7 holds nan: a NaN or Inf label in a labeled row")],
)
def test_float_and_nan_labels_are_errors_naming_the_file_row(tmp_path: Path, value: float, message: str) -> None:
    _write(tmp_path)
    bad = _labels().astype(np.float64)
    bad[7] = value
    bad[30] = value
    np.save(tmp_path / "labels.npy", bad)
    with pytest.raises(ValueError, match=rf"labels\.npy \(labels\): {message}.*2 such row"):
        load_user_dataset(tmp_path)


def test_nan_label_of_an_unlabeled_row_is_allowed_and_integral_floats_load(tmp_path: Path) -> None:
    labeled = np.ones(N, dtype=bool)
    labeled[7] = False
    _write(tmp_path, labeled=labeled)
    labels = _labels().astype(np.float32)
    labels[7] = np.nan
    np.save(tmp_path / "labels.npy", labels)
    bundle = load_user_dataset(tmp_path)
    loaded = torch.cat([p.target[p.labeled] for p in (bundle.train, bundle.val, bundle.test)])
    assert loaded.dtype == torch.long and sorted(loaded.tolist()) == sorted(np.delete(_labels(), 7).tolist())


def test_nan_label_is_an_error_for_every_task_kind(tmp_path: Path) -> None:
    arrays = {"audio": _arrays()["audio"]}
    for task, labels in (
        (TaskSpec("binary"), (np.arange(N) % 2).astype(np.float32)),
        (TaskSpec("regression"), np.linspace(-1, 1, N)),
        (TaskSpec("multilabel", num_classes=3), (np.arange(3 * N).reshape(N, 3) % 2).astype(np.float32)),
    ):
        labels[11] = np.inf
        write_user_dataset(tmp_path / task.kind.value, arrays, labels, task)
        with pytest.raises(ValueError, match=r"labels\.npy \(labels\): row 11 holds .*inf.*: a NaN or Inf label"):
            load_user_dataset(tmp_path / task.kind.value)


def test_bundle_from_arrays_refuses_a_fractional_class_instead_of_truncating() -> None:
    from robult.data.arrays import bundle_from_arrays

    labels = (np.arange(N) % 3).astype(np.float32)
    labels[9] = 1.5
    with pytest.raises(ValueError, match=r"dataset: row 9 holds 1\.5: not a class id"):
        bundle_from_arrays({"a": np.zeros((N, 2), np.float32)}, labels, TaskSpec("multiclass", num_classes=3))
