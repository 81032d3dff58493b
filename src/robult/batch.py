"""The batch contract: what every dataset yields and every model and loss reads.

A :class:`Batch` holds one tensor per modality (``inputs``), a presence mask ``present[B, M]`` in the order of the
modality specs, the ``target``, a ``labeled[B]`` mask and, for sequences, per-modality ``lengths``. Rows of an
absent modality may hold anything (zeros, NaN, noise): nothing downstream reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from robult.specs import ModalityKind, ModalitySpec, TaskSpec

if TYPE_CHECKING:
    from robult.data.dataset import MultimodalDataset


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


class NonFiniteInputError(ValueError):
    """A present float input holds NaN or Inf (or a present token input a negative id: ``what``);
    ``modality`` and ``sample`` (the row in the batch) say where."""

    def __init__(self, message: str, modality: str, sample: int, what: str = "NaN or Inf") -> None:
        super().__init__(message)
        self.modality = modality
        self.sample = sample
        self.what = what


def validate_batch(batch: Batch, modalities: Sequence[ModalitySpec], task: TaskSpec | None = None) -> None:
    """Check a batch against the specs; raise ``ValueError`` naming the culprit.

    Checks: unknown or missing modality names, per-sample shapes, lengths of sequences, the presence mask's shape,
    samples with no modality present, NaN/Inf in *present* float inputs, integer ids >= 0 within the lengths of
    present token inputs, and labeled targets outside the task.
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
                raise NonFiniteInputError(
                    f"modality {spec.name!r} holds NaN or Inf in sample {i} of the batch{row}, which is marked "
                    "present; mark it absent or clean the input",
                    spec.name,
                    i,
                )
        if spec.kind == ModalityKind.TOKENS and col.any():
            if x.is_floating_point() or x.dtype == torch.bool or x.is_complex():
                raise ValueError(f"modality {spec.name!r} holds token ids of dtype {x.dtype}; ids must be integers")
            steps = torch.arange(x.shape[1], device=x.device)
            bad = ((x[col] < 0) & (steps[None, :] < batch.lengths[spec.name][col][:, None])).any(dim=1)
            if bad.any():
                i = int(col.nonzero().flatten()[bad.nonzero().flatten()[0]])
                row = "" if batch.index is None else f" (dataset row {int(batch.index[i])})"
                raise NonFiniteInputError(
                    f"modality {spec.name!r} holds a negative token id in sample {i} of the batch{row}, which is "
                    "marked present; ids must be >= 0 within each sample's length",
                    spec.name,
                    i,
                    what="a negative token id",
                )
    if batch.labeled.shape != (b,):
        raise ValueError(f"labeled mask has shape {tuple(batch.labeled.shape)}, expected ({b},)")
    if task is not None and batch.labeled.any():
        task.check_target(batch.target[batch.labeled], where="labeled ")


def check_dataset(
    dataset: MultimodalDataset, modalities: Sequence[ModalitySpec], where: str, chunk: int = 1024
) -> None:
    """:func:`validate_batch` over every row of ``dataset`` once, in chunks (e.g. before training, so the
    training steps need not check every batch again); errors name ``where`` and the row: the row of the file the
    sample was read from where the dataset knows it (``source_rows``, ``sources``), else the row in ``dataset``."""
    for start in range(0, len(dataset), chunk):
        batch = dataset.__getitems__(range(start, min(start + chunk, len(dataset))))
        try:
            validate_batch(batch, modalities)
        except NonFiniteInputError as err:
            i = start + err.sample
            source_rows = getattr(dataset, "source_rows", None)
            file = getattr(dataset, "sources", {}).get(err.modality)
            if source_rows is None:
                row = f"row {i} of the split"
            else:
                row = f"row {int(source_rows[i])} of {file}" if file else f"input row {int(source_rows[i])}"
            raise ValueError(
                f"{where}: modality {err.modality!r} holds {err.what} in {row}, which is marked present; mark it "
                "absent or clean the input"
            ) from None
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None


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
