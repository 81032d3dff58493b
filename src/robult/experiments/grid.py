"""What ``robult benchmark`` and ``robult tune`` share: one grid cell's config, list parsing, and the tuned
settings (one YAML file per dataset, keyed by method and label ratio).

Tuned settings file (``configs/tuned/<dataset>.yaml``, written by ``robult tune --write DIR``)::

    dataset: cub
    settings:
      robult:
        0.05:
          overrides: {loss.temperature: 0.2, train.lr: 0.003}   # {}: the committed defaults won
          val_score: 0.812
          default_val_score: 0.801
          trials: 6
          seeds: 1

``robult benchmark --tuned DIR`` (or ``--tuned FILE``) runs each (method, ratio) with its entry; a missing entry is
an error (never a silent fallback to the defaults). The trial record of a search is a result (``OUT/tune.json``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from robult.config import ConfigError, RunConfig, apply_settings, read_yaml, validate_config
from robult.utils.io import atomic_write_text

T = TypeVar("T")


def parse_list(text: str, kind: Callable[[str], T], option: str) -> list[T]:
    """``"a,b"`` -> ``[kind("a"), kind("b")]`` with an error naming the option."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError(f"{option}: empty list")
    try:
        return [kind(t) for t in items]
    except ValueError as err:
        raise ValueError(f"{option}: cannot parse {text!r} ({err})") from None


def grid_config(
    base: RunConfig,
    dataset: str | None,
    data_dir: Path | None,
    method: str,
    ratio: float,
    seed: int,
    *,
    name: str,
    out_dir: Path,
    masks_dir: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    where: str = "benchmark",
) -> RunConfig:
    """One grid cell's validated config: ``base`` with the dataset, ``overrides`` (dotted keys), the method, label
    ratio and seed, no progress bar, and the run's name and output folders."""
    data = base.model_dump(mode="json")
    if dataset is not None:
        data["dataset"]["name"] = dataset
    if data_dir is not None:
        data["dataset"]["data_dir"] = str(data_dir)
    apply_settings(data, overrides or {}, where)
    data["train"].update(method=method, label_ratio=ratio, seed=seed, progress=False)
    data["name"] = name
    data["out_dir"] = str(out_dir)
    if masks_dir is not None:
        data["eval"]["masks_dir"] = str(masks_dir)
    return validate_config(data, where)


def tuned_path(location: Path, dataset: str) -> Path:
    """The tuned-settings file of ``dataset``: ``location`` itself if it is a file, else ``location/<dataset>.yaml``."""
    location = Path(location)
    return location if location.suffix in (".yaml", ".yml") else location / f"{dataset}.yaml"


def read_tuned(path: Path, dataset: str) -> dict[str, dict[float, dict[str, Any]]]:
    """``{method: {ratio: entry}}`` of a tuned-settings file, checked (dataset, entry shapes)."""
    if not path.is_file():
        raise ConfigError(f"--tuned: {path} does not exist (write it with `robult tune --dataset {dataset} --write`)")
    doc = read_yaml(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("settings"), dict):
        raise ConfigError(f"{path}: expected a mapping with `dataset` and a `settings` mapping")
    if doc.get("dataset") != dataset:
        raise ConfigError(f"{path}: tuned on dataset {doc.get('dataset')!r}, not {dataset!r}")
    out: dict[str, dict[float, dict[str, Any]]] = {}
    for method, by_ratio in doc["settings"].items():
        if not isinstance(by_ratio, dict):
            raise ConfigError(f"{path}: settings.{method} must map label ratios to entries")
        for ratio, entry in by_ratio.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("overrides"), dict):
                raise ConfigError(f"{path}: settings.{method}.{ratio} needs an `overrides` mapping")
            out.setdefault(str(method), {})[float(ratio)] = entry
    return out


def tuned_overrides(location: Path, dataset: str, method: str, ratio: float) -> dict[str, Any]:
    """The tuned overrides of (method, ratio); a missing entry is a :class:`ConfigError` saying how to make it."""
    return tuned_grid(location, dataset, [method], [ratio])[method, ratio]


def tuned_grid(
    location: Path, dataset: str, methods: Sequence[str], ratios: Sequence[float]
) -> dict[tuple[str, float], dict[str, Any]]:
    """The tuned overrides of every (method, ratio), from the dataset's file read once; a missing entry (the first
    in method, then ratio order) is a :class:`ConfigError` saying how to make it."""
    path = tuned_path(location, dataset)
    settings = read_tuned(path, dataset)
    out: dict[tuple[str, float], dict[str, Any]] = {}
    for method in methods:
        for ratio in ratios:
            entry = settings.get(method, {}).get(float(ratio))
            if entry is None:
                raise ConfigError(
                    f"{path}: no tuned settings for {method} at label ratio {ratio:g}; run `robult tune --dataset "
                    f"{dataset} --methods {method} --label-ratio {ratio:g} --write {path.parent}` (or drop --tuned)"
                )
            out[method, ratio] = dict(entry["overrides"])
    return out


def write_tuned(location: Path, dataset: str, method: str, ratio: float, entry: Mapping[str, Any]) -> Path:
    """Merge one (method, ratio) entry into the dataset's tuned-settings file (atomic; other entries kept)."""
    path = tuned_path(location, dataset)
    settings = read_tuned(path, dataset) if path.is_file() else {}
    settings.setdefault(method, {})[float(ratio)] = dict(entry)
    ordered = {m: {r: settings[m][r] for r in sorted(settings[m])} for m in sorted(settings)}
    header = (
        f"# `robult tune` winners for {dataset}: per method and label ratio, the overrides with the best validation\n"
        "# score (validation mean over modality subsets of the primary metric, mean over seeds); {} = the defaults.\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    body = yaml.safe_dump({"dataset": dataset, "settings": ordered}, sort_keys=False, width=120)
    atomic_write_text(path, header + body)
    return path


__all__ = ["grid_config", "parse_list", "read_tuned", "tuned_grid", "tuned_overrides", "tuned_path", "write_tuned"]
