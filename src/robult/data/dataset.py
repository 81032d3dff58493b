"""The dataset every loader returns: in-memory or memory-mapped arrays that yield ready :class:`Batch` es."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from robult.batch import Batch
from robult.specs import ModalitySpec, TaskSpec

__all__ = ["MultimodalDataset", "RowView"]


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
        source_rows: ``[N]`` the row of each sample in the files it was read from (kept by :meth:`subset`), so
            errors name the file row, not the row inside a split; ``None``: unknown.
        sources: modality name -> the file its rows come from (for error messages).
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
        *,
        source_rows: Any | None = None,
        sources: Mapping[str, str] | None = None,
    ) -> None:
        self.source_rows = None if source_rows is None else _as_tensor(source_rows).long()
        self.sources = dict(sources or {})
        self.modalities = list(modalities)
        self.task = task
        self.inputs = dict(inputs)
        self.target = _as_tensor(target)
        if validate and self.target.ndim:  # before the cast: NaN or 1.5 in a labeled multiclass row is an error
            rows = torch.ones(self.target.shape[0], dtype=torch.bool) if labeled is None else _as_tensor(labeled)
            if tuple(rows.shape) == (self.target.shape[0],):  # else _validate names the shape
                task.check_label_rows(self.target, rows, where="dataset: ")
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
            self.task.check_target(self.target[self.labeled], where="dataset: ", rows=self.labeled.nonzero().flatten())

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
            source_rows=None if self.source_rows is None else self.source_rows[idx],
            sources=self.sources,
        )

    def with_labeled(self, labeled: Any) -> MultimodalDataset:
        """The same data with another labeled mask."""
        mask = _as_tensor(labeled).bool()
        if tuple(mask.shape) != (len(self),):
            raise ValueError(f"labeled mask has shape {tuple(mask.shape)}, expected ({len(self)},)")
        out = MultimodalDataset(
            self.modalities,
            self.task,
            self.inputs,
            self.target,
            self.present,
            self.lengths,
            mask,
            validate=False,
            source_rows=self.source_rows,
            sources=self.sources,
        )
        return out

    def with_present(self, present: Any) -> MultimodalDataset:
        """The same data with another presence mask (at least one modality per sample)."""
        mask = _as_tensor(present).bool()
        return MultimodalDataset(
            self.modalities,
            self.task,
            self.inputs,
            self.target,
            mask,
            self.lengths,
            self.labeled,
            validate=True,
            source_rows=self.source_rows,
            sources=self.sources,
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
