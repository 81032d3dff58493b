"""scikit-learn estimators: :class:`RobultClassifier` and :class:`RobultRegressor` (``pip install 'robult[sklearn]'``).

``fit(X, y)`` trains one run of the configured method (the same trainer as ``robult train``) and keeps the trained
model in memory; ``save(path)`` writes the model artefact that :func:`robult.load` and ``robult predict`` read.

Inputs ``X`` (the same in ``fit``, ``predict``, ``predict_proba`` and ``score``):

- a dict ``{modality name: array [N, ...]}`` or a list of arrays (modalities named ``m0``, ``m1``, ...); an entry
  may be ``None`` at prediction time (that modality is absent for every row);
- one 2-D array ``[N, D]`` (or a pandas DataFrame) split into modalities by ``modalities=``: a dict ``{name:
  columns}`` (column indices, or column names of a DataFrame) or a list of widths (``[20, 10]``: columns 0-19 are
  ``m0``, 20-29 ``m1``). This is the form ``Pipeline``, ``cross_val_score`` and ``GridSearchCV`` pass around.

A row whose values of a modality are all NaN lacks that modality (``present=`` gives the mask explicitly, ``bool
[N, M]`` in modality order); a present row holding a NaN is an error naming the modality and row. Every row needs
at least one modality.

Labels follow scikit-learn's semi-supervised convention: ``-1`` marks an unlabeled row of a classifier (any other
label values: ints or strings, mapped to ``classes_``), ``NaN`` an unlabeled row of a regressor. Unlabeled rows are
used by methods that learn from unlabeled data (``robult``, ``pseudo_label``, ...) and ignored by the others; all
labeled rows are used (a stratified ``val_fraction`` of them selects the best epoch).

Options mirror the run config (``robult config show``): ``method``, ``max_epochs``, ``lr``, ... set the keys of the
same name in ``train``; anything else goes through ``config_overrides={"model.hidden_dim": 64, ...}`` (dotted keys,
as with ``--set``) or a YAML file ``config=``.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted

__all__ = ["RobultClassifier", "RobultRegressor"]

UNLABELED = -1  # scikit-learn's marker of an unlabeled sample (sklearn.semi_supervised)


def _modality_columns(modalities: Any, n_cols: int, columns: Sequence[Any] | None) -> dict[str, np.ndarray]:
    """``modalities=`` as ``{name: column indices}`` for a 2-D ``X`` with ``n_cols`` columns."""
    if modalities is None:
        return {"m0": np.arange(n_cols)}
    if isinstance(modalities, Mapping):
        out: dict[str, np.ndarray] = {}
        for name, cols in modalities.items():
            idx = []
            for c in [cols] if isinstance(cols, str) else list(cols):
                if isinstance(c, str):
                    if columns is None or c not in columns:
                        raise ValueError(f"modalities[{name!r}]: column {c!r} is not a column of X")
                    idx.append(list(columns).index(c))
                else:
                    idx.append(int(c))
            arr = np.asarray(idx, dtype=np.int64)
            if len(arr) == 0:
                raise ValueError(f"modalities[{name!r}]: no columns")
            if arr.min() < 0 or arr.max() >= n_cols:
                raise ValueError(f"modalities[{name!r}]: column {int(arr.max())} outside X's {n_cols} columns")
            out[str(name)] = arr
        return out
    widths = [int(w) for w in modalities]
    if any(w < 1 for w in widths) or sum(widths) != n_cols:
        raise ValueError(f"modalities={widths}: widths must be positive and sum to X's {n_cols} columns")
    starts = np.cumsum([0, *widths])
    return {f"m{i}": np.arange(starts[i], starts[i + 1]) for i in range(len(widths))}


def _as_inputs(X: Any, modalities: Any) -> dict[str, np.ndarray | None]:
    """``X`` (a dict, a list of arrays, or one 2-D array split by ``modalities``) as ``{name: array or None}``."""
    if isinstance(X, Mapping):
        return {str(k): None if v is None else np.asarray(v) for k, v in X.items()}
    if isinstance(X, (list, tuple)) and (len(X) == 0 or all(v is None or np.ndim(v) >= 2 for v in X)):
        return {f"m{i}": None if v is None else np.asarray(v) for i, v in enumerate(X)}
    columns = list(X.columns) if hasattr(X, "columns") else None
    arr = np.asarray(X)
    if arr.ndim != 2:
        raise ValueError(
            f"X: expected a dict or list of per-modality arrays, or one 2-D array with modalities=; got shape "
            f"{arr.shape}"
        )
    return {name: arr[:, cols] for name, cols in _modality_columns(modalities, arr.shape[1], columns).items()}


def _float_rows(name: str, x: np.ndarray) -> np.ndarray:
    if x.dtype.kind not in "biuf":
        raise ValueError(f"modality {name!r}: dtype {x.dtype} is not numeric")
    if x.ndim < 2:
        raise ValueError(f"modality {name!r}: expected [N, features], got shape {x.shape}")
    return x.astype(np.float32, copy=False)


def _presence(inputs: Mapping[str, np.ndarray | None], names: list[str], n: int, present: Any) -> np.ndarray:
    """The presence mask: ``present`` when given, else a row lacks a modality where all its values are NaN; a NaN
    in a present row is an error naming the modality and row."""
    if present is not None:
        mask = np.asarray(present)
        if mask.shape != (n, len(names)):
            raise ValueError(f"present: shape {mask.shape}, expected ({n}, {len(names)}) = (rows, modalities {names})")
        if mask.dtype != bool and not np.isin(mask, (0, 1)).all():
            raise ValueError("present: values must be boolean or 0/1")
        mask = mask.astype(bool)
    else:
        mask = np.zeros((n, len(names)), dtype=bool)
        for m, name in enumerate(names):
            x = inputs.get(name)
            if x is not None:
                mask[:, m] = ~np.isnan(x.reshape(n, -1)).all(axis=1)
    for m, name in enumerate(names):
        x = inputs.get(name)
        if x is None:
            if mask[:, m].any():
                raise ValueError(f"modality {name!r}: marked present in row {int(np.flatnonzero(mask[:, m])[0])}")
            continue
        bad = ~np.isfinite(x.reshape(n, -1)).all(axis=1) & mask[:, m]
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"modality {name!r}: row {row} holds NaN or Inf among present values; fill it, or make the whole "
                "row NaN (or pass present=) to mark the modality missing"
            )
    empty = np.flatnonzero(~mask.any(axis=1))
    if len(empty):
        raise ValueError(f"row {int(empty[0])} has no modality present ({len(empty)} such rows); each needs one")
    return mask


class _RobultEstimator(BaseEstimator):
    """Shared by :class:`RobultClassifier` and :class:`RobultRegressor` (see the module docstring)."""

    _task_kind = "multiclass"

    def __init__(
        self,
        method: str = "robult",
        *,
        max_epochs: int = 60,
        patience: int = 15,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 128,
        val_fraction: float = 0.1,
        seed: int = 0,
        num_threads: int | None = None,
        progress: bool = True,
        modalities: Any = None,
        config: str | Path | None = None,
        config_overrides: Mapping[str, Any] | None = None,
        out_dir: str | Path | None = None,
    ) -> None:
        self.method = method
        self.max_epochs = max_epochs
        self.patience = patience
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.seed = seed
        self.num_threads = num_threads
        self.progress = progress
        self.modalities = modalities
        self.config = config
        self.config_overrides = config_overrides
        self.out_dir = out_dir

    # ------------------------------------------------------------------------------------------------ config
    def _run_config(self, out_dir: Path, name: str) -> Any:
        """The run config: ``config`` (a YAML file) or the defaults, these options, then ``config_overrides``."""
        from robult.config import apply_settings, load_config, validate_config

        data = load_config(self.config).model_dump(mode="json")
        train = {
            "method": self.method,
            "max_epochs": self.max_epochs,
            "patience": self.patience,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "progress": self.progress,
            "label_ratio": 1.0,  # every labeled row is used; -1 / NaN rows are the unlabeled ones
        }
        if self.num_threads is not None:
            train["num_threads"] = self.num_threads
        data["train"].update(train)
        data["dataset"].update({"name": name, "val_fraction": self.val_fraction})
        data["name"] = name
        data["out_dir"] = str(out_dir)
        apply_settings(data, dict(self.config_overrides or {}), "config_overrides")
        return validate_config(data, f"{type(self).__name__} options")

    # ---------------------------------------------------------------------------------------------- inputs
    def _inputs(self, X: Any, present: Any, fitting: bool) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
        raw = _as_inputs(X, self.modalities)
        if not raw:
            raise ValueError("X: no modality given")
        if fitting:
            names = list(raw)
            missing = [k for k, v in raw.items() if v is None]
            if missing:
                raise ValueError(f"X: modality {missing[0]!r} is None; fit needs every modality (NaN rows = missing)")
        else:
            names = list(self.modality_names_)
            unknown = sorted(set(raw) - set(names))
            if unknown:
                raise ValueError(f"X: unknown modality {unknown[0]!r}; the model knows {names}")
        given = {k: _float_rows(k, v) for k, v in raw.items() if v is not None}
        if not given:
            raise ValueError(f"X: every modality is None; give at least one of {names}")
        rows = {k: len(v) for k, v in given.items()}
        n = next(iter(rows.values()))
        for k, r in rows.items():
            if r != n:
                raise ValueError(f"X: modality {k!r} has {r} rows, modality {next(iter(rows))!r} has {n}")
        if not fitting:
            for spec in self.predictor_.modalities:
                x = given.get(spec.name)
                if x is not None and tuple(x.shape[1:]) != tuple(spec.shape):
                    raise ValueError(
                        f"X: modality {spec.name!r} has per-row shape {tuple(x.shape[1:])}, the model was fitted on "
                        f"{tuple(spec.shape)}"
                    )
        mask = _presence(given, names, n, present)
        return given, mask, n

    def _encode_target(self, y: Any, n: int) -> tuple[np.ndarray, np.ndarray, Any]:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------- fit
    def fit(self, X: Any, y: Any, present: Any = None) -> _RobultEstimator:
        """Train on ``X`` (see the module docstring) and ``y`` (-1 / NaN: unlabeled); returns ``self``."""
        from robult.data.dataset import MultimodalDataset
        from robult.data.registry import DatasetBundle, default_metric
        from robult.data.splits import strata, stratified_split
        from robult.inference import load
        from robult.specs import ModalitySpec
        from robult.training.run import IN_MEMORY, train_run

        inputs, mask, n = self._inputs(X, present, fitting=True)
        target, labeled, task = self._encode_target(y, n)
        names = list(inputs)
        specs = [ModalitySpec(name, "vector" if x.ndim == 2 else "sequence", x.shape[1:]) for name, x in inputs.items()]
        if any(s.kind.value != "vector" for s in specs):
            raise ValueError("X: every modality must be 2-D [N, features] (vector modalities)")
        filled = {
            k: np.where(mask[:, [m]], np.nan_to_num(v), 0.0).astype(np.float32)
            for m, (k, v) in enumerate(inputs.items())
        }
        lab = np.flatnonzero(labeled)
        if len(lab) < 2:
            raise ValueError(f"y: {len(lab)} labeled rows; fit needs at least 2 (one to train on, one to validate)")
        _, val_pos = stratified_split(strata(target[lab], task), self.val_fraction, seed=self.seed + 1)
        val = lab[val_pos]
        train = np.setdiff1d(np.arange(n), val)
        full = MultimodalDataset(
            specs,
            task,
            {k: torch.from_numpy(v) for k, v in filled.items()},
            torch.from_numpy(target),
            present=torch.from_numpy(mask),
            labeled=torch.from_numpy(labeled),
            source_rows=torch.arange(n),
        )
        name = "sklearn"
        bundle = DatasetBundle(
            name=name,
            modalities=specs,
            task=task,
            primary_metric=default_metric(task),
            train=full.subset(train),
            val=full.subset(val),
            test=full.subset(val),  # not scored (evaluate_test=False); the bundle needs one
            source=IN_MEMORY,
            notes={"split": f"validation: stratified {self.val_fraction:g} of the labeled rows (seed {self.seed + 1})"},
        )
        own = self.out_dir is None
        root = Path(tempfile.mkdtemp(prefix="robult-fit-")) if own else Path(self.out_dir)
        cfg = self._run_config(root, self._run_name(root, name))
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*has class.*single class.*")
                result = train_run(cfg, bundle=bundle, evaluate_test=False)
            self.predictor_ = load(result.run_dir)
        finally:
            if own:
                shutil.rmtree(root, ignore_errors=True)
        self.run_dir_ = None if own else result.run_dir
        self.modality_names_ = names
        self.n_features_in_ = sum(int(np.prod(inputs[k].shape[1:])) for k in names)
        self.best_score_ = result.best_score
        self.best_epoch_ = result.best_epoch
        self.labels_used_ = dict(result.labels)
        return self

    def _run_name(self, root: Path, name: str) -> str:
        """``<name>-<method>-s<seed>``, with ``-2``, ``-3``, ... when ``out_dir`` already holds that run."""
        base = f"{name}-{self.method}-s{self.seed}"
        candidate, k = base, 1
        while (root / candidate).exists():
            k += 1
            candidate = f"{base}-{k}"
        return candidate

    def _prediction(self, X: Any, present: Any) -> Any:
        check_is_fitted(self, "predictor_")
        inputs, mask, _ = self._inputs(X, present, fitting=False)
        return self.predictor_.predict(inputs, mask)

    def save(self, path: str | Path) -> Path:
        """Write the fitted model as a model artefact directory (``robult.load(path)``, ``robult predict path``)."""
        check_is_fitted(self, "predictor_")
        return self.predictor_.save(path)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.non_deterministic = False
        return tags


class RobultClassifier(ClassifierMixin, _RobultEstimator):
    """A multimodal classifier for scarce labels and missing modalities (see :mod:`robult.estimator`).

    Args:
        method: the method (``robult config show`` lists them; ``docs/baselines.md``).
        max_epochs, patience, lr, weight_decay, batch_size, seed, num_threads, progress: ``train.<key>``.
        val_fraction: share of the labeled rows held out to select the best epoch (``dataset.val_fraction``).
        modalities: how a 2-D ``X`` splits into modalities: ``{name: columns}`` or a list of widths.
        config: a YAML run config to start from (these options and ``config_overrides`` apply over it).
        config_overrides: dotted config keys to set, e.g. ``{"model.hidden_dim": 64, "loss.lambda_rec": 0.1}``.
        out_dir: keep the training run (logs, checkpoints, model artefact) under this directory; default: a
            temporary directory removed after ``fit`` (the model stays in memory; ``save`` writes it).

    Attributes:
        classes_: the class labels (``y``'s labeled values, sorted).
        predictor_: the trained :class:`robult.inference.Predictor`.
        modality_names_: the modality names, in order.
    """

    def _encode_target(self, y: Any, n: int) -> tuple[np.ndarray, np.ndarray, Any]:
        from robult.specs import TaskSpec

        y = np.asarray(y)
        if y.shape != (n,):
            raise ValueError(f"y: shape {y.shape}, expected ({n},) (one label per row of X; -1 = unlabeled)")
        if y.dtype.kind == "f":
            if np.isnan(y).any():
                raise ValueError("y: NaN label; a classifier marks unlabeled rows with -1")
            if not np.all(y == np.round(y)):
                raise ValueError("y: fractional label; use RobultRegressor for continuous targets")
            y = y.astype(np.int64)
        labeled = ~(y == UNLABELED) if y.dtype.kind in "iub" else ~(y.astype(str) == str(UNLABELED))
        classes = np.unique(y[labeled])
        if len(classes) < 2:
            raise ValueError(f"y: {len(classes)} class among the labeled rows; a classifier needs at least 2")
        self.classes_ = classes
        target = np.full(n, -1, dtype=np.int64)
        target[labeled] = np.searchsorted(classes, y[labeled])
        task = TaskSpec("multiclass", num_classes=len(classes), label_names=tuple(str(c) for c in classes))
        return target, labeled, task

    def predict(self, X: Any, present: Any = None) -> np.ndarray:
        """The predicted class of every row (a value of ``classes_``), whatever modalities it has."""
        return self.classes_[self._prediction(X, present).labels]

    def predict_proba(self, X: Any, present: Any = None) -> np.ndarray:
        """Class probabilities ``[N, len(classes_)]``, columns in ``classes_`` order."""
        return self._prediction(X, present).probabilities

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy on the labeled rows (``y != -1``)."""
        y = np.asarray(y)
        keep = ~(y.astype(str) == str(UNLABELED))
        pred = self.predict(X)
        w = None if sample_weight is None else np.asarray(sample_weight)[keep]
        return float(np.average(pred[keep] == y[keep], weights=w))


class RobultRegressor(RegressorMixin, _RobultEstimator):
    """A multimodal regressor for scarce labels and missing modalities; ``y`` NaN marks an unlabeled row. Options as
    :class:`RobultClassifier`."""

    def _encode_target(self, y: Any, n: int) -> tuple[np.ndarray, np.ndarray, Any]:
        from robult.specs import TaskSpec

        y = np.asarray(y, dtype=np.float32)
        if y.shape != (n,):
            raise ValueError(f"y: shape {y.shape}, expected ({n},) (one target per row of X; NaN = unlabeled)")
        labeled = ~np.isnan(y)
        if np.isinf(y[labeled]).any():
            raise ValueError(f"y: row {int(np.flatnonzero(np.isinf(y))[0])} is infinite")
        return y, labeled, TaskSpec("regression")

    def predict(self, X: Any, present: Any = None) -> np.ndarray:
        """The predicted value of every row, whatever modalities it has."""
        return self._prediction(X, present).values.reshape(-1)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """R² on the labeled rows (``y`` not NaN)."""
        from sklearn.metrics import r2_score

        y = np.asarray(y, dtype=np.float64)
        keep = ~np.isnan(y)
        w = None if sample_weight is None else np.asarray(sample_weight)[keep]
        return float(r2_score(y[keep], self.predict(X)[keep], sample_weight=w))
