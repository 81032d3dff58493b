"""A table as a dataset: a CSV or Parquet file with one column group per modality (``docs/datasets.md``).

Columns (the default mapping)::

    label            the target; an empty cell (or NaN) marks an unlabeled row
    <modality>__<f>  a feature of modality <modality> (two underscores): ``audio__0, audio__1, text__len, ...``
    split            optional: train / val / test (or 0 / 1 / 2) per row
    (anything else)  an error naming the column, unless listed in the option ``ignore``

A row lacks a modality where every one of its cells is empty (or NaN); a row with only some of them empty is an
error naming the row and the modality. ``modalities={name: [column, ...]}`` replaces the prefix rule.

Options (``--set dataset.options.KEY=VALUE``, or keyword arguments of :func:`load_table_dataset`): ``label``
(the target column, default ``label``), ``task`` (``multiclass``, ``binary`` or ``regression``; default: regression
when a labeled value is not an integer, else multiclass over the sorted labeled values, which may be strings),
``modalities``, ``ignore``, ``name`` (default: the file's stem), ``standardize`` (z-score every feature with the
training rows' statistics, saved with the model; default false).

The whole table is read into memory (for data larger than memory, write the ``dataset.yaml`` + ``.npy`` format).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robult.data.dataset import MultimodalDataset
from robult.data.registry import DatasetBundle, LoadOptions, default_metric, register_dataset
from robult.data.splits import SplitIndices, labeled_strata, split_from_codes, train_val_test_split
from robult.specs import ModalityKind, ModalitySpec, TaskKind, TaskSpec
from robult.utils.paths import safe_file_stem

__all__ = [
    "SEPARATOR",
    "TABLE_SUFFIXES",
    "TableInputs",
    "is_table",
    "load_table_dataset",
    "read_table",
    "read_table_header",
    "read_table_inputs",
    "table_modality_names",
    "table_targets",
]

SEPARATOR = "__"  # <modality>__<feature>
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
_SPLITS = {"train": 0, "val": 1, "validation": 1, "test": 2, "0": 0, "1": 1, "2": 2}


def is_table(path: str | Path) -> bool:
    """Whether ``path`` names a table file (by its suffix)."""
    return Path(path).suffix.lower() in TABLE_SUFFIXES


def _parquet(path: Path) -> Any:
    """``pyarrow.parquet``, or one line naming the extra that installs it."""
    try:
        import pyarrow.parquet as pq
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            f"{path}: reading Parquet needs pyarrow: pip install 'robult[parquet]'", name="pyarrow"
        ) from None
    return pq


def read_table(path: str | Path) -> dict[str, list[Any] | np.ndarray]:
    """The columns of a CSV / TSV / Parquet file by name (CSV cells as strings)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: table file not found")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        table = _parquet(path).read_table(path)
        return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter="\t" if suffix == ".tsv" else ",")
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"{path}: empty file (expected a header row)") from None
        dup = sorted({h for h in header if header.count(h) > 1})
        if dup:
            raise ValueError(f"{path}: column {dup[0]!r} appears more than once in the header")
        rows = list(reader)
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"{path}: line {i + 2} has {len(row)} cells, the header has {len(header)}")
    return {name: [row[j] for row in rows] for j, name in enumerate(header)}


def read_table_header(path: str | Path) -> list[str]:
    """The column names of a CSV / TSV / Parquet file, without reading its rows."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: table file not found")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return list(_parquet(path).read_schema(path).names)
    with path.open(newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh, delimiter="\t" if suffix == ".tsv" else ","), None)
    if header is None:
        raise ValueError(f"{path}: empty file (expected a header row)")
    return header


def table_modality_names(path: str | Path, *, label: str = "label") -> list[str]:
    """The modalities a table's columns hold, by the default mapping (``<modality>__<feature>``)."""
    path = Path(path).expanduser()
    return list(_modality_columns(read_table_header(path), label, None, (), str(path)))


def _empty(value: Any) -> bool:
    """An empty cell: None, blank text or NaN."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, (float, np.floating)) and bool(np.isnan(value))


def _floats(values: Any, where: str) -> np.ndarray:
    """A column as float64 (empty cells: NaN); a cell that is not a number is an error naming its row."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        return values.astype(np.float64)
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        if _empty(v):
            out[i] = math.nan
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: row {i} holds {v!r}, not a number") from None
    return out


