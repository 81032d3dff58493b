"""The user's own data: a directory with ``dataset.yaml`` and one ``.npy`` file per array.

Format (paths are relative to the YAML file's directory)::

    name: my_data
    description: optional free text
    task: {kind: multiclass, num_classes: 5}   # binary | multilabel (num_classes = labels) | regression
                                               # (optional target_range: [-3, 3]); optional label_names: [...]
    primary_metric: accuracy                   # optional; default per task kind (registry.DEFAULT_METRICS)
    modalities:
      - {name: audio, kind: vector, file: audio.npy}                       # [N, d]
      - {name: text, kind: sequence, file: text.npy, lengths: text_len.npy} # [N, T, d] + lengths [N]
      - {name: image, kind: image, file: image.npy}                       # [N, C, H, W]
      - {name: ids, kind: tokens, file: ids.npy, lengths: ids_len.npy}    # [N, T] integers + lengths [N]
    labels: labels.npy      # [N] (multiclass ids 0..C-1, binary 0/1, regression) or [N, L] 0/1 (multilabel)
    split: split.npy        # optional: integer [N], 0 = train, 1 = val, 2 = test
    present: present.npy    # optional: bool [N, M] presence mask, columns in modality order
    labeled: labeled.npy    # optional: bool [N], which labels training may use (others may hold anything)
    standardize: false      # optional: z-score float modalities with train statistics computed by chunks

Modality arrays are never loaded whole: their headers are read when the dataset is opened, and a batch reads only
its rows, with positional reads into the batch's buffer (see :class:`MappedArray`), so the resident memory stays at
the size of the batches in flight however large the files are. Labels, split, presence, labeled and lengths files
are small and read in full.
"""

from __future__ import annotations

import math
import mmap
import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from robult.data.dataset import MultimodalDataset, RowView
from robult.data.registry import DEFAULT_METRICS, DatasetBundle, LoadOptions, register_dataset
from robult.data.splits import SplitIndices, strata, train_val_test_split
from robult.specs import ModalityKind, ModalitySpec, TaskKind, TaskSpec
from robult.utils.io import atomic_open, atomic_write_text
from robult.utils.paths import path_component_problem

__all__ = [
    "YAML_NAME",
    "MappedArray",
    "MissingFileError",
    "ModalityConfig",
    "TaskConfig",
    "UserDatasetConfig",
    "load_user_dataset",
    "read_config",
    "write_bundle",
    "write_user_dataset",
]

YAML_NAME = "dataset.yaml"
_CHUNK_BYTES = 64 << 20
_SPLIT_NAMES = {0: "train", 1: "val", 2: "test"}


class MissingFileError(FileNotFoundError, ValueError):
    """A file named by ``dataset.yaml`` does not exist (both a ``FileNotFoundError`` and a ``ValueError``)."""


# ------------------------------------------------------------------------------------------------------ the schema


class TaskConfig(BaseModel):
    """``task:`` of ``dataset.yaml``."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["multiclass", "binary", "multilabel", "regression"]
    num_classes: int | None = Field(default=None, description="classes (multiclass) or labels (multilabel)")
    target_range: tuple[float, float] | None = None
    label_names: list[str] | None = None

    @model_validator(mode="after")
    def _check(self) -> TaskConfig:
        if self.kind in ("multiclass", "multilabel") and (self.num_classes is None or self.num_classes < 2):
            raise ValueError(f"num_classes (>= 2) is required for a {self.kind} task, got {self.num_classes}")
        if self.target_range is not None and self.kind != "regression":
            raise ValueError("target_range applies to regression tasks only")
        if self.target_range is not None and self.target_range[0] > self.target_range[1]:
            raise ValueError(f"target_range {list(self.target_range)} is empty")
        return self

    def to_spec(self) -> TaskSpec:
        return TaskSpec(
            self.kind,
            num_classes=self.num_classes or 0,
            target_range=self.target_range,
            label_names=tuple(self.label_names or ()),
        )


class ModalityConfig(BaseModel):
    """One entry of ``modalities:``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    kind: Literal["vector", "sequence", "image", "tokens"]
    file: str
    lengths: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ModalityConfig:
        sequential = self.kind in ("sequence", "tokens")
        if "+" in self.name:
            raise ValueError(f"modality name {self.name!r} must not contain '+'")
        if sequential and self.lengths is None:
            raise ValueError(f"modality {self.name!r}: a {self.kind} modality needs a lengths file")
        if not sequential and self.lengths is not None:
            raise ValueError(f"modality {self.name!r}: lengths apply to sequence and tokens modalities only")
        return self


