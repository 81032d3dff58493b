"""Train statistics of the user format's float modalities, computed by chunks (``standardize: true``)."""

from __future__ import annotations

import math

import numpy as np

from robult.data.user.rows import MappedArray
from robult.specs import ModalityKind, ModalitySpec

__all__ = ["check_finite_rows", "chunked_stats", "standardize_readers"]

_CHUNK_BYTES = 64 << 20


def check_finite_rows(reader: MappedArray, x: np.ndarray, rows: np.ndarray, lengths: np.ndarray | None) -> None:
    """A NaN or Inf among the (valid) values of present training rows would make every standardised value NaN, so
    that a later check names the wrong row: name the file's row now."""
    bad = ~np.isfinite(x)
    if lengths is not None:  # sequence padding beyond a sample's length is never read
        bad &= (np.arange(x.shape[1])[None, :] < lengths[rows][:, None]).reshape(*x.shape[:2], *([1] * (x.ndim - 2)))
    bad_rows = bad.reshape(len(rows), -1).any(axis=1)
    if bad_rows.any():
        row = int(rows[int(np.flatnonzero(bad_rows)[0])])
        raise ValueError(
            f"{reader.path}: row {row} holds NaN or Inf but is marked present (a training row, read to standardise); "
            "mark it absent in present.npy or clean the input"
        )


def chunked_stats(
    reader: MappedArray, kind: ModalityKind, rows: np.ndarray, lengths: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std per feature (vector, sequence: last axis; image: channel) over ``rows``, read by chunks."""
    row_bytes = max(1, math.prod(reader.shape[1:]) * reader.stored_dtype.itemsize)
    chunk = max(1, _CHUNK_BYTES // row_bytes)
    width = reader.shape[1] if kind == ModalityKind.IMAGE else reader.shape[-1]
    total = np.zeros(width)
    total_sq = np.zeros(width)
    count = 0.0
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        x = reader.raw_rows(part).astype(np.float64)
        if kind == ModalityKind.VECTOR:
            flat = x
        elif kind == ModalityKind.SEQUENCE:
            assert lengths is not None
            valid = np.arange(x.shape[1])[None, :] < lengths[part][:, None]
            flat = x[valid]
        else:  # image: per channel
            flat = np.moveaxis(x, 1, -1).reshape(-1, width)
        check_finite_rows(reader, x, part, lengths if kind == ModalityKind.SEQUENCE else None)
        total += flat.sum(axis=0)
        total_sq += np.square(flat).sum(axis=0)
        count += flat.shape[0]
    if count == 0:
        raise ValueError(f"{reader.path}: cannot standardise, no training sample has this modality")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    std[std < 1e-8] = 1.0
    if kind == ModalityKind.IMAGE:
        return mean[:, None, None], std[:, None, None]
    return mean, std


def standardize_readers(
    specs: list[ModalitySpec],
    readers: dict[str, MappedArray],
    lengths: dict[str, np.ndarray],
    present: np.ndarray,
    train: np.ndarray,
) -> list[str]:
    """Fit a z-score per float modality on the present training rows (by chunks) and swap in readers applying it;
    returns the standardised modality names."""
    standardized: list[str] = []
    for j, spec in enumerate(specs):
        if spec.kind == ModalityKind.TOKENS:
            continue
        rows = train[present[train, j]]
        mean, std = chunked_stats(readers[spec.name], spec.kind, rows, lengths.get(spec.name))
        readers[spec.name] = MappedArray(readers[spec.name].path, np.float32, mean, std)
        standardized.append(spec.name)
    return standardized
