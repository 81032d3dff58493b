"""Row reads of a ``.npy`` file (:class:`MappedArray`): every index form equals ``np.load``, adjacent rows are read
together, no page is mapped, Fortran order, pickling, and clear errors for bad rows and truncated files."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from robult.data.user import MappedArray

SHAPES = {"vector": (37, 6), "sequence": (37, 5, 3), "image": (37, 2, 3, 4)}
DTYPES = ["float16", "float32", ">f4", "int32", "int64", "uint8"]


def _index_sets(n: int, rng: np.random.Generator) -> list:
    mask = rng.random(n) < 0.4
    return [
        np.sort(rng.choice(n, 12, replace=False)),  # sorted, distinct
        rng.permutation(n)[:15],  # unsorted
        rng.integers(0, n, 25),  # repeats
        np.array([-1, 0, -n, 5, -5, 5]),  # negative, mixed, repeated
        np.concatenate([np.arange(3, 9), np.arange(20, 23), [30]]),  # runs of adjacent rows
        mask,  # boolean mask
        slice(None),
        slice(2, 30, 3),
        slice(None, None, -2),
        slice(-4, None),
        np.array([], dtype=np.int64),
        rng.integers(0, n, (3, 4)),  # a 2-D index: rows in that shape, like numpy
        [4, 2, 2],  # a list
    ]


def _expected(reference: np.ndarray, idx: object, dtype: type) -> np.ndarray:
    return reference[idx].astype(dtype)


@pytest.mark.parametrize("kind", list(SHAPES))
@pytest.mark.parametrize("stored", DTYPES)
def test_rows_equal_np_load(tmp_path: Path, kind: str, stored: str) -> None:
    rng = np.random.default_rng(10 * list(SHAPES).index(kind) + DTYPES.index(stored))
    shape = SHAPES[kind]
    if np.dtype(stored).kind == "f":
        data = (rng.standard_normal(shape) * 5).astype(stored)
    else:
        data = rng.integers(0, 200, shape).astype(stored)
    path = tmp_path / "x.npy"
    np.save(path, data)
    reference = np.load(path)
    out_dtype = np.float32 if np.dtype(stored).kind == "f" else np.int64
    reader = MappedArray(path, out_dtype)
    assert reader.shape == shape and reader.stored_dtype == np.dtype(stored) and len(reader) == shape[0]
    clone = pickle.loads(pickle.dumps(reader))
    assert len(pickle.dumps(reader)) < 1000  # the path, not the data
    for r in (reader, clone):
        for idx in _index_sets(shape[0], rng):
            got = r[idx]
            assert got.dtype == out_dtype
            np.testing.assert_array_equal(got, _expected(reference, idx, out_dtype), err_msg=f"index {idx!r}")
        for i in (0, 7, -1, np.int64(3)):
            np.testing.assert_array_equal(r[i], reference[i].astype(out_dtype))
        np.testing.assert_array_equal(np.asarray(r), reference.astype(out_dtype))
        np.testing.assert_array_equal(r.raw_rows(np.array([9, 1, 9])), reference[[9, 1, 9]])
        assert r.raw_rows(np.array([9, 1])).dtype == np.dtype(stored)


def test_standardisation_survives_pickling(tmp_path: Path) -> None:
    data = np.random.default_rng(0).standard_normal((30, 2, 3, 3)).astype(np.float16)
    np.save(tmp_path / "img.npy", data)
    mean = np.array([1.0, -2.0], dtype=np.float32)[:, None, None]
    std = np.array([0.5, 4.0], dtype=np.float32)[:, None, None]
    reader = pickle.loads(pickle.dumps(MappedArray(tmp_path / "img.npy", np.float32, mean, std)))
    idx = np.array([29, 3, 3, -30])
    np.testing.assert_allclose(reader[idx], (data[idx].astype(np.float32) - mean) / std, rtol=1e-6)
    assert reader[idx].dtype == np.float32


def test_adjacent_rows_are_read_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
    np.save(tmp_path / "v.npy", data)
    reader = MappedArray(tmp_path / "v.npy", np.float32)
    reads: list[tuple[int, int]] = []
    preadv = os.preadv

    def counting(fd: int, buffers: list, offset: int) -> int:
        reads.append(((offset - reader.offset) // 12, sum(len(b) for b in buffers) // 12))
        return preadv(fd, buffers, offset)

    monkeypatch.setattr("robult.data.user.rows._PREADV", counting)
    rows = np.array([10, 4, 3, 11, 5, 39, 3, 12])
    np.testing.assert_array_equal(reader[rows], data[rows])
    assert reads == [(3, 3), (10, 3), (39, 1)]  # (first row, rows): one read per run of adjacent rows
    reads.clear()
    np.testing.assert_array_equal(reader[5:25], data[5:25])
    assert reads == [(5, 20)]


def test_reads_without_positional_read_functions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = np.random.default_rng(1).integers(-9, 9, (25, 4, 2)).astype(np.int16)
    np.save(tmp_path / "s.npy", data)
    idx = np.array([24, 0, 1, 2, 13, 13, -2])
    monkeypatch.setattr("robult.data.user.rows._PREADV", None)  # os.pread only
    np.testing.assert_array_equal(MappedArray(tmp_path / "s.npy", np.int64)[idx], data[idx])
    monkeypatch.setattr("robult.data.user.rows._PREAD", None)  # neither (seek and readinto)
    np.testing.assert_array_equal(MappedArray(tmp_path / "s.npy", np.int64)[idx], data[idx])


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps (Linux)")
def test_no_page_of_the_file_is_mapped(tmp_path: Path) -> None:
    data = np.random.default_rng(2).standard_normal((4000, 64)).astype(np.float32)  # 1 MB
    path = tmp_path / "big.npy"
    np.save(path, data)
    reader = MappedArray(path, np.float32)
    for seed in range(5):
        idx = np.random.default_rng(seed).integers(0, 4000, 256)
        np.testing.assert_array_equal(reader[idx], data[idx])
    assert str(path) not in Path("/proc/self/maps").read_text()


def test_fortran_ordered_file_reads_correctly(tmp_path: Path) -> None:
    data = np.asfortranarray(np.random.default_rng(3).standard_normal((50, 4, 3)).astype(np.float32))
    np.save(tmp_path / "f.npy", data)  # np.save keeps Fortran order: rows are not contiguous in the file
    reader = MappedArray(tmp_path / "f.npy", np.float32)
    assert reader.fortran_order
    for r in (reader, pickle.loads(pickle.dumps(reader))):
        for idx in _index_sets(50, np.random.default_rng(4)):
            np.testing.assert_array_equal(r[idx], data[idx], err_msg=f"index {idx!r}")
    # Fortran order with one column is laid out like C order: read with positional reads
    np.save(tmp_path / "f1.npy", np.asfortranarray(data[:, :1, :1]))
    np.testing.assert_array_equal(MappedArray(tmp_path / "f1.npy", np.float32)[[3, 1]], data[[3, 1], :1, :1])


def test_out_of_range_rows_name_the_file(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.zeros((10, 2), dtype=np.float32))
    reader = MappedArray(tmp_path / "v.npy", np.float32)
    for idx in ([3, 10], [-11], 10):
        with pytest.raises(IndexError, match=r"v\.npy: row -?1[01] is out of range for 10 rows"):
            reader[idx]
    with pytest.raises(IndexError, match=r"v\.npy: a boolean index needs 10 entries"):
        reader[np.ones(9, dtype=bool)]


def test_truncated_file_is_an_error_naming_it(tmp_path: Path) -> None:
    data = np.arange(100 * 8, dtype=np.float32).reshape(100, 8)
    path = tmp_path / "cut.npy"
    np.save(path, data)
    full = path.read_bytes()
    # cut before it is opened: the header promises more data than the file holds
    path.write_bytes(full[:-40])
    with pytest.raises(ValueError, match=r"cut\.npy: cannot read as a \.npy array \(the file is empty or truncated: "):
        MappedArray(path, np.float32)
    # cut after it was opened: rows before the cut still read, a read past it is an error naming file and row
    path.write_bytes(full)
    reader = MappedArray(path, np.float32)
    np.testing.assert_array_equal(reader[[0, 98]], data[[0, 98]])
    with path.open("r+b") as fh:
        fh.truncate(len(full) - 40)  # rows are 32 bytes: all of row 99 and the last 8 bytes of row 98 go
    np.testing.assert_array_equal(reader[[0, 97]], data[[0, 97]])
    with pytest.raises(ValueError, match=r"cut\.npy: the file is truncated: row 98 needs bytes up to \d+, but the"):
        reader[[5, 98, 99]]
    with pytest.raises(ValueError, match=r"cut\.npy: the file is truncated: row 99"):
        reader[99]
    # an empty file and a file that is not .npy
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"cut\.npy: cannot read as a \.npy array \(the file is empty or truncated"):
        MappedArray(path, np.float32)
    path.write_bytes(b"not an array at all")
    with pytest.raises(ValueError, match=r"cut\.npy: cannot read as a \.npy array \(the magic string is not"):
        MappedArray(path, np.float32)
    np.savez(tmp_path / "z.npz", a=data)
    with pytest.raises(ValueError, match=r"z\.npz: expected a \.npy array, got a zip archive"):
        MappedArray(tmp_path / "z.npz", np.float32)


def test_reader_takes_npy_format_3_and_refuses_float_row_indices(tmp_path: Path) -> None:
    arr = np.arange(24, dtype=np.float32).reshape(6, 4)
    with open(tmp_path / "v3.npy", "wb") as fh:
        np.lib.format.write_array(fh, arr, version=(3, 0))  # a UTF-8 header
    reader = MappedArray(tmp_path / "v3.npy", np.float32)
    np.testing.assert_array_equal(reader[[5, 0, 2]], arr[[5, 0, 2]])
    with pytest.raises(IndexError, match=r"v3\.npy: rows must be integers or a boolean mask, got dtype float64"):
        reader[np.array([1.0, 2.0])]
    assert reader[[]].shape == (0, 4)