class UserDatasetConfig(BaseModel):
    """The whole ``dataset.yaml``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""
    task: TaskConfig
    primary_metric: str | None = None
    modalities: list[ModalityConfig] = Field(min_length=1)
    labels: str
    split: str | None = None
    present: str | None = None
    labeled: str | None = None
    standardize: bool = False

    @field_validator("name")
    @classmethod
    def _one_path_component(cls, v: str) -> str:
        # the name is a directory of the mask store (and may name runs): one plain path component
        problem = path_component_problem(v)
        if problem is not None:
            raise ValueError(f"{v!r}: the dataset's name is used as a directory name, but {problem}")
        return v

    @model_validator(mode="after")
    def _check(self) -> UserDatasetConfig:
        names = [m.name for m in self.modalities]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"modality name {dup[0]!r} appears more than once")
        return self

    @property
    def metric(self) -> str:
        return self.primary_metric or DEFAULT_METRICS[TaskKind(self.task.kind)]


def _format_validation(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<top level>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (not part of the dataset.yaml format)"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def read_config(path: str | Path) -> tuple[UserDatasetConfig, Path]:
    """Read and validate ``dataset.yaml``.

    Args:
        path: the dataset directory or the YAML file itself.

    Returns:
        The validated config and the YAML file's path.

    Raises:
        MissingFileError: no such file.
        ValueError: malformed YAML or keys / values outside the format (the message names the key).
    """
    path = Path(path).expanduser()
    yaml_path = path / YAML_NAME if path.is_dir() else path
    if not yaml_path.is_file():
        raise MissingFileError(f"{yaml_path}: dataset description not found (expected {YAML_NAME} in {path})")
    try:
        raw = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{yaml_path}: not valid YAML ({err})") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{yaml_path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        config = UserDatasetConfig.model_validate(raw)
    except ValidationError as err:
        raise ValueError(f"{yaml_path}: {_format_validation(err)}") from None
    return config, yaml_path


# ------------------------------------------------------------------------------------------------- lazy row reads


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
        layout = _npy_layout(self.path)
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


def _describe_read_error(err: BaseException) -> str:
    """Why ``np.load`` failed, in words (numpy says only "No data left in file" for an empty file)."""
    if isinstance(err, EOFError):
        return f"the file is empty or truncated: {err}"
    return str(err)


class _NpyLayout(NamedTuple):
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int


def _npy_layout(path: Path) -> _NpyLayout:
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
            raise ValueError(f"{path}: cannot read as a .npy array ({_describe_read_error(err)})") from None
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
    return _NpyLayout(shape, dtype, bool(fortran), offset)


def _load_small(path: Path, key: str) -> np.ndarray:
    """A small array (labels, masks, lengths) read in full."""
    if not path.is_file():
        raise MissingFileError(f"{path}: file not found (named by {key!r} in {YAML_NAME})")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as err:  # EOFError: an empty file
        raise ValueError(f"{path} ({key}): cannot read as a .npy array ({_describe_read_error(err)})") from None
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{path} ({key}): expected a .npy array, got {type(arr).__name__}")
    return arr


# ------------------------------------------------------------------------------------------------------- loading


def _resolve(base: Path, name: str) -> Path:
    p = Path(name).expanduser()
    return p if p.is_absolute() else base / p


def _check_finite_rows(reader: MappedArray, x: np.ndarray, rows: np.ndarray, lengths: np.ndarray | None) -> None:
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


def _chunked_stats(
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
        _check_finite_rows(reader, x, part, lengths if kind == ModalityKind.SEQUENCE else None)
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


def _target_array(labels: np.ndarray, task: TaskSpec) -> np.ndarray:
    if task.kind == TaskKind.MULTICLASS:
        if labels.dtype.kind == "f":
            finite = np.isfinite(labels)
            out = np.full(labels.shape, -1, dtype=np.int64)
            out[finite] = np.round(labels[finite]).astype(np.int64)
            return out
        return labels.astype(np.int64)
    return labels.astype(np.float32)


def load_user_dataset(path: str | Path, seed: int = 0, val_fraction: float = 0.1) -> DatasetBundle:
    """Load a dataset in the user format (see the module docstring).

    Steps: read and validate ``dataset.yaml`` (:func:`read_config`), the labels and labeled mask
    (:func:`read_labels`), open the modality arrays for row reads (:func:`_open_modalities`), read the presence
    mask (:func:`_read_presence`), split the rows (:func:`_split_rows`), fit the optional standardisation on train
    (:func:`_standardize`), and cut the bundle's splits out of one lazily read dataset.

    Args:
        path: the dataset directory (holding ``dataset.yaml``) or the YAML file.
        seed: seed of the default split and of the validation carve-out.
        val_fraction: share of the training split held out for validation when the split file has no val rows
            (or there is no split file).

    Returns:
        The bundle; modality arrays stay on disk and are read by rows.

    Raises:
        MissingFileError: a named file does not exist.
        ValueError: anything malformed; the message names the file, key or modality at fault.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    config, yaml_path = read_config(path)
    base = yaml_path.parent
    try:
        task = config.task.to_spec()
    except ValueError as err:
        raise ValueError(f"{yaml_path}: task: {err}") from None

    labels_path, target, labeled = read_labels(config, base, task)
    n = len(target)
    specs, readers, lengths = _open_modalities(config, base, n, labels_path.name)
    present = _read_presence(config, base, n, specs, lengths)
    groups = np.full(n, -2, dtype=np.int64)  # unlabeled rows: a stratum of their own
    if labeled.any():
        groups[labeled] = strata(target[labeled], task)
    split = _split_rows(config, base, groups, seed, val_fraction)
    standardized = _standardize(specs, readers, lengths, present, split.train) if config.standardize else []

    names = [s.name for s in specs]
    full = MultimodalDataset(
        specs,
        task,
        {name: RowView(readers[name], np.arange(n)) for name in names},
        torch.from_numpy(target),
        present=torch.from_numpy(present),
        lengths={k: torch.from_numpy(v) for k, v in lengths.items()},
        labeled=torch.from_numpy(labeled),
        validate=False,  # checked above with file names; validating again would not read any data either
        source_rows=torch.arange(n),  # errors in a split name the files' row
        sources={name: str(readers[name].path) for name in names},
    )
    notes = {
        "split": split.rule,
        "sizes": split.sizes,
        "standardisation": (
            f"per-feature z-score of {standardized} with train statistics (computed by chunks), applied per batch"
            if standardized
            else "none"
        ),
        "description": config.description,
        "read_by_rows": True,  # never loaded whole: each batch reads its rows from the files
    }
    return DatasetBundle(
        config.name,
        specs,
        task,
        config.metric,
        full.subset(split.train),
        full.subset(split.val),
        full.subset(split.test),
        source=str(yaml_path),
        notes=notes,
        normalization={name: (readers[name].mean, readers[name].std) for name in standardized},
    )


