"""The model artefact (``<run>/model/``): writing it when a run ends, reading and checking it back.

Artefact layout (every file listed with its SHA-256 in ``manifest.json``, which is written last)::

    model/
      manifest.json              format, format version, file -> SHA-256
      model.json                 robult / torch versions, method, dataset, task (kind, classes, label names),
                                 modality specs, normalisation dtypes, user-encoder modalities, best epoch
      config.yaml                the run's resolved config (rebuilds the architecture)
      weights.safetensors        the model's state dict (no pickle)
      normalization.safetensors  per-modality ``mean`` / ``std`` of the training split's z-score (when the loader
                                 fitted one)

Reading never unpickles (safetensors, JSON, YAML only), checks every file's SHA-256 and refuses an artefact of
another format version with one line. Weights are rebuilt with :func:`robult.methods.build_method` from the saved
config, so reading needs neither Lightning nor the training data; :func:`robult.inference.load` wraps what
:func:`read_artefact` returns in a :class:`robult.inference.Predictor`.
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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from robult.specs import ModalitySpec, TaskSpec
from robult.utils.io import ChecksumError, atomic_open, sha256_file

MODEL_DIR = "model"
ARTEFACT_FORMAT = "robult-model"
ARTEFACT_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INFO = "model.json"
CONFIG = "config.yaml"
WEIGHTS = "weights.safetensors"
NORMALIZATION = "normalization.safetensors"


class ArtefactError(ValueError):
    """A model artefact that cannot be used, as one line naming the file at fault."""


def _task_dict(task: TaskSpec) -> dict[str, Any]:
    return {
        "kind": task.kind.value,
        "num_classes": task.num_classes,
        "target_range": None if task.target_range is None else list(task.target_range),
        "label_names": list(task.label_names),
    }


# --------------------------------------------------------------------------------------------- writing


def _config_yaml(config: Any) -> str:
    from robult.config import config_to_yaml

    return config_to_yaml(config)


def _safetensors_bytes(tensors: Mapping[str, Tensor], metadata: dict[str, str] | None = None) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, metadata=metadata)


def write_artefact(
    directory: str | Path,
    state: Mapping[str, Tensor],
    normalization: Mapping[str, tuple[Tensor, Tensor]],
    info: Mapping[str, Any],
    config: Any,
) -> Path:
    """Write an artefact of the weights ``state``, the ``normalization`` statistics, ``info`` (``model.json``, the
    format added) and the resolved ``config`` into a temporary sibling directory, then rename it onto
    ``directory`` (an earlier artefact there is replaced; any other existing non-empty directory is refused)."""
    config_yaml = _config_yaml(config)
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
    return write_artefact(Path(run_dir) / MODEL_DIR, model.state_dict(), stats, info, cfg)


# --------------------------------------------------------------------------------------------- loading


def model_dir(path: Path) -> Path:
    """The model directory ``path`` names: itself (it holds a manifest) or a run directory's ``model/``; a run
    without one, or any other directory, is an :class:`ArtefactError` saying what to do."""
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


@dataclass
class Artefact:
    """What :func:`read_artefact` returns: the parts a :class:`robult.inference.Predictor` is built from.

    Attributes:
        model: the rebuilt model with the saved weights, in eval mode (on the CPU).
        modalities: its modality specs, in order.
        task: its task spec.
        config: the run's resolved config (:class:`robult.config.RunConfig`).
        normalization: modality name -> ``(mean, std)`` of the training split's z-score.
        info: the artefact's ``model.json``.
    """

    model: nn.Module
    modalities: list[ModalitySpec]
    task: TaskSpec
    config: Any
    normalization: dict[str, tuple[Tensor, Tensor]]
    info: dict[str, Any]


def read_artefact(path: str | Path, encoders: Mapping[str, nn.Module] | None = None) -> Artefact:
    """Read and check the model artefact at ``path`` (a run directory or its ``model/``) and rebuild its model with
    the user ``encoders`` it was trained with; arguments and errors as :func:`robult.inference.load`."""
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
    return Artefact(model, modalities, task, cfg, normalization, info)
