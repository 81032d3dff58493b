"""The batch contract: what every dataset yields and every model and loss reads.

A :class:`Batch` holds one tensor per modality (``inputs``), a presence mask ``present[B, M]`` in the order of the
modality specs, the ``target``, a ``labeled[B]`` mask and, for sequences, per-modality ``lengths``. Rows of an
absent modality may hold anything (zeros, NaN, noise): nothing downstream reads them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from robult.specs import ModalitySpec, TaskSpec


@dataclass
class Batch:
    """A batch of multimodal samples.

    Attributes:
        inputs: modality name -> tensor ``[B, *shape]``.
        present: ``BoolTensor[B, M]``, column ``m`` for the ``m``-th modality spec.
        target: ``[B]`` (class ids / binary / regression) or ``[B, L]`` (multilabel). Rows of unlabeled samples
            may hold anything when ``labeled`` is false (their labels are never read by the losses).
        labeled: ``BoolTensor[B]``: whether the sample's target may be used for training.
        lengths: modality name -> ``LongTensor[B]`` valid lengths, for sequential modalities.
        index: ``LongTensor[B]`` sample indices in their dataset (for bookkeeping), optional.
    """

    inputs: dict[str, Tensor]
    present: Tensor
    target: Tensor
    labeled: Tensor
    lengths: dict[str, Tensor] = field(default_factory=dict)
    index: Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.present.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Move every tensor to ``device``."""
        return Batch(
            inputs={k: v.to(device, non_blocking=non_blocking) for k, v in self.inputs.items()},
            present=self.present.to(device, non_blocking=non_blocking),
            target=self.target.to(device, non_blocking=non_blocking),
            labeled=self.labeled.to(device, non_blocking=non_blocking),
            lengths={k: v.to(device, non_blocking=non_blocking) for k, v in self.lengths.items()},
            index=None if self.index is None else self.index.to(device, non_blocking=non_blocking),
        )

    def with_present(self, present: Tensor) -> Batch:
        """The same batch with another presence mask (e.g. a test-time missingness mask)."""
        return replace(self, present=present.to(self.present.device, torch.bool))


def validate_batch(batch: Batch, modalities: Sequence[ModalitySpec], task: TaskSpec | None = None) -> None:
    """Check a batch against the specs; raise ``ValueError`` naming the culprit.

    Checks: unknown or missing modality names, per-sample shapes, lengths of sequences, the presence mask's shape,
    samples with no modality present, NaN/Inf in *present* float inputs, and labeled targets outside the task.
    """
    names = [s.name for s in modalities]
    unknown = sorted(set(batch.inputs) - set(names))
    if unknown:
        raise ValueError(f"unknown modality {unknown[0]!r} in batch inputs; the model knows {names}")
    b = batch.present.shape[0] if batch.present.ndim == 2 else -1
    if batch.present.ndim != 2 or batch.present.shape[1] != len(names):
        raise ValueError(
            f"present mask has shape {tuple(batch.present.shape)}, expected (B, {len(names)}) for modalities {names}"
        )
    if batch.present.dtype != torch.bool:
        raise ValueError(f"present mask must be a bool tensor, got {batch.present.dtype}")
    empty = (~batch.present.any(dim=1)).nonzero().flatten()
    if empty.numel():
        raise ValueError(
            f"sample {int(empty[0])} of the batch has no modality present; every sample needs at least one of {names}"
        )
    for m, spec in enumerate(modalities):
        col = batch.present[:, m]
        if spec.name not in batch.inputs:
            if col.any():
                raise ValueError(f"modality {spec.name!r} is marked present but missing from batch inputs")
            continue
        x = batch.inputs[spec.name]
        if x.shape[0] != b:
            raise ValueError(f"modality {spec.name!r} has batch size {x.shape[0]}, the present mask has {b}")
        spec.check_shape(tuple(x.shape[1:]))
        if spec.is_sequential:
            lengths = batch.lengths.get(spec.name)
            if lengths is None:
                raise ValueError(f"sequential modality {spec.name!r} needs lengths (batch.lengths[{spec.name!r}])")
            if lengths.shape != (b,):
                raise ValueError(
                    f"lengths of modality {spec.name!r} have shape {tuple(lengths.shape)}, expected ({b},)"
                )
            ln = lengths[col]
            if ln.numel() and (int(ln.min()) < 1 or int(ln.max()) > x.shape[1]):
                raise ValueError(
                    f"lengths of modality {spec.name!r} must lie in [1, {x.shape[1]}] for present samples, "
                    f"got [{int(ln.min())}, {int(ln.max())}]"
                )
        if x.is_floating_point() and col.any():
            rows = x[col]
            ok = torch.isfinite(rows)
            if spec.is_sequential:  # padding beyond a sample's length is never read
                steps = torch.arange(x.shape[1], device=x.device)
                pad = steps[None, :] >= batch.lengths[spec.name][col][:, None]
                ok = ok | pad.reshape(*pad.shape, *([1] * (ok.ndim - 2)))
            finite = ok.reshape(rows.shape[0], -1).all(dim=1)
            if not finite.all():
                i = int(col.nonzero().flatten()[(~finite).nonzero().flatten()[0]])
                row = "" if batch.index is None else f" (dataset row {int(batch.index[i])})"
                raise ValueError(
                    f"modality {spec.name!r} holds NaN or Inf in sample {i} of the batch{row}, which is marked "
                    "present; mark it absent or clean the input"
                )
    if batch.labeled.shape != (b,):
        raise ValueError(f"labeled mask has shape {tuple(batch.labeled.shape)}, expected ({b},)")
    if task is not None and batch.labeled.any():
        task.check_target(batch.target[batch.labeled], where="labeled ")