def read_labels(config: UserDatasetConfig, base: Path, task: TaskSpec) -> tuple[Path, np.ndarray, np.ndarray]:
    """The labels file's path, the targets (checked against the task where labeled) and the labeled mask."""
    labels_path = _resolve(base, config.labels)
    labels = _load_small(labels_path, "labels")
    n = int(labels.shape[0]) if labels.ndim else 0
    if labels.ndim == 0 or n == 0:
        raise ValueError(f"{labels_path} (labels): expected one label per sample, got shape {labels.shape}")
    if labels.dtype.kind not in "biuf":
        raise ValueError(f"{labels_path} (labels): dtype {labels.dtype} is not numeric")

    labeled = np.ones(n, dtype=bool)
    if config.labeled is not None:
        labeled_path = _resolve(base, config.labeled)
        lab = _load_small(labeled_path, "labeled")
        if lab.shape != (n,):
            raise ValueError(f"{labeled_path} (labeled): shape {lab.shape}, expected ({n},) (one flag per sample)")
        labeled = lab.astype(bool)

    # before any cast: a NaN label of a labeled row is an error (not "-1 = unlabeled"), 1.5 is not rounded to 2
    task.check_label_rows(torch.from_numpy(labels), torch.from_numpy(labeled), where=f"{labels_path} (labels): ")
    target = _target_array(labels, task)
    if labeled.any():
        task.check_target(
            torch.from_numpy(target[labeled]),
            where=f"{labels_path} (labels): ",
            rows=torch.from_numpy(np.flatnonzero(labeled)),
        )
    return labels_path, target, labeled


