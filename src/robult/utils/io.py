"""Atomic file writes and checksums: result files and checkpoints are never left half-written."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success it is fsynced and renamed onto ``path``, on error it is
    removed and ``path`` is untouched (an ``OSError`` naming no file, e.g. a full disk, is raised naming ``path``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:  # e.g. a read-only directory: the error names the temporary file, say which file
        raise _naming(err, path) from err
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno is not None and err.filename in (None, tmp):
            # ENOSPC from write() or fsync() names no file, a failed rename (a directory at ``path``) names the
            # temporary file: name the file being written
            raise _naming(err, path) from err
        raise


def _naming(err: OSError, path: Path) -> OSError:
    """``err`` as an ``OSError`` of the same kind naming ``path`` alone (the file the caller asked to write)."""
    errno = err.errno if err.errno is not None else 0
    return OSError(errno, err.strerror or os.strerror(errno), str(path))


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, Inf: an undefined metric) replaced by ``None``, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as strict JSON (NaN / Inf become ``null``: ``NaN`` is not JSON) atomically."""
    text = json.dumps(json_safe(obj), indent=2, sort_keys=False, allow_nan=False)
    with atomic_open(path, "w") as fh:
        fh.write(text + "\n")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class ChecksumError(ValueError):
    """A data file whose SHA-256 differs from the expected one."""


def verify_sha256(path: str | Path, expected: str) -> None:
    """Raise :class:`ChecksumError` naming ``path`` when its SHA-256 is not ``expected``."""
    actual = sha256_file(path)
    if actual != expected.lower():
        size = Path(path).stat().st_size
        raise ChecksumError(
            f"{path}: SHA-256 {actual} ({size} bytes) differs from the expected {expected}; the file is corrupted, "
            "truncated or a different version — replace it"
        )


def fetch_file(url: str, dest: str | Path, sha256: str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically and verify its SHA-256 (for users with a network)."""
    dest = Path(dest)
    with urllib.request.urlopen(url, timeout=timeout) as resp, atomic_open(dest, "wb") as fh:
        while block := resp.read(1 << 20):
            fh.write(block)
    try:
        verify_sha256(dest, sha256)
    except ChecksumError:
        dest.unlink(missing_ok=True)
        raise
    return dest
