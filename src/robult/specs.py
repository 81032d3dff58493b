"""Modality and task specifications shared by datasets, models, losses and metrics.

A :class:`ModalitySpec` says what one input looks like (name, kind, per-sample shape); a :class:`TaskSpec` says
what the target looks like (task kind, number of classes or labels) and checks targets against it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

import torch
from torch import Tensor


class TaskKind(str, Enum):
    """The four supported task kinds."""

    MULTICLASS = "multiclass"
    BINARY = "binary"
    MULTILABEL = "multilabel"
    REGRESSION = "regression"


class ModalityKind(str, Enum):
    """How a modality's per-sample input is laid out.

    - ``vector``: ``shape = (d,)`` float features.
    - ``sequence``: ``shape = (T, d)`` padded float sequences with per-sample lengths; ``T`` may be ``None``
      (any length).
    - ``image``: ``shape = (C, H, W)`` float tensor.
    - ``tokens``: ``shape = (T,)`` integer token ids with per-sample lengths.
    """

    VECTOR = "vector"
    SEQUENCE = "sequence"
    IMAGE = "image"
    TOKENS = "tokens"


_SEQUENTIAL = {ModalityKind.SEQUENCE, ModalityKind.TOKENS}


@dataclass(frozen=True)
class ModalitySpec:
    """One input modality.

    Args:
        name: unique modality name, the key of ``Batch.inputs``.
        kind: layout of the input (see :class:`ModalityKind`).
        shape: per-sample shape; ``None`` entries match any size (e.g. a variable sequence length).
    """

    name: str
    kind: ModalityKind
    shape: tuple[int | None, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", ModalityKind(self.kind))
        object.__setattr__(self, "shape", tuple(self.shape))
        if not self.name or "+" in self.name:
            raise ValueError(f"modality name {self.name!r} must be non-empty and must not contain '+'")
        expected_rank = {
            ModalityKind.VECTOR: 1,
            ModalityKind.SEQUENCE: 2,
            ModalityKind.IMAGE: 3,
            ModalityKind.TOKENS: 1,
        }
        if len(self.shape) != expected_rank[self.kind]:
            raise ValueError(
                f"modality {self.name!r}: a {self.kind.value} input needs a shape of rank "
                f"{expected_rank[self.kind]}, got {self.shape}"
            )

    @property
    def is_sequential(self) -> bool:
        """Whether samples of this modality carry lengths."""
        return self.kind in _SEQUENTIAL

    @property
    def feature_dim(self) -> int | None:
        """Last dimension for vectors and sequences (the encoder's input width)."""
        if self.kind in (ModalityKind.VECTOR, ModalityKind.SEQUENCE):
            return self.shape[-1]
        return None

    def check_shape(self, sample_shape: tuple[int, ...], where: str = "") -> None:
        """Raise ``ValueError`` when ``sample_shape`` (without batch dim) does not match this spec."""
        ok = len(sample_shape) == len(self.shape) and all(
            s is None or s == t for s, t in zip(self.shape, sample_shape, strict=True)
        )
        if not ok:
            expected = "(" + ", ".join("*" if s is None else str(s) for s in self.shape) + ")"
            raise ValueError(
                f"{where}modality {self.name!r} has per-sample shape {tuple(sample_shape)}, expected {expected} "
                f"({self.kind.value})"
            )


@dataclass(frozen=True)
class TaskSpec:
    """The prediction task.

    Args:
        kind: multiclass, binary, multilabel or regression.
        num_classes: number of classes (multiclass) or labels (multilabel); ignored otherwise.
        target_range: inclusive range of regression targets (e.g. ``(-3, 3)`` for sentiment), or ``None``.
        label_names: optional class / label names for reports.
    """

    kind: TaskKind
    num_classes: int = 0
    target_range: tuple[float, float] | None = None
    label_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", TaskKind(self.kind))
        if self.kind in (TaskKind.MULTICLASS, TaskKind.MULTILABEL) and self.num_classes < 2:
            raise ValueError(f"a {self.kind.value} task needs num_classes >= 2, got {self.num_classes}")
        if self.kind == TaskKind.BINARY:
            object.__setattr__(self, "num_classes", 2)
        if self.target_range is not None:
            object.__setattr__(self, "target_range", tuple(float(v) for v in self.target_range))

    @property
    def num_outputs(self) -> int:
        """Width of a prediction head's output."""
        if self.kind in (TaskKind.MULTICLASS, TaskKind.MULTILABEL):
            return self.num_classes
        return 1

    @property
    def target_dtype(self) -> torch.dtype:
        return torch.long if self.kind == TaskKind.MULTICLASS else torch.float32

    def check_label_rows(self, target: Tensor, labeled: Tensor, where: str = "") -> None:
        """Raise ``ValueError`` naming the first row (of ``target`` as given) whose label is NaN / Inf or, for a
        multiclass task, not an integer class id, among the ``labeled`` rows; call it before casting the target.

        Unlabeled rows may hold anything. A NaN label is never turned into "unlabeled" and 1.5 is never rounded.
        """
        if not target.is_floating_point() or target.numel() == 0:
            return
        flat = target.reshape(target.shape[0], -1)
        labeled = labeled.reshape(-1).bool()
        bad = labeled & ~torch.isfinite(flat).all(dim=1)
        reason = "a NaN or Inf label in a labeled row (mark rows without a label in the dataset's labeled mask)"
        if not bool(bad.any()) and self.kind == TaskKind.MULTICLASS:
            bad = labeled & (flat != flat.round()).any(dim=1)
            reason = f"not a class id (multiclass labels are integers 0..{self.num_classes - 1})"
        if bool(bad.any()):
            rows = bad.nonzero().flatten()
            i = int(rows[0])
            value = flat[i].tolist()
            shown = f"{value[0]:g}" if len(value) == 1 else str(value)
            raise ValueError(f"{where}row {i} holds {shown}: {reason}; {len(rows)} such row(s)")

    def check_target(self, target: Tensor, where: str = "", rows: Tensor | None = None) -> None:
        """Raise ``ValueError`` when ``target`` (batched) does not fit the task, naming the first row at fault.

        Args:
            target: the targets to check.
            where: prefix of the message (the file or object).
            rows: the row number of each target in its source (e.g. the labeled rows of a file); default 0..N-1.
        """

        def at(bad: Tensor) -> str:
            idx = bad.reshape(bad.shape[0], -1).any(dim=1).nonzero().flatten()
            first = int(idx[0]) if rows is None else int(rows[int(idx[0])])
            return f": row {first}, {len(idx)} such row(s)"

        kind = self.kind
        if kind == TaskKind.MULTILABEL:
            if target.ndim != 2 or target.shape[1] != self.num_classes:
                raise ValueError(
                    f"{where}multilabel target has shape {tuple(target.shape)}, expected (N, {self.num_classes})"
                )
        elif target.ndim != 1:
            raise ValueError(f"{where}{kind.value} target has shape {tuple(target.shape)}, expected (N,)")
        if target.numel() == 0:
            return
        if kind == TaskKind.MULTICLASS:
            if target.is_floating_point() and not torch.equal(target, target.round()):
                raise ValueError(f"{where}multiclass target holds non-integer values")
            outside = (target < 0) | (target >= self.num_classes)
            if outside.any():
                bad = int(target[outside][0])  # the value of the first row at fault (the one named)
                raise ValueError(
                    f"{where}label {bad} is outside the task's range [0, {self.num_classes - 1}] "
                    f"({self.num_classes} classes){at(outside)}"
                )
        elif kind in (TaskKind.BINARY, TaskKind.MULTILABEL):
            wrong = (target != 0) & (target != 1)
            if wrong.any():
                raise ValueError(
                    f"{where}{kind.value} target holds {float(target[wrong][0])}, expected only 0 or 1{at(wrong)}"
                )
        else:
            if not torch.isfinite(target).all():
                raise ValueError(f"{where}regression target holds NaN or Inf{at(~torch.isfinite(target))}")
            if self.target_range is not None:
                lo, hi = self.target_range
                outside = (target < lo - 1e-6) | (target > hi + 1e-6)
                if outside.any():
                    bad = float(target[outside][0])  # the value of the first row at fault (the one named)
                    raise ValueError(
                        f"{where}regression target {bad:g} is outside the task's range [{lo:g}, {hi:g}]{at(outside)}"
                    )


def subset_key(names: list[str] | tuple[str, ...], order: list[str] | tuple[str, ...]) -> str:
    """Canonical name of a modality subset: names joined with ``+`` in the dataset's modality order."""
    unknown = [n for n in names if n not in order]
    if unknown:
        raise ValueError(f"unknown modality {unknown[0]!r}; known: {list(order)}")
    return "+".join(n for n in order if n in names)


def all_subsets(order: list[str] | tuple[str, ...]) -> list[tuple[str, ...]]:
    """Every non-empty subset of ``order`` (2^M - 1), by size and then in modality order."""
    m = len(order)
    subsets = [tuple(order[i] for i in range(m) if mask >> i & 1) for mask in range(1, 2**m)]
    index = {n: i for i, n in enumerate(order)}
    return sorted(subsets, key=lambda s: (len(s), [index[n] for n in s]))


def chance_level(task: TaskSpec) -> float:
    """Accuracy of always predicting one class (uniform), a reference for reports."""
    return (
        1.0 / task.num_classes
        if task.kind == TaskKind.MULTICLASS
        else 0.5
        if task.kind == TaskKind.BINARY
        else math.nan
    )
