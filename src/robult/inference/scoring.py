"""``robult evaluate RUN --input DIR``: score a trained model on another dataset in the user format.

The directory is the user format of ``docs/datasets.md`` (``dataset.yaml`` + ``.npy``) with some or all of the model's
modalities (same names, kinds and shapes; a model modality it does not list is absent from every row, and the subsets
holding it are not scored) and ``labels`` (required: they are what is scored;
``labeled.npy`` marks the rows that have one, the others are predicted but not scored). ``task``, when given, must be
the model's (kind and number of classes). ``split`` is ignored: every row is scored. Raw inputs go through the
:class:`~robult.inference.Predictor`'s batches, so the training split's saved normalisation applies exactly as in
``Predictor.predict``; one forward pass per batch gives every subset and every missing rate, as in
:func:`robult.evaluation.evaluate.evaluate`, whose scoring rules (data presence always applies, rows with no
modality of a setting are not scored, seeded random-rate masks) are the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from robult.data.table import is_table
from robult.inference.files import YAML_NAME, PredictionInputs, read_prediction_inputs
from robult.inference.inputs import input_batch, presence_mask
from robult.inference.predictor import DEFAULT_BATCH_SIZE, Predictor
from robult.specs import TaskKind, TaskSpec
from robult.utils.paths import safe_file_stem

INPUT_SPLIT = "input"  # the split name of an input directory's masks in a mask store


def _task_and_labels(yaml_path: Path, raw: dict[str, Any], predictor: Predictor) -> tuple[Path, Tensor, Tensor]:
    """The labels file, the targets and the labeled mask, checked against the model's task."""
    from robult.data.user import TaskConfig, UserDatasetConfig, read_labels

    model_task = predictor.task
    if raw.get("task") is not None:
        try:
            task = TaskConfig.model_validate(raw["task"]).to_spec()
        except ValueError as err:
            raise ValueError(f"{yaml_path}: task: {' '.join(str(err).split())}") from None
        mine = _describe(model_task)
        if task.kind != model_task.kind or (
            task.kind != TaskKind.REGRESSION and task.num_classes != model_task.num_classes
        ):
            raise ValueError(f"{yaml_path}: task is {_describe(task)}, the model was trained on {mine}")
    if raw.get("labels") is None:
        raise ValueError(
            f"{yaml_path}: labels: required to score (a .npy of one label per row); to predict without "
            "labels use `robult predict`"
        )
    config = cast(UserDatasetConfig, _LabelKeys(str(raw["labels"]), raw.get("labeled")))
    labels_path, target, labeled = read_labels(config, yaml_path.parent, model_task)
    return labels_path, torch.from_numpy(target), torch.from_numpy(labeled)


def _table_labels(data: PredictionInputs, predictor: Predictor) -> tuple[Path, Tensor, Tensor]:
    """A table's label column as the model's targets and the labeled mask (:func:`robult.data.table.table_targets`)."""
    from robult.data.table import table_targets

    if data.labels is None:
        raise ValueError(
            f"{data.source}: no label column 'label': required to score; to predict without labels use `robult predict`"
        )
    target, labeled = table_targets(data.labels, predictor.task, f"{data.source} (label)")
    return data.source, torch.from_numpy(target), torch.from_numpy(labeled)


class _LabelKeys:
    """The two keys of ``dataset.yaml`` that :func:`robult.data.user.read_labels` reads."""

    def __init__(self, labels: str, labeled: Any) -> None:
        self.labels = labels
        self.labeled = None if labeled is None else str(labeled)


def _describe(task: TaskSpec) -> str:
    if task.kind in (TaskKind.REGRESSION, TaskKind.BINARY):
        return task.kind.value
    return f"{task.kind.value} with {task.num_classes} {'labels' if task.kind == TaskKind.MULTILABEL else 'classes'}"


