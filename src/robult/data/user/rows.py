"""Row reads of a ``.npy`` array on disk (:class:`MappedArray`): only a batch's rows, read into its buffer."""

from __future__ import annotations

import math
import mmap
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from robult.data.user.npy import read_npy_layout
from robult.data.user.schema import MissingFileError

__all__ = ["MappedArray"]


class MappedArray:
    """Rows of a ``.npy`` array on disk, read on demand with positional reads.

    Indexing reads only the requested rows, casts them to ``dtype`` and applies an optional standardisation. The
    rows are read with ``os.preadv`` (``os.pread``, or seek and ``readinto`` where those are missing) straight into
    the batch's buffer: the requested rows are sorted and de-duplicated, and each run of adjacent rows is one read.
    No page of the file is mapped into the process, so the resident memory is the batches in flight and nothing
    else, whatever the file's size and whatever the kernel's fault-around or page-cache folio size (the kernel's
    page cache holds the file's pages, shared and reclaimable, outside every process's resident set). A memory map
    does not give that bound: on Linux 6.18 one random row read through a map mapped a 2 MB folio, so a batch of
    256 rows mapped ~300 MB before any release (``docs/performance.md``, "Memory"); positional reads cost the same
    per batch.

    A Fortran-ordered file (``fortran_order: True`` in its header, e.g. ``np.save(path, x.T)``) keeps each row's
    values apart from one another, so it is read through a memory map instead, released after every read; a batch
    then touches pages all over the file: save it C-ordered (``np.save(path, np.ascontiguousarray(x))``) for fast,
    bounded reads. The file's size is checked against its header when opened; a file cut short later is an error
    naming the file when a read reaches past its end. Pickles by path, so ``DataLoader`` workers re-open the file
    instead of copying it.

    Args:
        path: the ``.npy`` file.
        dtype: dtype of the rows handed out (``float32`` for float modalities, ``int64`` for tokens).
        mean, std: optional standardisation, broadcastable against one sample.

    Attributes:
        shape: the stored array's shape. stored_dtype: its dtype as stored. offset: the byte where its data starts.
        fortran_order: whether the file is Fortran-ordered (read through a memory map).
    """

    def __init__(
        self, path: str | Path, dtype: Any, mean: np.ndarray | None = None, std: np.ndarray | None = None
    ) -> None:
        self.path = Path(path)
        layout = read_npy_layout(self.path)
        self.shape: tuple[int, ...] = layout.shape
        self.stored_dtype: np.dtype = layout.dtype
        self.offset = layout.offset
        self.fortran_order = layout.fortran_order
        self.dtype = np.dtype(dtype)
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float32)
        self.std = None if std is None else np.asarray(std, dtype=np.float32)
        self._row_bytes = math.prod(self.shape[1:]) * self.stored_dtype.itemsize
        # rows are contiguous runs of bytes unless the file is Fortran-ordered with more than one row and column
        self._scattered = self.fortran_order and self.ndim >= 2 and self.shape[0] > 1 and math.prod(self.shape[1:]) > 1
        self._fh: Any = None  # opened on the first read, re-opened in a forked child
        self._pid = -1
        self._lock = threading.Lock()
        self._memmap: np.ndarray | None = None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def raw_rows(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` as stored (no cast, no standardisation), in the order given (repeats and negative indices
        allowed)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        n = self.shape[0] if self.shape else 0
        if len(rows) and (rows.min() < -n or rows.max() >= n):
            bad = int(rows.min()) if rows.min() < -n else int(rows.max())
            raise IndexError(f"{self.path}: row {bad} is out of range for {n} rows")
        rows = np.where(rows < 0, rows + n, rows)
        if self._scattered:
            return self._mapped_rows(rows)
        if len(rows) and bool((rows[1:] > rows[:-1]).all()):  # sorted and distinct: read in place
            unique, inverse = rows, None
        else:
            unique, inverse = np.unique(rows, return_inverse=True)
        out = np.empty((len(unique), *self.shape[1:]), dtype=self.stored_dtype)
        if len(unique) and self._row_bytes:
            raw = memoryview(out.reshape(-1).view(np.uint8))
            cuts = np.flatnonzero(np.diff(unique) != 1) + 1  # runs of adjacent rows: one read each
            starts = np.concatenate(([0], cuts)).tolist()
            stops = np.concatenate((cuts, [len(unique)])).tolist()
            first = unique[starts].tolist()
            rb = self._row_bytes
            fh = self._file()
            for a, b, row in zip(starts, stops, first, strict=True):
                self._read_exact(fh, raw[a * rb : b * rb], self.offset + row * rb, row)
        return out if inverse is None else out[inverse.reshape(-1)]

    def _file(self) -> Any:
        """The open file (opened on first use; re-opened after a fork so no offset is shared with the parent)."""
        fh = self._fh
        if fh is None or self._pid != os.getpid():
            try:
                fh = open(self.path, "rb", buffering=0)  # noqa: SIM115 (kept open across reads)
            except FileNotFoundError:
                raise MissingFileError(
                    f"{self.path}: file not found (it was there when the dataset was opened)"
                ) from None
            self._fh, self._pid, self._lock = fh, os.getpid(), threading.Lock()
        return fh

    def _read_exact(self, fh: Any, buf: memoryview, pos: int, row: int) -> None:
        """Fill ``buf`` from byte ``pos`` of the file; a short read is an error naming the file."""
        done = 0
        while done < len(buf):
            part = buf[done:]
            if _PREADV is not None:
                got = _PREADV(fh.fileno(), [part], pos + done)
            elif _PREAD is not None:
                data = _PREAD(fh.fileno(), len(part), pos + done)
                got = len(data)
                part[:got] = data
            else:  # no positional reads on this platform: seek and read under a lock
                with self._lock:
                    fh.seek(pos + done)
                    got = fh.readinto(part) or 0
            if got == 0:
                size = os.fstat(fh.fileno()).st_size
                raise ValueError(
                    f"{self.path}: the file is truncated: row {row + done // max(1, self._row_bytes)} needs bytes up "
                    f"to {pos + len(buf)}, but the file ends at byte {size} (header: {self.shape} "
                    f"{self.stored_dtype}, data from byte {self.offset})"
                )
            done += got

    def _mapped_rows(self, rows: np.ndarray) -> np.ndarray:
        """Rows of a Fortran-ordered file through a memory map, released right after the read."""
        if self._memmap is None:  # the header was read when the array was opened: map its data directly
            self._memmap = np.memmap(
                self.path, dtype=self.stored_dtype, mode="r", offset=self.offset, shape=self.shape, order="F"
            )
        order = np.argsort(rows, kind="stable")
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.stored_dtype)
        out[order] = self._memmap[rows[order]]
        self.release()
        return out

    def release(self) -> None:
        """Drop mapped pages from this process's resident set (only a Fortran-ordered file is mapped; no-op where
        unsupported)."""
        mm = getattr(self._memmap, "_mmap", None)
        advice = getattr(mmap, "MADV_DONTNEED", None)
        if mm is not None and advice is not None:
            mm.madvise(advice)

    def __getitem__(self, idx: Any) -> np.ndarray:
        n = self.shape[0]
        if isinstance(idx, (int, np.integer)):
            return self[np.array([idx])][0]
        if isinstance(idx, slice):
            rows = np.arange(*idx.indices(n))
        else:
            rows = np.asarray(idx)
            if rows.dtype == bool:
                if rows.shape != (n,):
                    raise IndexError(f"{self.path}: a boolean index needs {n} entries, got shape {rows.shape}")
                rows = np.flatnonzero(rows)
            elif rows.dtype.kind not in "iu" and rows.size:
                raise IndexError(f"{self.path}: rows must be integers or a boolean mask, got dtype {rows.dtype}")
        x = self.raw_rows(rows).reshape(*rows.shape, *self.shape[1:]).astype(self.dtype, copy=False)
        if self.mean is not None and self.std is not None:
            x = ((x - self.mean) / self.std).astype(self.dtype, copy=False)
        return x

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self[np.arange(self.shape[0])]
        return arr if dtype is None else arr.astype(dtype)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "dtype": self.dtype.str, "mean": self.mean, "std": self.std}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["dtype"], state["mean"], state["std"])  # type: ignore[misc]

    def __del__(self) -> None:
        fh = getattr(self, "_fh", None)
        if fh is not None:
            fh.close()


_PREADV = getattr(os, "preadv", None)
_PREAD = getattr(os, "pread", None)