def _open_modalities(
    config: UserDatasetConfig, base: Path, n: int, labels_name: str
) -> tuple[list[ModalitySpec], dict[str, MappedArray], dict[str, np.ndarray]]:
    """Open every modality array for row reads and check it against the labels' row count; read the lengths."""
    specs: list[ModalitySpec] = []
    readers: dict[str, MappedArray] = {}
    lengths: dict[str, np.ndarray] = {}
    for mc in config.modalities:
        file = _resolve(base, mc.file)
        if not file.is_file():
            raise MissingFileError(f"{file}: file not found (modality {mc.name!r} in {YAML_NAME})")
        kind = ModalityKind(mc.kind)
        where = f"modality {mc.name!r} ({file})"
        if kind == ModalityKind.TOKENS:
            reader = MappedArray(file, np.int64)
            if reader.stored_dtype.kind not in "iub":
                raise ValueError(f"{where}: tokens need an integer array, got dtype {reader.stored_dtype}")
        else:
            reader = MappedArray(file, np.float32)
            if reader.stored_dtype.kind not in "biuf":
                raise ValueError(f"{where}: dtype {reader.stored_dtype} is not numeric")
        if reader.ndim == 0 or reader.shape[0] != n:
            rows = reader.shape[0] if reader.ndim else 0
            raise ValueError(f"{where} has {rows} rows, but {labels_name} has {n} (one row per sample)")
        try:
            spec = ModalitySpec(mc.name, kind, reader.shape[1:])
        except ValueError as err:
            raise ValueError(f"{where}: array of shape {reader.shape}: {err}") from None
        if mc.lengths is not None:
            len_path = _resolve(base, mc.lengths)
            ln = _load_small(len_path, f"modalities.{mc.name}.lengths")
            if ln.shape != (n,) or ln.dtype.kind not in "iu":
                raise ValueError(
                    f"{len_path} (lengths of modality {mc.name!r}): expected integers of shape ({n},), "
                    f"got {ln.dtype} {ln.shape}"
                )
            lengths[mc.name] = ln.astype(np.int64)
        specs.append(spec)
        readers[mc.name] = reader
    return specs, readers, lengths


def _read_presence(
    config: UserDatasetConfig, base: Path, n: int, specs: list[ModalitySpec], lengths: dict[str, np.ndarray]
) -> np.ndarray:
    """The presence mask (all present without a file); every sample needs a modality, and every present sequence a
    length in ``[1, T]``."""
    names = [s.name for s in specs]
    present = np.ones((n, len(names)), dtype=bool)
    if config.present is not None:
        present_path = _resolve(base, config.present)
        pm = _load_small(present_path, "present")
        if pm.shape != (n, len(names)):
            raise ValueError(
                f"{present_path} (present): shape {pm.shape}, expected ({n}, {len(names)}) = (samples, modalities "
                f"in the order {names})"
            )
        if pm.dtype != bool and not np.isin(pm, (0, 1)).all():
            raise ValueError(f"{present_path} (present): values must be boolean or 0/1")
        present = pm.astype(bool)
        empty = np.flatnonzero(~present.any(axis=1))
        if len(empty):
            raise ValueError(
                f"{present_path} (present): sample {int(empty[0])} has no modality present "
                f"({len(empty)} such samples); every sample needs at least one"
            )
    for j, name in enumerate(names):
        if name in lengths:
            t_max = specs[j].shape[0]
            ln = lengths[name][present[:, j]]
            if len(ln) and (ln.min() < 1 or ln.max() > t_max):
                bad = int(ln.min()) if ln.min() < 1 else int(ln.max())
                raise ValueError(
                    f"lengths of modality {name!r} ({config.modalities[j].lengths}): length {bad} outside "
                    f"[1, {t_max}] for a present sample"
                )
    return present


