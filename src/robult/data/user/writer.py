"""Writing arrays, or a loaded bundle, in the user format (one ``.npy`` per array plus ``dataset.yaml``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import ValidationError

from robult.data.registry import DatasetBundle
from robult.data.user.schema import YAML_NAME, UserDatasetConfig, format_validation_error
from robult.specs import TaskKind, TaskSpec
from robult.utils.io import atomic_open, atomic_write_text
from robult.utils.paths import safe_file_stem

__all__ = ["write_bundle", "write_user_dataset"]


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
        entry: dict[str, Any] = {"name": mod_name, "kind": kind, "file": claim(safe_file_stem(mod_name, "modality"))}
        files[entry["file"]] = arr
        if mod_name in lengths:
            entry["lengths"] = claim(safe_file_stem(mod_name, "modality") + "_lengths")
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
        raise ValueError(f"invalid dataset description: {format_validation_error(err)}") from None

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
