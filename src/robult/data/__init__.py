"""Datasets: the registry, splits, the synthetic benchmark and loaders for real and paper-format data."""

from robult.data.registry import (
    DatasetBundle,
    DatasetInfo,
    LoadOptions,
    default_data_dir,
    load_dataset,
    register_dataset,
    registered_datasets,
    resolve_data_dir,
)

__all__ = [
    "DatasetBundle",
    "DatasetInfo",
    "LoadOptions",
    "default_data_dir",
    "load_dataset",
    "register_dataset",
    "registered_datasets",
    "resolve_data_dir",
]