def _split_rows(
    config: UserDatasetConfig, base: Path, groups: np.ndarray, seed: int, val_fraction: float
) -> SplitIndices:
    """The split file's rows (validation carved out of train when it has no val rows), else the default rule
    (:func:`robult.data.splits.train_val_test_split`)."""
    n = len(groups)
    if config.split is None:
        return train_val_test_split(groups, seed, val_fraction)
    split_path = _resolve(base, config.split)
    split = _load_small(split_path, "split")
    if split.shape != (n,):
        raise ValueError(f"{split_path} (split): shape {split.shape}, expected ({n},)")
    if split.dtype.kind not in "iu" or not np.isin(split, (0, 1, 2)).all():
        raise ValueError(f"{split_path} (split): values must be integers 0 (train), 1 (val) or 2 (test)")
    for code in (0, 2):
        if not (split == code).any():
            raise ValueError(f"{split_path} (split): no sample in the {_SPLIT_NAMES[code]} split ({code})")
    train_idx, val_idx, test_idx = (np.flatnonzero(split == c) for c in (0, 1, 2))
    if len(val_idx) == 0:
        carved = train_val_test_split(groups, seed, val_fraction, fixed_test=test_idx)
        return SplitIndices(
            carved.train, carved.val, test_idx, f"split file {config.split} (no val rows: {carved.rule})"
        )
    return SplitIndices(train_idx, val_idx, test_idx, f"split file {config.split}")


