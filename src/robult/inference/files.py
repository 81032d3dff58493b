"""Prediction from files: inputs in the user format (``dataset.yaml`` + ``.npy``), predictions as CSV or Parquet.

The input directory is the documented user format (``docs/datasets.md``) with only ``modalities`` required:
``labels``, ``split``, ``task`` and the other keys may be there and are ignored; ``present`` (``bool [N, M]``, columns
in the file's modality order) is optional. A model modality the directory does not have is absent for every row.
Arrays are memory-mapped and read a batch at a time.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from robult.inference.prediction import Prediction
from robult.inference.predictor import Predictor
from robult.specs import ModalityKind, TaskKind
from robult.utils.io import atomic_open

YAML_NAME = "dataset.yaml"


@dataclass
class PredictionInputs:
    """Arrays read from an input directory, ready for :meth:`Predictor.predict`."""

    inputs: dict[str, np.ndarray]
    present: dict[str, np.ndarray] | None
    lengths: dict[str, np.ndarray]
    num_rows: int
    source: Path
    labels: Any = None  # a table's label column as read (robult.data.table.table_targets); None for a directory


def _open(path: Path, what: str, mmap: bool) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found ({what})")
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:  # EOFError: an empty file
        why = f"the file is empty or truncated: {err}" if isinstance(err, EOFError) else str(err)
        raise ValueError(f"{path} ({what}): cannot read as a .npy array ({why})") from None
    if not isinstance(arr, np.ndarray) or arr.ndim == 0:
        raise ValueError(f"{path} ({what}): expected an array with one row per sample")
    return arr


def read_prediction_inputs(path: str | Path, predictor: Predictor) -> PredictionInputs:
    """Read the inputs of ``robult predict`` from a user-format directory (or its ``dataset.yaml``), or from a table
    file (``.csv``, ``.tsv``, ``.parquet``: the format ``robult train --input`` reads, :mod:`robult.data.table`).

    Raises:
        FileNotFoundError: no ``dataset.yaml`` or a named file is missing.
        ValueError: anything malformed or not matching the model, as one line naming the file, key or modality.
    """
    from robult.config import read_yaml
    from robult.data.table import is_table, read_table_inputs
    from robult.data.user import ModalityConfig

    if is_table(path):
        table = read_table_inputs(path, predictor.modalities)
        return PredictionInputs(table.inputs, table.present, {}, table.num_rows, table.source, table.label)

    class InputConfig(BaseModel):
        model_config = ConfigDict(extra="allow")  # name, task, labels, split, ... are not needed to predict

        modalities: list[ModalityConfig] = Field(min_length=1)
        present: str | None = None

    path = Path(path).expanduser()
    yaml_path = path / YAML_NAME if path.is_dir() else path
    if not yaml_path.is_file():
        raise FileNotFoundError(f"{yaml_path}: not found (expected {YAML_NAME} in {path}; see docs/datasets.md)")
    raw = read_yaml(yaml_path)
    if not isinstance(raw, dict):
        raise ValueError(f"{yaml_path}: expected a mapping at the top level")
    try:
        config = InputConfig.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "<top level>"
        raise ValueError(f"{yaml_path}: {key}: {first['msg']}") from None
    base = yaml_path.parent
    specs = {s.name: s for s in predictor.modalities}
    inputs: dict[str, np.ndarray] = {}
    lengths: dict[str, np.ndarray] = {}
    n: int | None = None
    first_file = ""
    for mc in config.modalities:
        spec = specs.get(mc.name)
        if spec is None:
            raise ValueError(f"{yaml_path}: modality {mc.name!r} is not one of the model's {list(specs)}")
        if ModalityKind(mc.kind) != spec.kind:
            raise ValueError(
                f"{yaml_path}: modality {mc.name!r} is {mc.kind}, the model was trained on a {spec.kind.value}"
            )
        file = base / mc.file
        arr = _open(file, f"modality {mc.name!r}", mmap=True)
        try:
            spec.check_shape(tuple(int(s) for s in arr.shape[1:]))
        except ValueError as err:
            raise ValueError(f"{file}: {err}") from None
        if n is None:
            n, first_file = int(arr.shape[0]), str(file)
        elif arr.shape[0] != n:
            raise ValueError(f"{file}: {arr.shape[0]} rows, but {first_file} has {n}")
        inputs[mc.name] = arr
        if mc.lengths is not None:
            len_file = base / mc.lengths
            ln = _open(len_file, f"lengths of modality {mc.name!r}", mmap=False)
            if ln.shape != (n,) or ln.dtype.kind not in "iu":
                raise ValueError(f"{len_file}: expected integers of shape ({n},), got {ln.dtype} {ln.shape}")
            lengths[mc.name] = ln
    assert n is not None
    present = None
    if config.present is not None:
        pfile = base / config.present
        pm = _open(pfile, "present", mmap=False)
        m = len(config.modalities)
        if pm.shape != (n, m):
            order = [mc.name for mc in config.modalities]
            raise ValueError(f"{pfile}: shape {pm.shape}, expected ({n}, {m}) = (samples, modalities {order})")
        if pm.dtype != bool and not np.isin(pm, (0, 1)).all():
            raise ValueError(f"{pfile}: values must be boolean or 0/1")
        present = {mc.name: pm[:, j].astype(bool) for j, mc in enumerate(config.modalities)}
    return PredictionInputs(inputs, present, lengths, n, yaml_path)


def _fmt(value: float) -> str:
    return f"{float(value):.9g}"  # round-trips float32


def prediction_rows(prediction: Prediction, index: np.ndarray | None = None) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of a prediction table: ``index``, the predicted label and the probabilities (multiclass,
    binary, multilabel) or the ``value`` (regression), and ``present`` (the modalities used, joined by ``+``)."""
    n = len(prediction)
    index = np.arange(n) if index is None else np.asarray(index)
    kind = prediction.task.kind
    names = prediction.class_names
    used = [
        "+".join(m for m, on in zip(prediction.modality_names, row, strict=True) if on) for row in prediction.present
    ]
    if kind == TaskKind.REGRESSION:
        values = prediction.values
        assert values is not None
        return ["index", "value", "present"], [
            [int(i), _fmt(v), u] for i, v, u in zip(index, values, used, strict=True)
        ]
    probs, labels = prediction.probabilities, prediction.labels
    assert probs is not None and labels is not None
    if kind == TaskKind.BINARY:
        header = ["index", "label", "probability", "present"]
        return header, [
            [int(i), names[int(lab)], _fmt(p), u] for i, lab, p, u in zip(index, labels, probs, used, strict=True)
        ]
    cols = [f"prob_{c}" for c in names]
    if kind == TaskKind.MULTILABEL:
        header = ["index", "labels", *cols, "present"]
        rows = []
        for i, lab, p, u in zip(index, labels, probs, used, strict=True):
            chosen = ";".join(c for c, on in zip(names, lab, strict=True) if on)
            rows.append([int(i), chosen, *(_fmt(v) for v in p), u])
        return header, rows
    header = ["index", "label", *cols, "present"]
    return header, [
        [int(i), names[int(lab)], *(_fmt(v) for v in p), u]
        for i, lab, p, u in zip(index, labels, probs, used, strict=True)
    ]


