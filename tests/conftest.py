"""Shared fixtures: tiny seeded specs and batches, and the config overrides of tiny training runs.

Tests run on the CPU, deterministically, even where a GPU is present (``train.accelerator`` defaults to ``auto``):
GPUs are hidden unless ``ROBULT_TEST_GPU=1``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if os.environ.get("ROBULT_TEST_GPU") != "1":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

import pytest
import torch

from robult import Batch, ModalitySpec, TaskSpec

if TYPE_CHECKING:
    from robult.evaluation.evaluate import EvaluationResult

TINY_SYNTHETIC = [
    "dataset.options.n_samples=200",
    "train.max_epochs=1",
    "train.progress=false",
    "model.hidden_dim=16",
    "model.encoder_hidden=[16]",
    "eval.rates=[0.0]",
]
"""Overrides for a one-epoch run on a 200-sample synthetic set, scored on complete inputs only."""

TINY_TWO_EPOCHS = [
    "train.max_epochs=2",
    "train.patience=0",
    "train.batch_size=32",
    "train.progress=false",
    "model.hidden_dim=16",
    "model.encoder_hidden=[16]",
    "model.shared_dim=8",
    "model.specific_dim=8",
    "eval.rates=[0.0, 0.5]",
]
"""Overrides for a two-epoch run of a small model on any dataset, scored at missing rates 0 and 0.5."""


@pytest.fixture
def specs() -> list[ModalitySpec]:
    return [
        ModalitySpec("a", "vector", (5,)),
        ModalitySpec("b", "vector", (7,)),
        ModalitySpec("c", "sequence", (None, 3)),
    ]


@pytest.fixture
def task() -> TaskSpec:
    return TaskSpec("multiclass", num_classes=4)


def make_batch(b: int = 12, seed: int = 0, t: int = 6) -> Batch:
    g = torch.Generator().manual_seed(seed)
    present = torch.rand(b, 3, generator=g) > 0.3
    present[~present.any(1), 0] = True
    return Batch(
        inputs={
            "a": torch.randn(b, 5, generator=g),
            "b": torch.randn(b, 7, generator=g),
            "c": torch.randn(b, t, 3, generator=g),
        },
        present=present,
        target=torch.randint(0, 4, (b,), generator=g),
        labeled=torch.rand(b, generator=g) > 0.5,
        lengths={"c": torch.randint(1, t + 1, (b,), generator=g)},
    )


def toy_evaluation(a: float, b: float, ab: float, r0: float, r5: float, metric: str = "accuracy") -> EvaluationResult:
    """One evaluation on two modalities ``a``, ``b``: ``metric`` (and ``other`` = 0) for the subsets a, b and a+b,
    and ``metric`` at missing rates 0 and 0.5."""
    from robult.evaluation.evaluate import EvaluationResult

    return EvaluationResult(
        subsets={"a": {metric: a, "other": 0.0}, "b": {metric: b, "other": 0.0}, "a+b": {metric: ab, "other": 0.0}},
        random_rate={"0.0": {metric: r0}, "0.5": {metric: r5}},
    )


def toy_results(metric: str = "accuracy", higher: bool = True) -> dict:
    """A results document of a toy benchmark: ``robult`` with two seeds and ``supervised`` with one, at 5% labels."""
    from robult.evaluation.report import results_document, run_entry

    runs = [
        run_entry("robult", 0.05, 0, toy_evaluation(0.5, 0.7, 0.8, 0.8, 0.6, metric), metric),
        run_entry("robult", 0.05, 1, toy_evaluation(0.7, 0.6, 0.9, 0.9, 0.7, metric), metric),
        run_entry("supervised", 0.05, 0, toy_evaluation(0.65, 0.75, 0.7, 0.7, 0.65, metric), metric),
    ]
    return results_document("toy", "multiclass", metric, higher, ["a", "b"], runs)
