"""Which training rows a run treats as labeled, and what it says about them.

The labels come from one of two sources (:func:`label_source`): the dataset's own labeled rows taken as given
(``train.given_labels: use`` on data that marks some rows unlabeled), or a seeded stratified ``train.label_ratio``
share of the training split (:func:`robult.data.splits.labeled_subset`). :func:`subset_indices` is the one rule
that produces the subset; the run directory saves it as ``labeled.json`` (:func:`robult.training.rundir.labeled_mask`).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from robult.config import RunConfig
from robult.data.dataset import MultimodalDataset
from robult.data.registry import DatasetBundle
from robult.data.splits import labeled_subset


def label_source(train: MultimodalDataset, cfg: RunConfig) -> str:
    """Where a run's training labels come from: ``"given"`` (the dataset marks some training rows unlabeled, e.g.
    the user format's ``labeled:`` file, and ``train.given_labels`` is ``use``: exactly its labeled rows) or
    ``"label_ratio"`` (a seeded stratified ``train.label_ratio`` share of the training split, among the rows the
    dataset marks labeled)."""
    if cfg.train.given_labels == "use" and not bool(train.labeled.all()):
        return "given"
    return "label_ratio"


def subset_indices(train: MultimodalDataset, cfg: RunConfig) -> tuple[torch.Tensor, list[int], str]:
    """The labeled mask this code produces for ``cfg``, its indices and their SHA-256."""
    if label_source(train, cfg) == "given":
        mask = train.labeled.clone()
    elif bool(train.labeled.all()):
        mask = labeled_subset(train.target, train.task, cfg.train.label_ratio, cfg.train.seed)
    else:  # given_labels: subsample: stratified among the rows the dataset labels (the others' targets mean nothing)
        rows = train.labeled.nonzero().flatten()
        mask = torch.zeros_like(train.labeled)
        mask[rows[labeled_subset(train.target[rows], train.task, cfg.train.label_ratio, cfg.train.seed)]] = True
    indices = mask.nonzero().flatten().tolist()
    return mask, indices, hashlib.sha256(json.dumps(indices).encode()).hexdigest()


def labels_used(train: MultimodalDataset, cfg: RunConfig, mask: torch.Tensor) -> dict[str, Any]:
    """What a run says about its training labels (log line, ``result.json``): how many it used and why."""
    return {
        "n_labeled": int(mask.sum()),
        "n_train": len(train),
        "source": label_source(train, cfg),
        "dataset_labeled": int(train.labeled.sum()),
    }


def describe_labels(labels: Mapping[str, Any], cfg: RunConfig) -> str:
    """One line: how many training labels a run used and where they come from."""
    head = f"labels used: {labels['n_labeled']} of {labels['n_train']} training samples"
    if labels["source"] == "given":
        return (
            f"{head} (the dataset's labeled rows as given; train.label_ratio={cfg.train.label_ratio:g} not applied, "
            "set train.given_labels=subsample to apply it)"
        )
    return f"{head} (train.label_ratio={cfg.train.label_ratio:g}, seed {cfg.train.seed})"


def check_labels(bundle: DatasetBundle, cfg: RunConfig) -> None:
    """Refuse a training split with no labeled sample; warn about labels of a single class (classification) and
    about a modality that no training sample has but the test split scores."""
    train = bundle.train
    mask, indices, _ = subset_indices(train, cfg)
    where = f"{bundle.name} training split"
    if not indices:
        raise ValueError(
            f"{where}: no labeled sample ({int(train.labeled.sum())} of {len(train)} rows carry a label, "
            f"train.label_ratio={cfg.train.label_ratio}); training needs labels"
        )
    if not bool(bundle.val.labeled.any()):
        raise ValueError(
            f"{bundle.name} validation split: no labeled sample among its {len(bundle.val)} rows; model selection "
            "scores labeled validation rows (label some, or change the split)"
        )
    if bundle.task.kind.value in ("multiclass", "binary"):
        classes = torch.unique(train.target[mask]).tolist()
        if len(classes) < 2:
            warnings.warn(
                f"{where}: every labeled sample ({len(indices)}) has class {classes[0]}; the classifier learns a "
                "single class and its scores are meaningless",
                UserWarning,
                stacklevel=3,
            )
    present = torch.as_tensor(train.present)
    for m, name in enumerate(bundle.modality_names):
        if not bool(present[:, m].any()):
            warnings.warn(
                f"{where}: modality {name!r} is absent from every training sample; its encoder stays untrained "
                "and its test scores are meaningless",
                UserWarning,
                stacklevel=3,
            )
