"""Loading a user-format directory: labels, modality arrays opened for row reads, presence, split and the
optional standardisation, as a :class:`~robult.data.registry.DatasetBundle` (registered as dataset ``user``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from robult.data.dataset import MultimodalDataset, RowView
from robult.data.registry import DatasetBundle, LoadOptions, register_dataset
from robult.data.splits import SplitIndices, labeled_strata, split_from_codes, train_val_test_split
from robult.data.user.npy import load_small_array
from robult.data.user.rows import MappedArray
from robult.data.user.schema import YAML_NAME, MissingFileError, UserDatasetConfig, read_config
from robult.data.user.stats import standardize_readers
from robult.specs import ModalityKind, ModalitySpec, TaskKind, TaskSpec

__all__ = ["load_user", "load_user_dataset", "read_labels"]


def _resolve(base: Path, name: str) -> Path:
    p = Path(name).expanduser()
    return p if p.is_absolute() else base / p


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
    """Load a dataset in the user format (:mod:`robult.data.user`, ``docs/datasets.md``).

    Steps: read and validate ``dataset.yaml`` (:func:`read_config`), the labels and labeled mask
    (:func:`read_labels`), open the modality arrays for row reads (:func:`_open_modalities`), read the presence
    mask (:func:`_read_presence`), split the rows (:func:`_split_rows`), fit the optional standardisation on train
    (:func:`standardize_readers`), and cut the bundle's splits out of one lazily read dataset.

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
    groups = labeled_strata(target, labeled, task)
    split = _split_rows(config, base, groups, seed, val_fraction)
    standardized = standardize_readers(specs, readers, lengths, present, split.train) if config.standardize else []

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
    labels = load_small_array(labels_path, "labels")
    n = int(labels.shape[0]) if labels.ndim else 0
    if labels.ndim == 0 or n == 0:
        raise ValueError(f"{labels_path} (labels): expected one label per sample, got shape {labels.shape}")
    if labels.dtype.kind not in "biuf":
        raise ValueError(f"{labels_path} (labels): dtype {labels.dtype} is not numeric")

    labeled = np.ones(n, dtype=bool)
    if config.labeled is not None:
        labeled_path = _resolve(base, config.labeled)
        lab = load_small_array(labeled_path, "labeled")
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
            ln = load_small_array(len_path, f"modalities.{mc.name}.lengths")
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
        pm = load_small_array(present_path, "present")
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
    split = load_small_array(split_path, "split")
    if split.shape != (n,):
        raise ValueError(f"{split_path} (split): shape {split.shape}, expected ({n},)")
    if split.dtype.kind not in "iu" or not np.isin(split, (0, 1, 2)).all():
        raise ValueError(f"{split_path} (split): values must be integers 0 (train), 1 (val) or 2 (test)")
    return split_from_codes(
        split, groups, seed, val_fraction, source=f"split file {config.split}", where=f"{split_path} (split)"
    )


@register_dataset("user", "your own data: a directory with dataset.yaml and .npy arrays (path=DIR)", group="user")
def load_user(opts: LoadOptions) -> DatasetBundle:
    """Registry loader: reads ``opts.extra["path"]`` (the dataset directory or its YAML file)."""
    path = opts.extra.get("path")
    if not path:
        raise ValueError("the 'user' dataset needs the extra option path=DIR (a directory with dataset.yaml)")
    return load_user_dataset(path, seed=opts.seed, val_fraction=opts.val_fraction)
