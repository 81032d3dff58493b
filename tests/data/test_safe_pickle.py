"""The restricted unpickler: numpy data loads, anything else is refused with the file and type named."""

from __future__ import annotations

import collections
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from robult.data.safe_pickle import UnsafePickleError, safe_load, safe_loads


class Custom:
    def __init__(self) -> None:
        self.x = 1


class _RunsCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _mmsa_like() -> dict:
    rng = np.random.default_rng(0)
    return {
        "train": {
            "text": rng.standard_normal((3, 4, 8)).astype(np.float32),
            "audio": rng.standard_normal((3, 5, 2)),
            "regression_labels": np.array([-1.5, 0.0, 2.6], dtype=np.float32),
            "classification_labels": np.array([0, 1, 2], dtype=np.int64),
            "raw_text": np.array(["a sentence", "ünïcode text", ""], dtype=object),
            "id": np.array(["vid_1$_$0", "vid_1$_$1", "vid_2$_$0"], dtype=object),
            "audio_lengths": [5, 3, 1],
            "names": np.array(["ab", "c"]),
            "flag": np.bool_(True),
            "scalar": np.float32(0.5),
            "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        },
        "meta": collections.OrderedDict(version=1, tags={"x", "y"}, pair=(1, 2.0), blob=b"\x00\x01"),
    }


def _assert_same(a, b) -> None:
    if isinstance(a, dict):
        assert type(a) is type(b) and list(a) == list(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert (a == b).all()
    else:
        assert a == b


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_dicts_load(tmp_path: Path, protocol: int) -> None:
    data = _mmsa_like()
    path = tmp_path / "data.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    _assert_same(data, safe_load(path))
    with open(path, "rb") as fh:
        _assert_same(data, safe_load(fh))
    loaded = safe_load(str(path))
    assert loaded["train"]["raw_text"][1] == "ünïcode text"


def test_numpy1_module_names_load() -> None:
    """numpy 1.x pickles name numpy.core.multiarray, numpy 2 ones numpy._core.multiarray: both load."""
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    blob = pickle.dumps({"x": arr, "s": np.int64(7)}, protocol=2)
    assert b"numpy._core.multiarray" in blob or b"numpy.core.multiarray" in blob
    old = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    out = safe_loads(old)
    assert np.array_equal(out["x"], arr) and out["s"] == 7


def test_code_execution_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"train": _RunsCommand(marker)}))
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl.*(posix|nt)\.system"):
        safe_load(path)
    assert not marker.exists()


def test_custom_class_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "custom.pkl"
    path.write_bytes(pickle.dumps({"x": Custom()}))
    with pytest.raises(UnsafePickleError, match=r"custom\.pkl: refusing to unpickle .*test_safe_pickle\.Custom"):
        safe_load(path)


def test_torch_tensor_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tensor.pkl"
    path.write_bytes(pickle.dumps({"text": torch.zeros(2, 3)}))
    with pytest.raises(UnsafePickleError, match=r"tensor\.pkl: refusing to unpickle torch\."):
        safe_load(path)


def test_unsafe_error_is_a_value_error() -> None:
    assert issubclass(UnsafePickleError, ValueError)
    with pytest.raises(ValueError, match="<bytes>"):
        safe_loads(pickle.dumps(Custom()))


def test_stream_name_in_message() -> None:
    buf = io.BytesIO(pickle.dumps(print))
    with pytest.raises(UnsafePickleError, match=r"<stream>.*builtins\.print"):
        safe_load(buf)


def test_truncated_pickle(tmp_path: Path) -> None:
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps(_mmsa_like())[:50])
    with pytest.raises(ValueError, match=r"cut\.pkl: not a readable pickle"):
        safe_load(path)
