"""``.npy`` files of the user format: the header parsed without reading the data, and small arrays read whole."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from robult.data.user.schema import YAML_NAME, MissingFileError

__all__ = ["NpyLayout", "describe_read_error", "load_small_array", "read_npy_layout"]


def describe_read_error(err: BaseException) -> str:
    """Why ``np.load`` failed, in words (numpy says only "No data left in file" for an empty file)."""
    if isinstance(err, EOFError):
        return f"the file is empty or truncated: {err}"
    return str(err)


class NpyLayout(NamedTuple):
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int


def read_npy_layout(path: Path) -> NpyLayout:
    """Shape, dtype, order and data offset from a ``.npy`` header; the file must hold all the data it describes."""
    try:
        fh = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise MissingFileError(f"{path}: file not found") from None
    except OSError as err:
        raise ValueError(f"{path}: cannot read as a .npy array ({err})") from None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(6)
        fh.seek(0)
        if size == 0:
            raise ValueError(f"{path}: cannot read as a .npy array (the file is empty or truncated: 0 bytes)")
        if head.startswith(b"PK"):
            raise ValueError(f"{path}: expected a .npy array, got a zip archive (an .npz archive?)")
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:  # 2.0, and 3.0: the same layout with a UTF-8 header, read alike for the numeric dtypes read here
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        except (ValueError, OSError, EOFError, SyntaxError) as err:
            raise ValueError(f"{path}: cannot read as a .npy array ({describe_read_error(err)})") from None
        offset = fh.tell()
    if dtype.hasobject:
        raise ValueError(f"{path}: cannot read as a .npy array (it holds Python objects, which are not read)")
    shape = tuple(int(s) for s in shape)
    nbytes = math.prod(shape) * dtype.itemsize
    if size < offset + nbytes:
        raise ValueError(
            f"{path}: cannot read as a .npy array (the file is empty or truncated: its header describes {shape} "
            f"{dtype}, {nbytes} bytes of data from byte {offset}, but the file holds {size - offset})"
        )
    return NpyLayout(shape, dtype, bool(fortran), offset)


def load_small_array(path: Path, key: str) -> np.ndarray:
    """A small array (labels, masks, lengths) read in full."""
    if not path.is_file():
        raise MissingFileError(f"{path}: file not found (named by {key!r} in {YAML_NAME})")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as err:  # EOFError: an empty file
        raise ValueError(f"{path} ({key}): cannot read as a .npy array ({describe_read_error(err)})") from None
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{path} ({key}): expected a .npy array, got {type(arr).__name__}")
    return arr