def evaluate_inputs(
    predictor: Predictor,
    path: str | Path,
    *,
    protocols: Sequence[str] | None = None,
    rates: Sequence[float] | None = None,
    mask_seed: int | None = None,
    masks_dir: str | Path | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Any:
    """Score ``predictor`` on the user-format directory ``path`` (or a table file, :mod:`robult.data.table`) under
    the missing-modality protocols.

    Args:
        predictor: the trained model (:func:`robult.load`).
        path: the directory (or its ``dataset.yaml``; see the module docstring), or a ``.csv`` / ``.tsv`` /
            ``.parquet`` table with a ``label`` column, in the format ``robult train --input`` reads.
        protocols: any of ``"all-subsets"``, ``"random-rate"`` (default: the run's ``eval.protocols``).
        rates: missing rates (default: the run's ``eval.rates``).
        mask_seed: seed of the random-rate masks (default: the run's ``eval.mask_seed``).
        masks_dir: a mask store to read the masks from / save them to (under the dataset's ``name``, split
            ``input``); default: generated in memory from the seed.
        batch_size: samples per forward pass.

    Returns:
        an :class:`robult.evaluation.evaluate.EvaluationResult`.

    Raises:
        FileNotFoundError, ValueError: one line naming the file, key or modality that does not fit the model.
    """
    from robult.config import read_yaml
    from robult.evaluation.evaluate import EvaluationResult, ProtocolScorer
    from robult.evaluation.protocols import PROTOCOLS, MaskStore

    cfg = predictor.config
    protocols = tuple(protocols or cfg.eval.protocols)
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise ValueError(f"unknown protocol {unknown[0]!r}; use any of {list(PROTOCOLS)}")
    rates = tuple(cfg.eval.rates if rates is None else rates)
    mask_seed = int(cfg.eval.mask_seed if mask_seed is None else mask_seed)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")

    data = read_prediction_inputs(path, predictor)  # names, kinds, shapes, row counts, lengths, present.npy
    yaml_path = data.source
    names = predictor.modality_names
    lacking = [name for name in names if name not in data.inputs]  # absent from every row: scored without them
    if is_table(yaml_path):  # a table: its label column; named after the file, as training names it
        raw: dict[str, Any] = {"name": safe_file_stem(yaml_path.stem, "table")}
        labels_path, target, labeled = _table_labels(data, predictor)
    else:
        raw = read_yaml(yaml_path)
        labels_path, target, labeled = _task_and_labels(yaml_path, raw, predictor)
    n = data.num_rows
    if len(target) != n:
        first = next(iter(data.inputs))
        raise ValueError(f"{labels_path}: {len(target)} labels, but modality {first!r} has {n} rows")
    present = presence_mask(data.present, data.inputs, n, names)
    empty = np.flatnonzero(~present.any(axis=1))
    if len(empty):
        raise ValueError(f"{yaml_path}: row {int(empty[0])} has no modality present ({len(empty)} such rows)")

    result = EvaluationResult(counts={"n": n})
    dataset_name = str(raw.get("name") or yaml_path.parent.name)
    store = MaskStore(masks_dir) if masks_dir is not None else None
    model = predictor.model
    scorer = ProtocolScorer(model, names, n, protocols, rates, mask_seed, store, dataset_name, INPUT_SPLIT, result)
    device = predictor.device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                stop = min(n, start + batch_size)
                # the predictor's batch: raw rows read, checked, normalised as in Predictor.predict
                batch = input_batch(
                    predictor.modalities,
                    predictor.normalization,
                    data.inputs,
                    present,
                    data.lengths,
                    start,
                    stop,
                    device,
                )
                output = model(batch, with_reconstruction=False, validate=False)
                scorer.add(output, torch.arange(start, stop))
    finally:
        model.train(was_training)

    scored = scorer.score(target, labeled, predictor.task)
    if lacking:  # a subset holding a modality no row has is not a setting of this input: left out
        gone = {key for key in scored.subsets if any(part in lacking for part in key.split("+"))}
        scored.subsets = {k: v for k, v in scored.subsets.items() if k not in gone}
        scored.counts = {k: v for k, v in scored.counts.items() if k.removeprefix("all-subsets/") not in gone}
    return scored


__all__ = ["INPUT_SPLIT", "YAML_NAME", "evaluate_inputs"]
