"""Raw inputs -> model batches for :meth:`robult.inference.Predictor.predict`: checks (one line naming the modality
and row), the presence mask, zero-filled absent entries, sequence lengths and the training split's normalisation.
Arrays, tensors and memory maps are read ``batch_size`` rows at a time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from robult.batch import Batch
from robult.specs import ModalityKind, ModalitySpec

Normalization = Mapping[str, tuple[Tensor, Tensor]]
"""Modality name -> ``(mean, std)`` of the training split's z-score."""


def as_tensor(value: Any, what: str) -> Tensor:
    """``value`` (array, tensor, memory map) as a writable CPU tensor; ``what`` names it in errors."""
    if isinstance(value, Tensor):
        return value.detach().cpu()
    arr = np.asarray(value)
    if arr.dtype == object:
        raise ValueError(f"{what}: expected a numeric array, got an object array")
    # a read-only array (a memory map opened "r") is copied: torch tensors must be writable
    return torch.from_numpy(np.ascontiguousarray(arr) if arr.flags.writeable else np.array(arr, order="C"))


def read_rows(value: Any, start: int, stop: int, what: str) -> Tensor:
    """Rows ``start:stop`` of an array, tensor or memory map (only those rows are read)."""
    return as_tensor(value[start:stop], what)


def num_rows(value: Any, what: str) -> int:
    """The number of rows (samples) of ``value``; ``what`` names it in errors."""
    shape = getattr(value, "shape", None)
    if shape is None:
        value = np.asarray(value)
        shape = value.shape
    if len(shape) == 0:
        raise ValueError(f"{what}: expected one row per sample, got a scalar")
    return int(shape[0])