def check_dataset(
    dataset: MultimodalDataset, modalities: Sequence[ModalitySpec], where: str, chunk: int = 1024
) -> None:
    """:func:`validate_batch` over every row of ``dataset`` once, in chunks (e.g. before training, so the
    training steps need not check every batch again); errors name ``where`` and the dataset row."""
    for start in range(0, len(dataset), chunk):
        batch = dataset.__getitems__(range(start, min(start + chunk, len(dataset))))
        try:
            validate_batch(batch, modalities)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None


def _as_tensor(value: Any) -> Tensor:
    if isinstance(value, Tensor):
        return value
    return torch.as_tensor(np.asarray(value))


class MultimodalDataset(torch.utils.data.Dataset):
    """An in-memory (or memory-mapped) multimodal dataset.

    Arrays may be torch tensors or numpy arrays (``np.memmap`` included: rows are read only when a batch asks for
    them). Indexing with a list of indices (``__getitems__``) returns a ready :class:`Batch`, so a ``DataLoader``
    with ``collate_fn=collate`` fetches whole batches without per-sample Python work.

    Args:
        modalities: the modality specs, in order.
        task: the task spec.
        inputs: modality name -> array ``[N, *shape]``.
        target: ``[N]`` or ``[N, L]``.
        present: ``[N, M]`` bool presence mask (default: all present).
        lengths: modality name -> ``[N]`` lengths for sequential modalities.
        labeled: ``[N]`` bool: which targets training may use (default: all).
        validate: check shapes, labels and the presence mask up front.
    """

    def __init__(
        self,
        modalities: Sequence[ModalitySpec],
        task: TaskSpec,
        inputs: Mapping[str, Any],
        target: Any,
        present: Any | None = None,
        lengths: Mapping[str, Any] | None = None,
        labeled: Any | None = None,
        validate: bool = True,
    ) -> None:
        self.modalities = list(modalities)
        self.task = task
        self.inputs = dict(inputs)
        self.target = _as_tensor(target)
        if self.target.dtype != task.target_dtype:
            self.target = self.target.to(task.target_dtype)
        n = int(self.target.shape[0])
        self.present = (
            torch.ones(n, len(self.modalities), dtype=torch.bool) if present is None else _as_tensor(present).bool()
        )
        self.lengths = {k: _as_tensor(v).long() for k, v in (lengths or {}).items()}
        self.labeled = torch.ones(n, dtype=torch.bool) if labeled is None else _as_tensor(labeled).bool()
        if validate:
            self._validate(n)

    def _validate(self, n: int) -> None:
        names = [s.name for s in self.modalities]
        for key in self.inputs:
            if key not in names:
                raise ValueError(f"unknown modality {key!r} in dataset inputs; specs name {names}")
        for spec in self.modalities:
            if spec.name not in self.inputs:
                raise ValueError(f"dataset has no array for modality {spec.name!r}")
            x = self.inputs[spec.name]
            if int(x.shape[0]) != n:
                raise ValueError(f"modality {spec.name!r} has {x.shape[0]} rows, the target has {n}")
            spec.check_shape(tuple(int(s) for s in x.shape[1:]), where="dataset: ")
            if spec.is_sequential and spec.name not in self.lengths:
                raise ValueError(f"sequential modality {spec.name!r} needs lengths")
        if tuple(self.present.shape) != (n, len(names)):
            raise ValueError(f"presence mask has shape {tuple(self.present.shape)}, expected ({n}, {len(names)})")
        empty = (~self.present.any(dim=1)).nonzero().flatten()
        if empty.numel():
            raise ValueError(f"sample {int(empty[0])} has no modality present")
        if tuple(self.labeled.shape) != (n,):
            raise ValueError(f"labeled mask has shape {tuple(self.labeled.shape)}, expected ({n},)")
        if self.labeled.any():
            self.task.check_target(self.target[self.labeled], where="dataset: ")

    def __len__(self) -> int:
        return int(self.target.shape[0])

    @property
    def modality_names(self) -> list[str]:
        return [s.name for s in self.modalities]

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        np_idx = idx.numpy()
        inputs = {}
        for name, x in self.inputs.items():
            if isinstance(x, Tensor):
                inputs[name] = x[idx]
            else:  # numpy array, memmap or lazy row view: only the requested rows are read
                t = torch.from_numpy(np.ascontiguousarray(x[np_idx]))
                inputs[name] = t.float() if t.is_floating_point() and t.dtype != torch.float32 else t
        return Batch(
            inputs=inputs,
            present=self.present[idx],
            target=self.target[idx],
            labeled=self.labeled[idx],
            lengths={k: v[idx] for k, v in self.lengths.items()},
            index=idx,
        )

    def __getitem__(self, i: int) -> Batch:
        return self.__getitems__([int(i)])

    def subset(self, indices: Any) -> MultimodalDataset:
        """A new dataset holding the given rows (arrays are sliced, memmaps stay memmaps where possible)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        np_idx = idx.numpy()
        inputs = {k: (v[idx] if isinstance(v, Tensor) else RowView.of(v, np_idx)) for k, v in self.inputs.items()}
        return MultimodalDataset(
            self.modalities,
            self.task,
            inputs,
            self.target[idx],
            present=self.present[idx],
            lengths={k: v[idx] for k, v in self.lengths.items()},
            labeled=self.labeled[idx],
            validate=False,
        )

    def with_labeled(self, labeled: Any) -> MultimodalDataset:
        """The same data with another labeled mask."""
        mask = _as_tensor(labeled).bool()
        if tuple(mask.shape) != (len(self),):
            raise ValueError(f"labeled mask has shape {tuple(mask.shape)}, expected ({len(self)},)")
        out = MultimodalDataset(
            self.modalities, self.task, self.inputs, self.target, self.present, self.lengths, mask, validate=False
        )
        return out

    def with_present(self, present: Any) -> MultimodalDataset:
        """The same data with another presence mask (at least one modality per sample)."""
        mask = _as_tensor(present).bool()
        return MultimodalDataset(
            self.modalities, self.task, self.inputs, self.target, mask, self.lengths, self.labeled, validate=True
        )


class RowView:
    """A lazy row selection of a (memory-mapped) numpy array: ``view[i]`` reads rows ``rows[i]`` only."""

    def __init__(self, base: Any, rows: np.ndarray) -> None:
        self.base = base
        self.rows = rows
        self.shape = (len(rows), *base.shape[1:])
        self.dtype = base.dtype

    @classmethod
    def of(cls, base: Any, rows: np.ndarray) -> Any:
        if isinstance(base, RowView):
            return cls(base.base, base.rows[rows])
        if isinstance(base, np.memmap):
            return cls(base, rows)
        return np.asarray(base)[rows]

    def __getitem__(self, idx: Any) -> np.ndarray:
        return np.asarray(self.base[self.rows[idx]])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self[np.arange(len(self.rows))]
        return arr if dtype is None else arr.astype(dtype)

    def __len__(self) -> int:
        return len(self.rows)


def collate(items: Sequence[Batch] | Batch) -> Batch:
    """Collate function for ``DataLoader``: accepts a ready :class:`Batch` (from ``__getitems__``) or a list of
    single-sample batches, and concatenates them."""
    if isinstance(items, Batch):
        return items
    items = list(items)
    if not items:
        raise ValueError("cannot collate an empty list of samples")
    first = items[0]
    return Batch(
        inputs={k: torch.cat([it.inputs[k] for it in items]) for k in first.inputs},
        present=torch.cat([it.present for it in items]),
        target=torch.cat([it.target for it in items]),
        labeled=torch.cat([it.labeled for it in items]),
        lengths={k: torch.cat([it.lengths[k] for it in items]) for k in first.lengths},
        index=None if first.index is None else torch.cat([it.index for it in items]),  # type: ignore[misc]
    )