def _modality_columns(
    columns: Sequence[str],
    label: str,
    modalities: Mapping[str, Sequence[str]] | None,
    ignore: Sequence[str],
    where: str,
) -> dict[str, list[str]]:
    if modalities:
        groups = {str(k): [str(c) for c in v] for k, v in modalities.items()}
        for name, cols in groups.items():
            missing = [c for c in cols if c not in columns]
            if missing:
                raise ValueError(f"{where}: modalities.{name}: column {missing[0]!r} is not in the table")
            if not cols:
                raise ValueError(f"{where}: modalities.{name}: no columns")
        return groups
    groups: dict[str, list[str]] = {}
    for col in columns:
        if col in (label, "split") or col in ignore:
            continue
        name, sep, feature = col.partition(SEPARATOR)
        if not sep or not name or not feature:
            raise ValueError(
                f"{where}: column {col!r} is neither {label!r}, 'split' nor <modality>{SEPARATOR}<feature>; rename "
                f"it, list it in dataset.options.ignore, or map columns with dataset.options.modalities"
            )
        groups.setdefault(name, []).append(col)
    if not groups:
        raise ValueError(f"{where}: no modality columns (<modality>{SEPARATOR}<feature>, e.g. audio{SEPARATOR}0)")
    return groups


def _features(
    columns: Mapping[str, Any], groups: Mapping[str, Sequence[str]], n: int, where: str
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The modalities' features, ``float32 [N, d]`` each (0 where the modality is missing), and the presence mask
    ``bool [N, M]``; a row with a modality in part, or an infinite value, is an error naming the row and column."""
    inputs: dict[str, np.ndarray] = {}
    present = np.zeros((n, len(groups)), dtype=bool)
    for m, (mod, cols) in enumerate(groups.items()):
        x = np.stack([_floats(columns[c], f"{where} ({c})") for c in cols], axis=1)
        empty = np.isnan(x)
        partial = empty.any(axis=1) & ~empty.all(axis=1)
        if partial.any():
            row = int(np.flatnonzero(partial)[0])
            col = cols[int(np.flatnonzero(empty[row])[0])]
            raise ValueError(
                f"{where}: row {row} has modality {mod!r} in part (column {col!r} is empty); fill it, or leave every "
                f"{mod}{SEPARATOR}* cell of the row empty to mark the modality missing"
            )
        if np.isinf(x).any():
            row, j = (int(v[0]) for v in np.nonzero(np.isinf(x)))
            raise ValueError(f"{where}: row {row}, column {cols[j]!r}: infinite value")
        present[:, m] = ~empty.all(axis=1)
        inputs[mod] = np.nan_to_num(x).astype(np.float32)
    return inputs, present


def _label_cells(raw: Any, where: str) -> tuple[list[Any], np.ndarray, np.ndarray | None]:
    """The label column's cells, the labeled mask (a cell that is not empty) and the cells as numbers (NaN where
    empty; ``None`` when a labeled cell is not a number)."""
    values = list(raw)
    labeled = np.array([not _empty(v) for v in values], dtype=bool)
    if not labeled.any():
        raise ValueError(f"{where}: no labeled row (every cell is empty)")
    try:
        numbers = _floats([v if ok else "" for v, ok in zip(values, labeled, strict=True)], where)
    except ValueError:
        numbers = None
    return values, labeled, numbers


def _target(raw: Any, task: str | None, where: str) -> tuple[np.ndarray, np.ndarray, TaskSpec]:
    """Targets, the labeled mask and the task from the label column (empty / NaN = unlabeled)."""
    values, labeled, numbers = _label_cells(raw, where)
    if task == "regression" or (task is None and numbers is not None and not np.all(numbers[labeled] % 1 == 0)):
        if numbers is None:
            raise ValueError(f"{where}: a regression target must be numeric")
        bad = labeled & ~np.isfinite(numbers)
        if bad.any():
            raise ValueError(f"{where}: row {int(np.flatnonzero(bad)[0])} holds an infinite target")
        return numbers.astype(np.float32), labeled, TaskSpec("regression")
    if task not in (None, "multiclass", "binary"):
        raise ValueError(f"{where}: task {task!r}; use multiclass, binary or regression")
    if numbers is not None and not np.all(numbers[labeled] % 1 == 0):  # task given: 1.5 is not truncated to class 1
        row = int(np.flatnonzero(labeled & (numbers % 1 != 0))[0])
        raise ValueError(
            f"{where}: row {row} holds {values[row]!r}, not a class of a {task} task (an integer or a word)"
        )
    keys = (
        [int(x) for x in numbers[labeled]]
        if numbers is not None
        else [str(v).strip() for v in np.array(values)[labeled]]
    )
    classes = sorted(set(keys))
    if task == "binary":
        if not set(classes) <= {0, 1}:
            raise ValueError(f"{where}: a binary task needs labels 0 and 1, got {classes[:5]}")
        target = np.zeros(len(values), dtype=np.float32)
        target[labeled] = np.asarray(keys, dtype=np.float32)
        return target, labeled, TaskSpec("binary")
    if len(classes) < 2:
        raise ValueError(f"{where}: one class ({classes[0]!r}) among the labeled rows; a classifier needs two")
    index = {c: i for i, c in enumerate(classes)}
    target = np.full(len(values), -1, dtype=np.int64)
    target[labeled] = [index[k] for k in keys]
    return target, labeled, TaskSpec("multiclass", num_classes=len(classes), label_names=tuple(map(str, classes)))


def _split(raw: Any, groups: np.ndarray, seed: int, val_fraction: float, where: str) -> SplitIndices:
    if raw is None:
        return train_val_test_split(groups, seed, val_fraction)
    codes = np.empty(len(groups), dtype=np.int64)
    for i, v in enumerate(raw):
        key = str(v).strip().lower()
        if key.endswith(".0"):
            key = key[:-2]
        if key not in _SPLITS:
            raise ValueError(f"{where}: split: row {i} holds {v!r}; use train, val or test (or 0, 1, 2)")
        codes[i] = _SPLITS[key]
    return split_from_codes(codes, groups, seed, val_fraction, source="split column", where=f"{where}: split")


def load_table_dataset(
    path: str | Path,
    seed: int = 0,
    val_fraction: float = 0.1,
    *,
    label: str = "label",
    task: str | None = None,
    modalities: Mapping[str, Sequence[str]] | None = None,
    ignore: Sequence[str] = (),
    name: str | None = None,
    standardize: bool = False,
) -> DatasetBundle:
    """Load a CSV / Parquet table as a dataset (see the module docstring for the columns and options)."""
    path = Path(path).expanduser()
    columns = read_table(path)
    where = str(path)
    if label not in columns:
        raise ValueError(f"{where}: no label column {label!r} (set dataset.options.label=<column>)")
    groups = _modality_columns(list(columns), label, modalities, list(ignore), where)
    target, labeled, task_spec = _target(columns[label], task, f"{where} ({label})")
    n = len(target)
    inputs, present = _features(columns, groups, n, where)
    empty_rows = np.flatnonzero(~present.any(axis=1))
    if len(empty_rows):
        raise ValueError(f"{where}: row {int(empty_rows[0])} has no modality ({len(empty_rows)} such rows)")
    strat = labeled_strata(target, labeled, task_spec)
    split = _split(columns.get("split"), strat, seed, val_fraction, where)
    normalization: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if standardize:
        for m, (mod, x) in enumerate(inputs.items()):
            rows = split.train[present[split.train, m]]
            mean = x[rows].mean(axis=0) if len(rows) else np.zeros(x.shape[1], np.float32)
            std = x[rows].std(axis=0) if len(rows) else np.ones(x.shape[1], np.float32)
            std = np.where(std > 0, std, 1.0).astype(np.float32)
            inputs[mod] = np.where(present[:, [m]], (x - mean) / std, 0.0).astype(np.float32)
            normalization[mod] = (mean.astype(np.float32), std)
    specs = [ModalitySpec(mod, "vector", (len(cols),)) for mod, cols in groups.items()]
    full = MultimodalDataset(
        specs,
        task_spec,
        {k: torch.from_numpy(v) for k, v in inputs.items()},
        torch.from_numpy(target),
        present=torch.from_numpy(present),
        labeled=torch.from_numpy(labeled),
        source_rows=torch.arange(n),
    )
    title = name or safe_file_stem(path.stem, "table")
    return DatasetBundle(
        title,
        specs,
        task_spec,
        default_metric(task_spec),
        full.subset(split.train),
        full.subset(split.val),
        full.subset(split.test),
        source=str(path),
        notes={
            "split": split.rule,
            "sizes": split.sizes,
            "columns": {mod: len(cols) for mod, cols in groups.items()},
            "standardisation": "per-feature z-score with train statistics" if standardize else "none",
        },
        normalization=normalization,
    )


@register_dataset(
    "table", "your own table: a CSV or Parquet file, columns <modality>__<feature> (path=FILE)", group="user"
)
def load_table(opts: LoadOptions) -> DatasetBundle:
    """Registry loader: reads ``opts.extra["path"]``; the other extra options are :func:`load_table_dataset`'s."""
    extra = dict(opts.extra)
    path = extra.pop("path", None)
    if not path:
        raise ValueError("the 'table' dataset needs the option path=FILE (a .csv or .parquet file)")
    known = {"label", "task", "modalities", "ignore", "name", "standardize"}
    unknown = sorted(set(extra) - known)
    if unknown:
        raise ValueError(f"dataset.options.{unknown[0]}: unknown option of the 'table' dataset; use {sorted(known)}")
    return load_table_dataset(path, seed=opts.seed, val_fraction=opts.val_fraction, **extra)


