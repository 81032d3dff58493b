"""What :meth:`robult.inference.Predictor.predict` returns: :class:`Prediction`, and the rule that turns a model's
raw scores into probabilities or values (shared with the exported TorchScript / ONNX model)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from robult.specs import TaskKind, TaskSpec


def outputs_from_scores(scores: Tensor, kind: TaskKind) -> Tensor:
    """Raw scores ``[N, K]`` -> what a user reads: multiclass ``[N, K]`` softmax; binary ``[N]`` probability of
    class 1; multilabel ``[N, L]`` per-label probabilities; regression ``[N]`` values."""
    if kind == TaskKind.MULTICLASS:
        return torch.softmax(scores, dim=-1)
    if kind == TaskKind.BINARY:
        return torch.sigmoid(scores[:, 0])
    if kind == TaskKind.MULTILABEL:
        return torch.sigmoid(scores)
    return scores[:, 0]


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
        return outputs_from_scores(torch.from_numpy(scores), self.task.kind).numpy()

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