def normalize(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """The training split's z-score of ``x`` (computed in the statistics' dtype), as float32."""
    return ((x.to(mean.dtype) - mean) / std).to(torch.float32)


def check_inputs(
    modalities: Sequence[ModalitySpec], inputs: Mapping[str, Any], present: Any, lengths: Mapping[str, Any]
) -> np.ndarray:
    """Check the inputs of :meth:`robult.inference.Predictor.predict` against the model's ``modalities``; return
    the presence mask ``bool [N, M]`` (:func:`presence_mask`), in which every row has a modality present and every
    present modality an input."""
    names = [s.name for s in modalities]
    if not inputs:
        raise ValueError(f"no input given; pass at least one of the modalities {names}")
    unknown = sorted(set(inputs) - set(names))
    if unknown:
        raise ValueError(f"unknown modality {unknown[0]!r} in inputs; the model knows {names}")
    bad_len = sorted(set(lengths) - {s.name for s in modalities if s.is_sequential})
    if bad_len:
        raise ValueError(f"lengths given for {bad_len[0]!r}, which is not a sequence or tokens modality")
    rows = {name: num_rows(x, f"modality {name!r}") for name, x in inputs.items()}
    first = next(iter(rows))
    n = rows[first]
    for name, k in rows.items():
        if k != n:
            raise ValueError(f"modality {name!r} has {k} rows, modality {first!r} has {n}")
    mask = presence_mask(present, inputs, n, names)
    for m, name in enumerate(names):
        if name not in inputs and mask[:, m].any():
            row = int(np.flatnonzero(mask[:, m])[0])
            raise ValueError(f"modality {name!r} is marked present in row {row} but has no input")
    empty = np.flatnonzero(~mask.any(axis=1))
    if len(empty):
        raise ValueError(
            f"row {int(empty[0])} has no modality present ({len(empty)} such rows); every sample needs at least "
            f"one of {names}"
        )
    return mask


def presence_mask(present: Any, inputs: Mapping[str, Any], n: int, names: Sequence[str]) -> np.ndarray:
    """``present`` as ``bool [n, M]``: ``None`` (a modality is present wherever it is given), a mapping name ->
    ``bool [n]`` (the modalities it leaves out: present wherever given) or an array ``[n, M]`` (boolean or 0/1)."""
    names = list(names)
    default = np.zeros((n, len(names)), dtype=bool)
    for m, name in enumerate(names):
        default[:, m] = name in inputs
    if present is None:
        return default
    if isinstance(present, Mapping):
        unknown = sorted(set(present) - set(names))
        if unknown:
            raise ValueError(f"present: unknown modality {unknown[0]!r}; the model knows {names}")
        out = default
        for m, name in enumerate(names):
            if name in present:
                col = np.asarray(as_tensor(present[name], f"present[{name!r}]").numpy())
                if col.shape != (n,):
                    raise ValueError(f"present[{name!r}] has shape {col.shape}, expected ({n},)")
                out[:, m] = col.astype(bool)
        return out
    arr = as_tensor(present, "present").numpy()
    if arr.shape != (n, len(names)):
        raise ValueError(
            f"present has shape {tuple(arr.shape)}, expected ({n}, {len(names)}): one column per modality in "
            f"the order {names}"
        )
    if arr.dtype != bool and not np.isin(arr, (0, 1)).all():
        raise ValueError("present must be boolean or 0/1")
    return arr.astype(bool)


def prepare_input(
    spec: ModalitySpec,
    m: int,
    x: Tensor,
    col: Tensor,
    lengths: Tensor | None,
    start: int,
    normalization: Normalization,
) -> Tensor:
    """One modality's rows ``x`` ready for the model: type, finiteness check (present rows), zero-filled non-finite
    absent entries, normalisation. ``m`` is its column in the mask, ``col`` its presence in these rows, ``start``
    the first row's index (errors name the row)."""
    name = spec.name
    spec.check_shape(tuple(int(s) for s in x.shape[1:]), where="input: ")
    if spec.kind == ModalityKind.TOKENS:
        if x.is_floating_point() or x.is_complex():
            raise ValueError(f"modality {name!r}: tokens need an integer array, got {x.dtype}")
        return x.long()
    if x.is_complex():
        raise ValueError(f"modality {name!r}: expected real numbers, got {x.dtype}")
    x = x.float()
    bad = ~torch.isfinite(x)
    if spec.is_sequential and lengths is not None:  # padding beyond a sample's length is never read
        pad = torch.arange(x.shape[1])[None, :] >= lengths[:, None]
        bad = bad & ~pad.reshape(*pad.shape, *([1] * (x.ndim - 2)))
    bad_rows = bad.reshape(x.shape[0], -1).any(dim=1) & col
    if bad_rows.any():
        row = start + int(bad_rows.nonzero()[0, 0])
        raise ValueError(
            f"modality {name!r}: row {row} holds NaN or Inf but is marked present; clean it or mark it absent "
            f"(present[{row}, {m}] = False)"
        )
    x = torch.where(torch.isfinite(x), x, 0.0)
    stats = normalization.get(name)
    if stats is not None:
        mean, std = stats
        x = normalize(x, mean, std)
    return x


def input_batch(
    modalities: Sequence[ModalitySpec],
    normalization: Normalization,
    inputs: Mapping[str, Any],
    present: np.ndarray,
    lengths: Mapping[str, Any],
    start: int,
    stop: int,
    device: torch.device,
) -> Batch:
    """Rows ``start:stop`` of the raw inputs as a :class:`robult.batch.Batch` on ``device`` (modalities without an
    input are zeros; sequences without lengths are full length)."""
    b = stop - start
    pres = torch.from_numpy(np.ascontiguousarray(present[start:stop]))
    xs: dict[str, Tensor] = {}
    lens: dict[str, Tensor] = {}
    for m, spec in enumerate(modalities):
        col = pres[:, m]
        ln = None
        if spec.is_sequential:
            if spec.name in lengths:
                ln = read_rows(lengths[spec.name], start, stop, f"lengths[{spec.name!r}]").long()
                if ln.shape != (b,):
                    raise ValueError(f"lengths[{spec.name!r}] must be one integer per sample")
            elif spec.name in inputs:
                t = int(inputs[spec.name].shape[1])
                ln = torch.full((b,), t, dtype=torch.long)
            else:
                ln = torch.ones(b, dtype=torch.long)
        if spec.name in inputs:
            x = read_rows(inputs[spec.name], start, stop, f"modality {spec.name!r}")
            if ln is not None:
                t = int(x.shape[1]) if x.ndim > 1 else 0
                bad = col & ((ln < 1) | (ln > t))
                if bad.any():
                    row = int(bad.nonzero()[0, 0])
                    raise ValueError(
                        f"lengths[{spec.name!r}]: row {start + row} has length {int(ln[row])}, outside [1, {t}]"
                    )
                ln = torch.where(col, ln, torch.ones_like(ln))
            x = prepare_input(spec, m, x, col, ln, start, normalization)
        else:
            shape = [1 if s is None else int(s) for s in spec.shape]
            dtype = torch.long if spec.kind == ModalityKind.TOKENS else torch.float32
            x = torch.zeros(b, *shape, dtype=dtype)
        xs[spec.name] = x.to(device)
        if ln is not None:
            lens[spec.name] = ln.to(device)
    return Batch(
        inputs=xs,
        present=pres.to(device),
        target=torch.zeros(b, device=device),
        labeled=torch.zeros(b, dtype=torch.bool, device=device),
        lengths=lens,
    )