# ----------------------------------------------------------------------------------- a table as a trained model's input


@dataclass(frozen=True)
class TableInputs:
    """A table read as the inputs of a trained model (``robult predict|evaluate --input FILE``).

    Attributes:
        inputs: modality -> ``float32 [N, d]`` features (0 where the modality is missing).
        present: modality -> ``bool [N]``, whether the row has it.
        label: the label column as read (see :func:`table_targets`), ``None`` without one.
        num_rows: N.
        source: the table file.
    """

    inputs: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    label: Any
    num_rows: int
    source: Path


def read_table_inputs(path: str | Path, modalities: Sequence[ModalitySpec], *, label: str = "label") -> TableInputs:
    """A table in the format :func:`load_table_dataset` reads, as the inputs of a model with ``modalities``.

    The columns are mapped as in training (``label``, ``split``, ``<modality>__<feature>``; the split is ignored:
    every row is an input). Each column group must be a vector modality of the model with as many columns as it
    has features, in the training table's order; a model modality the table lacks is missing from every row.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a column or cell that does not fit, as one line naming the file, column, row or modality.
    """
    path = Path(path).expanduser()
    columns = read_table(path)
    where = str(path)
    groups = _modality_columns(list(columns), label, None, (), where)
    specs = {s.name: s for s in modalities}
    for mod, cols in groups.items():
        spec = specs.get(mod)
        if spec is None:
            raise ValueError(
                f"{where}: modality {mod!r} ({mod}{SEPARATOR}* columns) is not one of the model's {list(specs)}"
            )
        if spec.kind != ModalityKind.VECTOR:
            raise ValueError(
                f"{where}: the model's modality {mod!r} is a {spec.kind.value}; a table holds vector modalities "
                "only: give the inputs as a directory (dataset.yaml + .npy)"
            )
        if spec.shape != (len(cols),):
            raise ValueError(
                f"{where}: modality {mod!r} has {len(cols)} columns ({mod}{SEPARATOR}*), the model's has "
                f"{spec.shape[0]} features"
            )
    n = len(next(iter(columns.values())))
    if n == 0:
        raise ValueError(f"{where}: no rows below the header")
    inputs, present = _features(columns, groups, n, where)
    mask = {mod: present[:, m] for m, mod in enumerate(groups)}
    return TableInputs(inputs, mask, columns.get(label), n, path)