def _standardize(
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
        mean, std = _chunked_stats(readers[spec.name], spec.kind, rows, lengths.get(spec.name))
        readers[spec.name] = MappedArray(readers[spec.name].path, np.float32, mean, std)
        standardized.append(spec.name)
    return standardized


@register_dataset("user", "your own data: a directory with dataset.yaml and .npy arrays (path=DIR)", group="user")
def load_user(opts: LoadOptions) -> DatasetBundle:
    """Registry loader: reads ``opts.extra["path"]`` (the dataset directory or its YAML file)."""
    path = opts.extra.get("path")
    if not path:
        raise ValueError("the 'user' dataset needs the extra option path=DIR (a directory with dataset.yaml)")
    return load_user_dataset(path, seed=opts.seed, val_fraction=opts.val_fraction)


# ------------------------------------------------------------------------------------------------------- writing


def _safe_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "modality"


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_open(path, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)


def _infer_kind(name: str, arr: np.ndarray, has_lengths: bool) -> str:
    if has_lengths:
        return {2: "tokens", 3: "sequence"}.get(arr.ndim, "")
    return {2: "vector", 4: "image"}.get(arr.ndim, "")


def write_user_dataset(
    directory: str | Path,
    modalities: Mapping[str, np.ndarray],
    labels: np.ndarray,
    task: TaskSpec | Mapping[str, Any],
    *,
    name: str = "user_data",
    kinds: Mapping[str, str] | None = None,
    lengths: Mapping[str, np.ndarray] | None = None,
    split: np.ndarray | None = None,
    present: np.ndarray | None = None,
    labeled: np.ndarray | None = None,
    primary_metric: str | None = None,
    standardize: bool = False,
    description: str = "",
) -> Path:
    """Write arrays in the user format (one ``.npy`` per array plus ``dataset.yaml``).

    Args:
        directory: target directory (created if needed).
        modalities: modality name -> array ``[N, ...]`` (in the dataset's modality order).
        labels: ``[N]`` or ``[N, L]`` targets.
        task: a :class:`TaskSpec` or the ``task:`` mapping of the YAML.
        name: dataset name.
        kinds: modality name -> kind; by default inferred (2-D vector, 4-D image; with lengths 2-D tokens,
            3-D sequence).
        lengths: modality name -> ``[N]`` lengths for sequence / tokens modalities.
        split: optional ``[N]`` integers (0 train, 1 val, 2 test).
        present: optional ``bool[N, M]`` presence mask.
        labeled: optional ``bool[N]`` labeled mask.
        primary_metric: optional metric name.
        standardize: write ``standardize: true``.
        description: free text.

    Returns:
        The path of the written ``dataset.yaml``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lengths = dict(lengths or {})
    kinds = dict(kinds or {})
    if isinstance(task, TaskSpec):
        task_cfg: dict[str, Any] = {"kind": task.kind.value}
        if task.kind in (TaskKind.MULTICLASS, TaskKind.MULTILABEL):
            task_cfg["num_classes"] = task.num_classes
        if task.target_range is not None:
            task_cfg["target_range"] = list(task.target_range)
        if task.label_names:
            task_cfg["label_names"] = list(task.label_names)
    else:
        task_cfg = dict(task)

    used = {"labels", "split", "present", "labeled", "dataset"}
    entries: list[dict[str, Any]] = []
    files: dict[str, np.ndarray] = {}

    def claim(stem: str) -> str:
        candidate, i = stem, 1
        while candidate in used:
            candidate, i = f"{stem}_{i}", i + 1
        used.add(candidate)
        return f"{candidate}.npy"

    for mod_name, arr in modalities.items():
        arr = np.asarray(arr)
        kind = kinds.get(mod_name) or _infer_kind(mod_name, arr, mod_name in lengths)
        if not kind:
            raise ValueError(f"modality {mod_name!r}: cannot infer the kind of a {arr.ndim}-D array; pass kinds=")
        entry: dict[str, Any] = {"name": mod_name, "kind": kind, "file": claim(_safe_stem(mod_name))}
        files[entry["file"]] = arr
        if mod_name in lengths:
            entry["lengths"] = claim(_safe_stem(mod_name) + "_lengths")
            files[entry["lengths"]] = np.asarray(lengths[mod_name], dtype=np.int64)
        entries.append(entry)
    unknown = sorted(set(lengths) - set(modalities))
    if unknown:
        raise ValueError(f"lengths given for unknown modality {unknown[0]!r}")

    config: dict[str, Any] = {"name": name}
    if description:
        config["description"] = description
    config["task"] = task_cfg
    if primary_metric:
        config["primary_metric"] = primary_metric
    config["modalities"] = entries
    config["labels"] = "labels.npy"
    files["labels.npy"] = np.asarray(labels)
    for key, arr in (("split", split), ("present", present), ("labeled", labeled)):
        if arr is not None:
            config[key] = f"{key}.npy"
            a = np.asarray(arr)
            files[f"{key}.npy"] = a.astype(np.int8) if key == "split" else a.astype(bool)
    if standardize:
        config["standardize"] = True
    try:
        UserDatasetConfig.model_validate(config)
    except ValidationError as err:
        raise ValueError(f"invalid dataset description: {_format_validation(err)}") from None

    for file, arr in files.items():
        _save_npy(directory / file, arr)
    yaml_path = directory / YAML_NAME
    atomic_write_text(yaml_path, yaml.safe_dump(config, sort_keys=False, default_flow_style=None))
    return yaml_path


def write_bundle(bundle: DatasetBundle, directory: str | Path, *, description: str = "") -> Path:
    """Write a bundle in the user format: its train, val and test rows in that order with a split file (0 / 1 / 2),
    the presence mask, the labeled mask (when not all labeled) and the bundle's primary metric, so that
    :func:`load_user_dataset` reads back the same splits.

    Args:
        bundle: the bundle (e.g. from a preparation step, :mod:`robult.prepare`).
        directory: target directory (created if needed).
        description: free text for ``dataset.yaml``.

    Returns:
        The path of the written ``dataset.yaml``.
    """
    parts = (bundle.train, bundle.val, bundle.test)
    names = bundle.modality_names
    modalities = {n: np.concatenate([np.asarray(p.inputs[n]) for p in parts]) for n in names}
    lengths = {n: np.concatenate([p.lengths[n].numpy() for p in parts]) for n in names if n in bundle.train.lengths}
    labeled = np.concatenate([p.labeled.numpy() for p in parts])
    return write_user_dataset(
        directory,
        modalities,
        np.concatenate([p.target.numpy() for p in parts]),
        bundle.task,
        name=bundle.name,
        kinds={s.name: s.kind.value for s in bundle.modalities},
        lengths=lengths,
        split=np.repeat(np.arange(3, dtype=np.int8), [len(p) for p in parts]),
        present=np.concatenate([p.present.numpy() for p in parts]),
        labeled=None if labeled.all() else labeled,
        primary_metric=bundle.primary_metric,
        description=description,
    )
