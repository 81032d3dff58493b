"""One interface for every dataset: a registry of named loaders returning a :class:`DatasetBundle`.

A loader takes :class:`LoadOptions` (data directory, seed, validation fraction, ...) and returns the bundle with its
train / val / test splits. ``robult datasets`` lists the registry.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robult.data.dataset import MultimodalDataset
from robult.specs import ModalitySpec, TaskKind, TaskSpec

DATA_DIR_ENV = "ROBULT_DATA_DIR"
CACHE_DIR_ENV = "ROBULT_CACHE_DIR"

DEFAULT_METRICS: dict[TaskKind, str] = {
    TaskKind.MULTICLASS: "accuracy",
    TaskKind.BINARY: "auroc",
    TaskKind.MULTILABEL: "macro_f1",
    TaskKind.REGRESSION: "mae",
}
"""The primary metric of a task kind when a dataset names none: the one table every loader (and
``robult.evaluation.default_primary_metric``) reads. Each name is a metric of ``robult.evaluation.METRICS``."""


def default_metric(task: TaskSpec) -> str:
    """The primary metric of ``task`` when none is given (:data:`DEFAULT_METRICS`)."""
    return DEFAULT_METRICS[task.kind]


@dataclass
class DatasetBundle:
    """A dataset with its splits and what is needed to train and score on it.

    Attributes:
        name: registry name.
        modalities: modality specs, in the dataset's order (subset keys use this order).
        task: the task spec.
        primary_metric: the metric reported in tables and used for model selection (see ``robult.evaluation``);
            loaders use :func:`default_metric` unless the dataset names one.
        train, val, test: the splits.
        source: where the data was read from (a path, or ``"generated"``).
        notes: free-form facts for reports (split rule, standardisation, ...).
        normalization: modality name -> ``(mean, std)`` of the z-score the loader fitted on the training split and
            applied to every split (``(x - mean) / std`` in the arrays' dtype); empty when the loader fits none.
            A saved model keeps it (``robult.inference``) so that raw new inputs are normalised as in training.
    """

    name: str
    modalities: list[ModalitySpec]
    task: TaskSpec
    primary_metric: str
    train: MultimodalDataset
    val: MultimodalDataset
    test: MultimodalDataset
    source: str = "generated"
    notes: dict[str, Any] = field(default_factory=dict)
    normalization: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    @property
    def modality_names(self) -> list[str]:
        return [s.name for s in self.modalities]


@dataclass(frozen=True)
class LoadOptions:
    """What every loader accepts.

    Attributes:
        data_dir: root data directory (each dataset reads its own sub-folder), or ``None`` for the default.
        seed: seed of the split (where the dataset has no fixed split) and of the validation carve-out.
        val_fraction: share of the training split held out for validation.
        extra: loader-specific options (e.g. ``{"n_samples": 3000}`` for the synthetic set).
    """

    data_dir: Path | None = None
    seed: int = 0
    val_fraction: float = 0.1
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetInfo:
    """A registry entry."""

    name: str
    loader: Callable[[LoadOptions], DatasetBundle]
    description: str
    folder: str | None = None  # sub-folder of the data directory; None for generated / path-based datasets
    group: str = "multiview"


_REGISTRY: dict[str, DatasetInfo] = {}
# Modules whose import registers the built-in datasets, imported on the first registry query. The raw image + text
# releases (food101, hateful_memes) are registered by the preparation step that encodes them (robult.prepare).
_BUILTIN_MODULES = (
    "robult.data.synthetic",
    "robult.data.multiview",
    "robult.data.avdigits",
    "robult.data.paper",
    "robult.data.user",
    "robult.data.table",
    "robult.prepare.food101",
    "robult.prepare.hateful_memes",
)
_BUILTINS_IMPORTED = False


def register_dataset(
    name: str, description: str, folder: str | None = None, group: str = "multiview"
) -> Callable[[Callable[[LoadOptions], DatasetBundle]], Callable[[LoadOptions], DatasetBundle]]:
    """Decorator registering a loader under ``name``."""

    def wrap(fn: Callable[[LoadOptions], DatasetBundle]) -> Callable[[LoadOptions], DatasetBundle]:
        if name in _REGISTRY and _REGISTRY[name].loader is not fn:
            raise ValueError(f"dataset {name!r} is registered twice")
        _REGISTRY[name] = DatasetInfo(name, fn, description, folder, group)
        return fn

    return wrap


def _import_builtins() -> None:
    global _BUILTINS_IMPORTED
    if _BUILTINS_IMPORTED:
        return
    import importlib

    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    _BUILTINS_IMPORTED = True  # only once every built-in registered: a failed import is retried and re-raised


def registered_datasets() -> dict[str, DatasetInfo]:
    """All registered datasets by name."""
    _import_builtins()
    return dict(_REGISTRY)


def default_data_dir() -> Path | None:
    """The data directory used when none is given: ``$ROBULT_DATA_DIR``, else ``../shared/data`` (relative to the
    working directory, then to the repository holding this package) when it exists."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    candidates = [Path.cwd().parent / "shared" / "data", Path(__file__).resolve().parents[3].parent / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c
    return None


def cache_dir(default_sub: str = "") -> Path:
    """The cache root: ``$ROBULT_CACHE_DIR`` if set, else ``~/.cache/robult/<default_sub>``."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "robult" / default_sub


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """``data_dir`` if given, else :func:`default_data_dir`; raises ``FileNotFoundError`` saying how to set it."""
    if data_dir is not None:
        path = Path(data_dir)
        if not path.is_dir():
            raise FileNotFoundError(f"data directory {path} does not exist")
        return path
    path = default_data_dir()
    if path is None:
        raise FileNotFoundError(
            f"no data directory: pass --data-dir DIR or set ${DATA_DIR_ENV} (the default ../shared/data does not exist)"
        )
    return path


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    **extra: Any,
) -> DatasetBundle:
    """Load a registered dataset by name."""
    datasets = registered_datasets()
    if name not in datasets:
        raise ValueError(f"unknown dataset {name!r}; available: {sorted(datasets)}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    opts = LoadOptions(
        data_dir=Path(data_dir) if data_dir is not None else None, seed=seed, val_fraction=val_fraction, extra=extra
    )
    try:
        return datasets[name].loader(opts)
    except TypeError as err:  # an option of the wrong type reaching the loader: one line, not a traceback
        if not extra:
            raise
        raise ValueError(f"dataset {name!r} with options {extra}: {err} (is an option's type wrong?)") from err