def table_targets(raw: Any, task: TaskSpec, where: str) -> tuple[np.ndarray, np.ndarray]:
    """A label column as the targets of a trained model's ``task``, and the labeled mask (an empty cell, or NaN,
    is an unlabeled row).

    A class is matched by name to the task's ``label_names`` (the sorted label values :func:`load_table_dataset`
    found), or to its id where the task has no names; targets are as training reads them (class ids, ``-1`` where
    unlabeled; binary 0/1 and regression values as floats).

    Raises:
        ValueError: a label that is not one of the model's classes, not a number (regression) or infinite, naming
            the row; a multilabel task (a table holds one label per row).
    """
    values, labeled, numbers = _label_cells(raw, where)
    if task.kind == TaskKind.REGRESSION:
        numbers = _floats([v if ok else "" for v, ok in zip(values, labeled, strict=True)], where)
        bad = labeled & ~np.isfinite(numbers)
        if bad.any():
            raise ValueError(f"{where}: row {int(np.flatnonzero(bad)[0])} holds an infinite target")
        return numbers.astype(np.float32), labeled
    if task.kind == TaskKind.MULTILABEL:
        raise ValueError(
            f"{where}: the model is multilabel, and a table holds one label per row; give the inputs as a directory "
            "(dataset.yaml + .npy)"
        )
    k = 2 if task.kind == TaskKind.BINARY else task.num_classes
    names = list(task.label_names) if len(task.label_names) == k else [str(i) for i in range(k)]
    index = {name: i for i, name in enumerate(names)}
    ids = np.full(len(values), -1, dtype=np.int64)
    for i in np.flatnonzero(labeled):
        x = None if numbers is None else numbers[i]
        key = str(int(x)) if x is not None and np.isfinite(x) and x % 1 == 0 else str(values[i]).strip()
        if key not in index:
            raise ValueError(f"{where}: row {int(i)} holds {values[i]!r}, not one of the model's classes {names}")
        ids[i] = index[key]
    if task.kind == TaskKind.BINARY:
        return np.where(labeled, ids, 0).astype(np.float32), labeled
    return ids, labeled
