"""The on-disk feature cache: ``.npy`` files written atomically, named by a hash of what produced them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robult.data.registry import cache_dir
from robult.utils.io import atomic_open

__all__ = ["CACHE_VERSION", "cached", "default_cache_dir", "digest", "files_fingerprint"]

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$ROBULT_CACHE_DIR`` or ``~/.cache/robult/features`` (:func:`robult.data.registry.cache_dir`)."""
    return cache_dir("features")


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode("utf-8")).hexdigest()


def files_fingerprint(paths: Sequence[Path], root: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        rel = p.relative_to(root) if p.is_relative_to(root) else p
        h.update(f"{rel.as_posix()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cached(path: Path, rows: int, compute: Callable[[], np.ndarray]) -> tuple[np.ndarray, bool]:
    """Load ``path`` if it holds ``rows`` rows, else compute, write atomically and return; second: cache hit."""
    if path.is_file():
        try:
            arr = np.load(path, allow_pickle=False)
            if arr.ndim == 2 and arr.shape[0] == rows:
                return arr, True
        except (OSError, ValueError, EOFError):
            pass  # a corrupt (or empty) cache file is recomputed
    arr = np.asarray(compute(), dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != rows:
        raise ValueError(f"encoder returned shape {arr.shape} for {rows} inputs, expected ({rows}, d)")
    if not np.isfinite(arr).all():
        raise ValueError(f"encoder returned NaN or Inf features (for the cache file {path.name})")
    with atomic_open(path, "wb") as fh:
        np.save(fh, arr)
    return arr, False
