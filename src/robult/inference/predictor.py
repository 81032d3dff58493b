"""The model artefact (``<run>/model/``) and the :class:`Predictor` that answers for any missing-modality pattern.

Artefact layout (every file listed with its SHA-256 in ``manifest.json``, which is written last)::

    model/
      manifest.json              format, format version, file -> SHA-256
      model.json                 robult / torch versions, method, dataset, task (kind, classes, label names),
                                 modality specs, normalisation dtypes, user-encoder modalities, best epoch
      config.yaml                the run's resolved config (rebuilds the architecture)
      weights.safetensors        the model's state dict (no pickle)
      normalization.safetensors  per-modality ``mean`` / ``std`` of the training split's z-score (when the loader
                                 fitted one)

Loading never unpickles (safetensors, JSON, YAML only), checks every file's SHA-256 and refuses an artefact of
another format version with one line. Weights are rebuilt with :func:`robult.methods.build_method` from the saved
config, so a predictor needs neither Lightning nor the training data.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from robult.batch import Batch
from robult.specs import ModalityKind, ModalitySpec, TaskKind, TaskSpec
from robult.utils.io import ChecksumError, atomic_open, sha256_file

MODEL_DIR = "model"
ARTEFACT_FORMAT = "robult-model"
ARTEFACT_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INFO = "model.json"
CONFIG = "config.yaml"
WEIGHTS = "weights.safetensors"
NORMALIZATION = "normalization.safetensors"
DEFAULT_BATCH_SIZE = 4096


class ArtefactError(ValueError):
    """A model artefact that cannot be used, as one line naming the file at fault."""


# ---------------------------------------------------------------------------------------------- predictions


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return torch.sigmoid(torch.from_numpy(x)).numpy()


@dataclass
class Prediction:
    """What :meth:`Predictor.predict` returns (numpy arrays, one row per input sample).

    Attributes:
        task: the task spec (kind, classes, label names).
        modality_names: the model's modalities, in the column order of ``present``.
        scores: raw model outputs ``[N, K]``: logits (multiclass ``K`` classes; binary ``K = 1``; multilabel ``K``
            labels) or values (regression, ``K = 1``), aggregated over each sample's present modalities exactly as
            ``robult evaluate`` does.
        present: ``bool [N, M]``, the presence mask that was applied.
        per_modality_scores: modality name -> ``[N, K]`` raw outputs of that modality alone (NaN where it is
            absent); only when ``per_modality=True`` was asked.
    """

    task: TaskSpec
    modality_names: list[str]
    scores: np.ndarray
    present: np.ndarray
    per_modality_scores: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def _transform(self, scores: np.ndarray) -> np.ndarray:
        kind = self.task.kind
        if kind == TaskKind.MULTICLASS:
            return torch.softmax(torch.from_numpy(scores), dim=-1).numpy()
        if kind == TaskKind.BINARY:
            return _sigmoid(scores[:, 0])
        if kind == TaskKind.MULTILABEL:
            return _sigmoid(scores)
        return scores[:, 0]

    @property
    def probabilities(self) -> np.ndarray | None:
        """Multiclass: ``[N, K]`` softmax; binary: ``[N]`` probability of class 1; multilabel: ``[N, L]`` per-label
        probabilities; regression: ``None``."""
        return None if self.task.kind == TaskKind.REGRESSION else self._transform(self.scores)

    @property
    def labels(self) -> np.ndarray | None:
        """Predicted class ids ``[N]`` (multiclass: argmax; binary: logit > 0) or 0/1 ``[N, L]`` (multilabel:
        logit > 0), the decisions ``robult evaluate`` scores; ``None`` for regression."""
        kind = self.task.kind
        if kind == TaskKind.MULTICLASS:
            return self.scores.argmax(axis=1).astype(np.int64)
        if kind == TaskKind.BINARY:
            return (self.scores[:, 0] > 0).astype(np.int64)
        if kind == TaskKind.MULTILABEL:
            return (self.scores > 0).astype(np.int64)
        return None

    @property
    def values(self) -> np.ndarray | None:
        """Regression: the predicted values ``[N]``; ``None`` otherwise."""
        return self.scores[:, 0] if self.task.kind == TaskKind.REGRESSION else None

    @property
    def class_names(self) -> list[str]:
        """Names of the classes (multiclass, binary) or labels (multilabel): the task's ``label_names`` when it has
        them, else the ids as text."""
        k = self.task.num_classes if self.task.kind != TaskKind.REGRESSION else 0
        names = list(self.task.label_names)
        return names if len(names) == k else [str(i) for i in range(k)]

    def per_modality(self) -> dict[str, np.ndarray]:
        """Modality name -> that modality's own probabilities (as :attr:`probabilities`) or values, NaN where the
        modality is absent. Needs ``predict(..., per_modality=True)``."""
        if self.per_modality_scores is None:
            raise ValueError("per-modality predictions were not computed; call predict(..., per_modality=True)")
        return {name: self._transform(s) for name, s in self.per_modality_scores.items()}


# ------------------------------------------------------------------------------------------------ predictor


def _as_tensor(value: Any, what: str) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach().cpu()
    arr = np.asarray(value)
    if arr.dtype == object:
        raise ValueError(f"{what}: expected a numeric array, got an object array")
    # a read-only array (a memory map opened "r") is copied: torch tensors must be writable
    return torch.from_numpy(np.ascontiguousarray(arr) if arr.flags.writeable else np.array(arr, order="C"))


def _rows(value: Any, start: int, stop: int, what: str) -> Tensor:
    """Rows ``start:stop`` of an array, tensor or memory map (only those rows are read)."""
    return _as_tensor(value[start:stop], what)


def _num_rows(value: Any, what: str) -> int:
    shape = getattr(value, "shape", None)
    if shape is None:
        value = np.asarray(value)
        shape = value.shape
    if len(shape) == 0:
        raise ValueError(f"{what}: expected one row per sample, got a scalar")
    return int(shape[0])


def _task_dict(task: TaskSpec) -> dict[str, Any]:
    return {
        "kind": task.kind.value,
        "num_classes": task.num_classes,
        "target_range": None if task.target_range is None else list(task.target_range),
        "label_names": list(task.label_names),
    }


class Predictor:
    """A trained model ready to predict from raw inputs with any modalities missing.

    Build one with :func:`load` (``robult.load``); a run writes its artefact to ``<run>/model/`` when it ends.

    Args:
        model: the trained model (a ``RobultModel``, ``LateFusionModel`` or any model satisfying
            :class:`robult.evaluation.evaluate.SubsetPredictor`).
        modalities: its modality specs, in order.
        task: its task spec.
        config: the run's resolved config (:class:`robult.config.RunConfig`).
        normalization: modality name -> ``(mean, std)`` of the training split's z-score, applied to raw inputs.
        info: the artefact's ``model.json`` (versions, method, dataset, ...).
    """

    def __init__(
        self,
        model: nn.Module,
        modalities: Sequence[ModalitySpec],
        task: TaskSpec,
        config: Any,
        normalization: Mapping[str, tuple[Any, Any]] | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.modalities = list(modalities)
        self.task = task
        self.config = config
        self.info = dict(info or {})
        self.normalization: dict[str, tuple[Tensor, Tensor]] = {}
        names = self.modality_names
        for name, (mean, std) in (normalization or {}).items():
            if name not in names:
                raise ValueError(f"normalisation given for unknown modality {name!r}; modalities are {names}")
            self.normalization[name] = (_as_tensor(mean, f"{name} mean"), _as_tensor(std, f"{name} std"))
        self._all = torch.ones(1, len(names), dtype=torch.bool)

    @property
    def modality_names(self) -> list[str]:
        return [s.name for s in self.modalities]

    @property
    def device(self) -> torch.device:
        p = next(iter(self.model.parameters()), None)
        return p.device if p is not None else torch.device("cpu")

    def to(self, device: str | torch.device) -> Predictor:
        """Move the model to ``device`` (inputs are moved per batch)."""
        self.model.to(device)
        return self

    def __repr__(self) -> str:
        return (
            f"Predictor(method={self.info.get('method')!r}, task={self.task.kind.value}, "
            f"modalities={self.modality_names})"
        )

    # ---------------------------------------------------------------------------------------------- inputs
    def _present(self, present: Any, inputs: Mapping[str, Any], n: int) -> np.ndarray:
        names = self.modality_names
        default = np.zeros((n, len(names)), dtype=bool)
        for m, name in enumerate(names):
            default[:, m] = name in inputs
        if present is None:
            return default
        if isinstance(present, Mapping):
            unknown = sorted(set(present) - set(names))
            if unknown:
                raise ValueError(f"present: unknown modality {unknown[0]!r}; the model knows {names}")
            out = default
            for m, name in enumerate(names):
                if name in present:
                    col = np.asarray(_as_tensor(present[name], f"present[{name!r}]").numpy())
                    if col.shape != (n,):
                        raise ValueError(f"present[{name!r}] has shape {col.shape}, expected ({n},)")
                    out[:, m] = col.astype(bool)
            return out
        arr = _as_tensor(present, "present").numpy()
        if arr.shape != (n, len(names)):
            raise ValueError(
                f"present has shape {tuple(arr.shape)}, expected ({n}, {len(names)}): one column per modality in "
                f"the order {names}"
            )
        if arr.dtype != bool and not np.isin(arr, (0, 1)).all():
            raise ValueError("present must be boolean or 0/1")
        return arr.astype(bool)

    def _prepare(
        self, spec: ModalitySpec, m: int, x: Tensor, col: Tensor, lengths: Tensor | None, start: int
    ) -> Tensor:
        """Type, finiteness check (present rows), zero-filled non-finite absent entries, normalisation."""
        name = spec.name
        spec.check_shape(tuple(int(s) for s in x.shape[1:]), where="input: ")
        if spec.kind == ModalityKind.TOKENS:
            if x.is_floating_point() or x.is_complex():
                raise ValueError(f"modality {name!r}: tokens need an integer array, got {x.dtype}")
            return x.long()
        if x.is_complex():
            raise ValueError(f"modality {name!r}: expected real numbers, got {x.dtype}")
        x = x.float()
        bad = ~torch.isfinite(x)
        if spec.is_sequential and lengths is not None:  # padding beyond a sample's length is never read
            pad = torch.arange(x.shape[1])[None, :] >= lengths[:, None]
            bad = bad & ~pad.reshape(*pad.shape, *([1] * (x.ndim - 2)))
        bad_rows = bad.reshape(x.shape[0], -1).any(dim=1) & col
        if bad_rows.any():
            row = start + int(bad_rows.nonzero()[0, 0])
            raise ValueError(
                f"modality {name!r}: row {row} holds NaN or Inf but is marked present; clean it or mark it absent "
                f"(present[{row}, {m}] = False)"
            )
        x = torch.where(torch.isfinite(x), x, 0.0)
        stats = self.normalization.get(name)
        if stats is not None:
            mean, std = stats
            x = ((x.to(mean.dtype) - mean) / std).to(torch.float32)
        return x

    def _batch(
        self,
        inputs: Mapping[str, Any],
        present: np.ndarray,
        lengths: Mapping[str, Any],
        start: int,
        stop: int,
        device: torch.device,
    ) -> Batch:
        b = stop - start
        pres = torch.from_numpy(np.ascontiguousarray(present[start:stop]))
        xs: dict[str, Tensor] = {}
        lens: dict[str, Tensor] = {}
        for m, spec in enumerate(self.modalities):
            col = pres[:, m]
            ln = None
            if spec.is_sequential:
                if spec.name in lengths:
                    ln = _rows(lengths[spec.name], start, stop, f"lengths[{spec.name!r}]").long()
                    if ln.shape != (b,):
                        raise ValueError(f"lengths[{spec.name!r}] must be one integer per sample")
                elif spec.name in inputs:
                    t = int(inputs[spec.name].shape[1])
                    ln = torch.full((b,), t, dtype=torch.long)
                else:
                    ln = torch.ones(b, dtype=torch.long)
            if spec.name in inputs:
                x = _rows(inputs[spec.name], start, stop, f"modality {spec.name!r}")
                if ln is not None:
                    t = int(x.shape[1]) if x.ndim > 1 else 0
                    bad = col & ((ln < 1) | (ln > t))
                    if bad.any():
                        row = int(bad.nonzero()[0, 0])
                        raise ValueError(
                            f"lengths[{spec.name!r}]: row {start + row} has length {int(ln[row])}, outside [1, {t}]"
                        )
                    ln = torch.where(col, ln, torch.ones_like(ln))
                x = self._prepare(spec, m, x, col, ln, start)
            else:
                shape = [1 if s is None else int(s) for s in spec.shape]
                dtype = torch.long if spec.kind == ModalityKind.TOKENS else torch.float32
                x = torch.zeros(b, *shape, dtype=dtype)
            xs[spec.name] = x.to(device)
            if ln is not None:
                lens[spec.name] = ln.to(device)
        return Batch(
            inputs=xs,
            present=pres.to(device),
            target=torch.zeros(b, device=device),
            labeled=torch.zeros(b, dtype=torch.bool, device=device),
            lengths=lens,
        )

    # --------------------------------------------------------------------------------------------- predict
    @torch.no_grad()
    def predict(
        self,
        inputs: Mapping[str, Any],
        present: Any | None = None,
        *,
        lengths: Mapping[str, Any] | None = None,
        per_modality: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> Prediction:
        """Predict from raw inputs, for any per-sample pattern of missing modalities.

        Args:
            inputs: modality name -> array or tensor ``[N, *shape]`` of raw values (the training split's
                normalisation is applied here). A modality may be left out (absent for every sample).
            present: which entries are present: ``bool [N, M]`` (columns in :attr:`modality_names` order) or a
                mapping name -> ``bool [N]``; default: a modality is present wherever it is given. Values of absent
                entries are never read (NaN allowed); NaN or Inf in a present entry is an error naming the modality
                and row.
            lengths: modality name -> ``[N]`` valid lengths for sequence / tokens modalities (default: full).
            per_modality: also return each modality's own prediction (:meth:`Prediction.per_modality`).
            batch_size: samples per forward pass (memory maps are read ``batch_size`` rows at a time).

        Returns:
            a :class:`Prediction` (probabilities / labels / values, per-modality outputs on request).
        """
        names = self.modality_names
        if not inputs:
            raise ValueError(f"no input given; pass at least one of the modalities {names}")
        unknown = sorted(set(inputs) - set(names))
        if unknown:
            raise ValueError(f"unknown modality {unknown[0]!r} in inputs; the model knows {names}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        lengths = dict(lengths or {})
        bad_len = sorted(set(lengths) - {s.name for s in self.modalities if s.is_sequential})
        if bad_len:
            raise ValueError(f"lengths given for {bad_len[0]!r}, which is not a sequence or tokens modality")
        rows = {name: _num_rows(x, f"modality {name!r}") for name, x in inputs.items()}
        first = next(iter(rows))
        n = rows[first]
        for name, k in rows.items():
            if k != n:
                raise ValueError(f"modality {name!r} has {k} rows, modality {first!r} has {n}")
        mask = self._present(present, inputs, n)
        for m, name in enumerate(names):
            if name not in inputs and mask[:, m].any():
                row = int(np.flatnonzero(mask[:, m])[0])
                raise ValueError(f"modality {name!r} is marked present in row {row} but has no input")
        empty = np.flatnonzero(~mask.any(axis=1))
        if len(empty):
            raise ValueError(
                f"row {int(empty[0])} has no modality present ({len(empty)} such rows); every sample needs at least "
                f"one of {names}"
            )
        device = self.device
        model = self.model
        was_training = model.training
        model.eval()
        scores: list[Tensor] = []
        per: list[Tensor] = []
        try:
            for start in range(0, n, batch_size):
                stop = min(n, start + batch_size)
                batch = self._batch(inputs, mask, lengths, start, stop, device)
                output = model(batch, with_reconstruction=False, validate=False)
                sp = model.predict_subsets(output, self._all)
                scores.append(sp.predictions[0].float().cpu())
                if per_modality:
                    logits = output.logits.float().masked_fill(~batch.present[..., None], math.nan)
                    per.append(logits.cpu())
        finally:
            model.train(was_training)
        k = self.task.num_outputs
        score = torch.cat(scores).numpy() if scores else np.zeros((0, k), dtype=np.float32)
        per_scores = None
        if per_modality:
            allper = torch.cat(per).numpy() if per else np.zeros((0, len(names), k), dtype=np.float32)
            per_scores = {name: allper[:, m] for m, name in enumerate(names)}
        return Prediction(self.task, names, score, mask, per_scores)

    # ------------------------------------------------------------------------------------------------ save
    def save(self, path: str | Path) -> Path:
        """Write this predictor as a model artefact directory (see the module docstring); returns the path."""
        state = self.model.state_dict()
        return _write_artefact(Path(path), state, self.normalization, self.info, _config_yaml(self.config))


# --------------------------------------------------------------------------------------------- writing


def _config_yaml(config: Any) -> str:
    from robult.config import config_to_yaml

    return config_to_yaml(config)


def _safetensors_bytes(tensors: Mapping[str, Tensor], metadata: dict[str, str] | None = None) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, metadata=metadata)


def _write_artefact(
    directory: Path,
    state: Mapping[str, Tensor],
    normalization: Mapping[str, tuple[Tensor, Tensor]],
    info: Mapping[str, Any],
    config_yaml: str,
) -> Path:
    """Write the artefact into a temporary sibling directory, then rename it onto ``directory`` (an earlier
    artefact there is replaced; any other existing non-empty directory is refused)."""
    directory = Path(directory)
    foreign = directory.is_dir() and any(directory.iterdir()) and not (directory / MANIFEST).is_file()
    if foreign or (directory.exists() and not directory.is_dir()):
        raise FileExistsError(f"{directory}: exists and is not a robult model directory; choose another path")
    norm_info = {
        name: {"dtype": str(mean.dtype).removeprefix("torch."), "shape": list(mean.shape)}
        for name, (mean, _std) in normalization.items()
    }
    info = {
        **dict(info),
        "format": ARTEFACT_FORMAT,
        "format_version": ARTEFACT_FORMAT_VERSION,
        "normalization": norm_info,
    }
    files: dict[str, bytes] = {
        INFO: (json.dumps(info, indent=2) + "\n").encode(),
        CONFIG: config_yaml.encode(),
        WEIGHTS: _safetensors_bytes(state, {"format": ARTEFACT_FORMAT}),
    }
    if normalization:
        tensors = {}
        for name, (mean, std) in normalization.items():
            tensors[f"{name}/mean"], tensors[f"{name}/std"] = mean, std
        files[NORMALIZATION] = _safetensors_bytes(tensors, {"format": ARTEFACT_FORMAT})
    parent = directory.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=parent))
    try:
        for name, data in files.items():
            with atomic_open(tmp / name, "wb") as fh:
                fh.write(data)
        manifest = {
            "format": ARTEFACT_FORMAT,
            "format_version": ARTEFACT_FORMAT_VERSION,
            "files": {name: sha256_file(tmp / name) for name in files},
        }
        with atomic_open(tmp / MANIFEST, "w") as fh:
            fh.write(json.dumps(manifest, indent=2) + "\n")
        if directory.exists():
            old = parent / f".{directory.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _versions() -> dict[str, str]:
    import robult

    return {
        "robult_version": robult.__version__,
        "torch_version": torch.__version__.split("+")[0],
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _user_encoders(model: nn.Module) -> list[str]:
    """Modalities whose encoder is not one of robult's built-ins (the user's own modules, Python API)."""
    encoders = getattr(getattr(model, "encoders", None), "encoders", None)
    if not isinstance(encoders, nn.ModuleDict):
        return []
    return sorted(name for name, enc in encoders.items() if type(enc).__module__ != "robult.modules.encoders")


def write_run_model(
    run_dir: str | Path,
    model: nn.Module,
    bundle: Any,
    cfg: Any,
    *,
    encoders: Mapping[str, nn.Module] | None = None,
    best_epoch: int | None = None,
    best_val_score: float | None = None,
) -> Path:
    """Write ``<run_dir>/model/``: the trained ``model``'s weights, ``bundle``'s specs, task and fitted
    normalisation (``bundle.normalization``), the resolved ``cfg`` and the versions. Called when a run ends."""
    stats = {
        name: (torch.from_numpy(np.array(mean, copy=True)), torch.from_numpy(np.array(std, copy=True)))
        for name, (mean, std) in (getattr(bundle, "normalization", None) or {}).items()
    }
    info = {
        **_versions(),
        "method": cfg.train.method,
        "run": Path(run_dir).name,
        "dataset": bundle.name,
        "primary_metric": bundle.primary_metric,
        "task": _task_dict(bundle.task),
        "modalities": [{"name": s.name, "kind": s.kind.value, "shape": list(s.shape)} for s in bundle.modalities],
        "user_encoders": sorted(encoders) if encoders is not None else _user_encoders(model),
        "best_epoch": best_epoch,
        "best_val_score": None if best_val_score is None or math.isnan(best_val_score) else best_val_score,
    }
    return _write_artefact(Path(run_dir) / MODEL_DIR, model.state_dict(), stats, info, _config_yaml(cfg))


# --------------------------------------------------------------------------------------------- loading


def model_dir(path: Path) -> Path:
    if (path / MANIFEST).is_file():
        return path
    if (path / MODEL_DIR / MANIFEST).is_file():
        return path / MODEL_DIR
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run or model directory")
    if (path / "checkpoints").is_dir() or (path / "config.yaml").is_file():
        raise ArtefactError(
            f"{path}: the run has no model artefact ({MODEL_DIR}/{MANIFEST}); runs write one when they end — "
            f"write it for an older run with `robult export {path} --format artefact`"
        )
    raise ArtefactError(f"{path}: not a run directory or a model directory (no {MANIFEST})")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ArtefactError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(data, dict):
        raise ArtefactError(f"{path}: expected a JSON object")
    return data


def _check_format(data: Mapping[str, Any], where: Path) -> None:
    import robult

    if data.get("format") != ARTEFACT_FORMAT:
        raise ArtefactError(f"{where}: not a robult model artefact (format {data.get('format')!r})")
    version = data.get("format_version")
    if version != ARTEFACT_FORMAT_VERSION:
        written = data.get("robult_version")
        by = f" (written by robult {written})" if written else ""
        raise ArtefactError(
            f"{where}: model artefact format version {version}{by} is not supported by robult {robult.__version__}, "
            f"which reads version {ARTEFACT_FORMAT_VERSION}; use a matching robult version"
        )


def _load_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ArtefactError(f"{path}: not a readable safetensors file ({err})") from None


def _load_state(model: nn.Module, state: Mapping[str, Tensor], where: Path, method: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        what = f"lacks {missing[0]!r}" if missing else f"has the unknown tensor {unexpected[0]!r}"
        raise ArtefactError(f"{where}: does not fit the {method!r} model built from {CONFIG}: it {what}")
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise ArtefactError(
                f"{where}: tensor {k!r} has shape {tuple(v.shape)}, the model built from {CONFIG} expects "
                f"{tuple(expected[k].shape)}"
            )
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            bad = int((~torch.isfinite(v)).sum())
            raise ArtefactError(
                f"{where}: tensor {k!r} holds {bad} NaN or Inf value(s) of {v.numel()}; a model with non-finite "
                "weights predicts nothing meaningful (it diverged in training, or the file was altered): retrain it"
            )
    model.load_state_dict(state)


def load(
    path: str | Path,
    *,
    encoders: Mapping[str, nn.Module] | None = None,
    device: str | torch.device = "cpu",
) -> Predictor:
    """Load a model artefact as a :class:`Predictor` (``robult.load``).

    Args:
        path: a run directory (its ``model/`` is read) or a model directory.
        encoders: the user encoders the run was trained with (Python API), by modality name; their weights are
            restored from the artefact.
        device: where the model runs.

    Raises:
        FileNotFoundError: no such path.
        ArtefactError: (a ``ValueError``) a missing, altered or incompatible artefact, as one line naming the file.
        robult.utils.io.ChecksumError: a file whose SHA-256 differs from the manifest's.
    """
    from robult.config import ConfigError, read_yaml, validate_config
    from robult.methods import build_method

    directory = model_dir(Path(path))
    manifest = _read_json(directory / MANIFEST)
    _check_format(manifest, directory / MANIFEST)
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ArtefactError(f"{directory / MANIFEST}: no 'files' mapping")
    for required in (INFO, CONFIG, WEIGHTS):
        if required not in files:
            raise ArtefactError(f"{directory / MANIFEST}: does not list {required}")
    for name, digest in files.items():
        file = directory / name
        if Path(name).name != name or not file.is_file():
            raise ArtefactError(f"{file}: listed in {MANIFEST} but missing")
        try:
            from robult.utils.io import verify_sha256

            verify_sha256(file, str(digest))
        except ChecksumError as err:
            raise ChecksumError(f"{err}; the model artefact was altered after it was written") from None
    info = _read_json(directory / INFO)
    _check_format(info, directory / INFO)
    try:
        cfg = validate_config(read_yaml(directory / CONFIG) or {}, str(directory / CONFIG))
    except ConfigError as err:
        raise ArtefactError(str(err)) from None
    try:
        modalities = [ModalitySpec(m["name"], m["kind"], tuple(m["shape"])) for m in info["modalities"]]
        t = info["task"]
        task = TaskSpec(
            t["kind"],
            num_classes=int(t.get("num_classes") or 0),
            target_range=None if t.get("target_range") is None else tuple(t["target_range"]),
            label_names=tuple(t.get("label_names") or ()),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ArtefactError(f"{directory / INFO}: malformed modalities or task ({err})") from None
    needed = [n for n in info.get("user_encoders") or [] if n not in (encoders or {})]
    if needed:
        raise ArtefactError(
            f"{directory}: the model was trained with your own encoder for modality {needed[0]!r}; pass the same "
            f"module: robult.load(path, encoders={{{needed[0]!r}: module, ...}})"
        )
    method = cfg.train.method
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = build_method(
            method, modalities, task, cfg.model.model_dump(), cfg.loss.model_dump(), dict(encoders or {})
        )
    _load_state(model, _load_safetensors(directory / WEIGHTS), directory / WEIGHTS, method)
    normalization: dict[str, tuple[Tensor, Tensor]] = {}
    declared = info.get("normalization") or {}
    if declared:
        if NORMALIZATION not in files:
            raise ArtefactError(f"{directory / MANIFEST}: does not list {NORMALIZATION}, which {INFO} declares")
        stats = _load_safetensors(directory / NORMALIZATION)
        for name in declared:
            if f"{name}/mean" not in stats or f"{name}/std" not in stats:
                raise ArtefactError(f"{directory / NORMALIZATION}: no statistics for modality {name!r}")
            normalization[name] = (stats[f"{name}/mean"], stats[f"{name}/std"])
    model.eval()
    return Predictor(model, modalities, task, cfg, normalization, info).to(device)