def prediction_columns(prediction: Prediction, index: np.ndarray | None = None) -> dict[str, Any]:
    """The columns of :func:`prediction_rows` as typed arrays (``index`` int64, probabilities and values float32,
    labels and ``present`` text), for Parquet."""
    n = len(prediction)
    index = np.arange(n, dtype=np.int64) if index is None else np.asarray(index, dtype=np.int64)
    names = prediction.class_names
    used = [
        "+".join(m for m, on in zip(prediction.modality_names, row, strict=True) if on) for row in prediction.present
    ]
    kind = prediction.task.kind
    cols: dict[str, Any] = {"index": index}
    if kind == TaskKind.REGRESSION:
        cols["value"] = np.asarray(prediction.values, dtype=np.float32)
    else:
        probs, labels = prediction.probabilities, prediction.labels
        assert probs is not None and labels is not None
        if kind == TaskKind.BINARY:
            cols["label"] = [names[int(lab)] for lab in labels]
            cols["probability"] = np.asarray(probs, dtype=np.float32)
        else:
            if kind == TaskKind.MULTILABEL:
                cols["labels"] = [";".join(c for c, on in zip(names, lab, strict=True) if on) for lab in labels]
            else:
                cols["label"] = [names[int(lab)] for lab in labels]
            for j, c in enumerate(names):
                cols[f"prob_{c}"] = np.asarray(probs[:, j], dtype=np.float32)
    cols["present"] = used
    return cols


