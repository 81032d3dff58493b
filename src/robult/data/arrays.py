"""Build a :class:`DatasetBundle` from in-memory arrays (the Python API for the user's own tensors)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from robult.data.dataset import MultimodalDataset
from robult.data.registry import DatasetBundle, default_metric
from robult.data.splits import strata, train_val_test_split
from robult.specs import ModalitySpec, TaskSpec


def bundle_from_arrays(
    inputs: Mapping[str, Any],
    target: Any,
    task: TaskSpec,
    *,
    modalities: list[ModalitySpec] | None = None,
    present: Any | None = None,
    lengths: Mapping[str, Any] | None = None,
    name: str = "arrays",
    primary_metric: str | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
) -> DatasetBundle:
    """Seeded stratified train / val / test splits of arrays ``[N, ...]`` per modality.

    Args:
        inputs: modality name -> array or tensor ``[N, *shape]`` (in the modality order of the result).
        target: labels ``[N]`` or ``[N, L]``.
        task: the task spec.
        modalities: specs (default: ``vector`` specs inferred from 2-D inputs; pass specs for sequences/images).
        present: optional ``[N, M]`` bool presence mask (training samples may lack modalities).
        lengths: per-modality lengths for sequential modalities.
        name: dataset name for reports and mask files.
        primary_metric: default by task kind (:data:`robult.data.registry.DEFAULT_METRICS`).
        seed, test_fraction, val_fraction: the split.
    """
    if modalities is None:
        modalities = []
        for key, x in inputs.items():
            shape = tuple(int(s) for s in np.shape(x)[1:])
            if len(shape) != 1:
                raise ValueError(f"modality {key!r} has per-sample shape {shape}; pass `modalities` for non-vectors")
            modalities.append(ModalitySpec(key, "vector", shape))
    target_t = torch.as_tensor(np.asarray(target))
    full = MultimodalDataset(
        modalities,
        task,
        dict(inputs),
        target_t,
        present=present,
        lengths=lengths,
        source_rows=torch.arange(len(target_t)),
    )
    split = train_val_test_split(strata(full.target, task), seed, val_fraction, test_fraction=test_fraction)
    return DatasetBundle(
        name=name,
        modalities=list(modalities),
        task=task,
        primary_metric=primary_metric or default_metric(task),
        train=full.subset(split.train),
        val=full.subset(split.val),
        test=full.subset(split.test),
        source="arrays",
        notes={"split": split.rule, "sizes": split.sizes},
    )
