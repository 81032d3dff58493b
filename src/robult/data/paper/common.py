"""Helpers shared by the paper-format loaders: finding and checking a dataset's file, cleaning non-finite features."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robult.data.registry import LoadOptions, resolve_data_dir
from robult.utils.io import verify_sha256

__all__ = ["CHUNK", "check_file", "clean_nonfinite", "find_file"]

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


def check_file(path: Path, sha256: str | None) -> None:
    """Raise ``FileNotFoundError`` naming ``path`` if it is not a file; verify its SHA-256 when ``sha256`` is given."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if sha256:
        verify_sha256(path, sha256)
