"""Helpers shared by the paper-format loaders: finding a dataset's file and cleaning non-finite features."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robult.data.registry import LoadOptions, resolve_data_dir

__all__ = ["CHUNK", "clean_nonfinite", "find_file"]

CHUNK = 2048  # samples per chunk when scanning arrays (bounds the temporary boolean arrays)


def clean_nonfinite(x: np.ndarray) -> int:
    """Replace NaN / ±Inf with 0 in place; return how many were replaced."""
    bad = 0
    for lo in range(0, x.shape[0], CHUNK):
        part = x[lo : lo + CHUNK]
        mask = ~np.isfinite(part)
        n = int(mask.sum())
        if n:
            part[mask] = 0.0
            bad += n
    return bad


def find_file(opts: LoadOptions, folder: str, candidates: tuple[str, ...]) -> Path:
    if opts.extra.get("path"):
        return Path(opts.extra["path"])
    root = resolve_data_dir(opts.data_dir) / folder
    if opts.extra.get("file"):
        return root / str(opts.extra["file"])
    for c in candidates:
        if (root / c).is_file():
            return root / c
    raise FileNotFoundError(
        f"no {folder} data under {root}: expected one of {list(candidates)} (see docs/paper_datasets.md), "
        "or pass path=FILE"
    )