def output_format(path: str | Path) -> str:
    """``"csv"`` or ``"parquet"`` from the file name; a ``ValueError`` for another extension, or for Parquet when
    pyarrow is not installed (checked before predicting)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix != ".parquet":
        raise ValueError(
            f"{path}: predictions are written as CSV or Parquet; give a file name ending in .csv or .parquet"
        )
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise ValueError(
            f"{path}: writing Parquet needs pyarrow: pip install 'robult[parquet]' (or write .csv)"
        ) from None
    return "parquet"


def _write_parquet(prediction: Prediction, path: Path, index: np.ndarray | None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(prediction_columns(prediction, index))
    with atomic_open(path, "wb") as fh:
        pq.write_table(table, fh)


def write_predictions(prediction: Prediction, path: str | Path, index: np.ndarray | None = None) -> Path:
    """Write a prediction table (atomically) as CSV, or as Parquet when the name ends in ``.parquet`` (needs the
    ``parquet`` extra: pyarrow); see :func:`prediction_rows` for the columns."""
    path = Path(path)
    if output_format(path) == "parquet":
        _write_parquet(prediction, path, index)
        return path
    header, rows = prediction_rows(prediction, index)
    with atomic_open(path, "w") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def predict_to_csv_stream(
    model: str | Path | Predictor, inputs: str | Path, stream: Any, batch_size: int = 4096
) -> int:
    """``robult predict`` without ``--out``: the prediction table (:func:`prediction_rows`) as CSV on ``stream``
    (e.g. standard output). Returns the number of rows."""
    from robult.inference.predictor import load

    predictor = model if isinstance(model, Predictor) else load(model)
    data = read_prediction_inputs(inputs, predictor)
    prediction = predictor.predict(data.inputs, data.present, lengths=data.lengths, batch_size=batch_size)
    header, rows = prediction_rows(prediction)
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return len(prediction)


def predict_to_file(
    model: str | Path | Predictor, inputs: str | Path, out: str | Path, batch_size: int = 4096
) -> tuple[Path, int]:
    """``robult predict``: load the model (a run or model directory), read ``inputs`` (user format), write the
    predictions to ``out`` (CSV, or Parquet by extension). Returns the file and the number of rows."""
    from robult.inference.predictor import load

    output_format(out)  # a wrong extension or a missing pyarrow fails before the work
    predictor = model if isinstance(model, Predictor) else load(model)
    data = read_prediction_inputs(inputs, predictor)
    prediction = predictor.predict(data.inputs, data.present, lengths=data.lengths, batch_size=batch_size)
    return write_predictions(prediction, out), len(prediction)


def input_modality_names(path: str | Path) -> list[str]:
    """The modalities an input lists: the ``modalities`` of a directory's ``dataset.yaml``, or a table's column groups
    (``<modality>__<feature>``, :func:`robult.data.table.table_modality_names`)."""
    from robult.config import read_yaml
    from robult.data.table import is_table, table_modality_names

    path = Path(path).expanduser()
    if is_table(path):
        return table_modality_names(path)
    doc = read_yaml(path / YAML_NAME if path.is_dir() else path)
    return [str(m.get("name")) for m in doc.get("modalities") or [] if isinstance(m, dict)]
