"""Scalar logging of loss results: every loss returns a small dataclass, and its ``log_dict`` is built here from
its fields, so a trainer never probes a loss's attributes."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor


def scalar_log(prefix: str, parts: dict[str, Tensor | float]) -> dict[str, float]:
    """``{prefix + name: float}`` from tensors (detached) and numbers: the ``log_dict`` of every loss result.

    The tensors of one device are read back in one transfer (on a GPU each read is a synchronisation), widened to
    float64 first, so each value is exactly ``float(tensor)``."""
    tensors = [v for v in parts.values() if isinstance(v, Tensor)]
    if len({t.device for t in tensors}) == 1:
        read = iter(torch.stack([t.detach().reshape(()).double() for t in tensors]).tolist())
        values = [next(read) if isinstance(v, Tensor) else float(v) for v in parts.values()]
    else:
        values = [float(v.detach()) if isinstance(v, Tensor) else float(v) for v in parts.values()]
    return {f"{prefix}{k}": value for k, value in zip(parts, values, strict=True)}


def fields_log(prefix: str, result: Any, rename: Mapping[str, str] | None = None) -> dict[str, float]:
    """:func:`scalar_log` of every field of a loss-result dataclass that holds a number or a one-element tensor,
    in field order (``None`` and nested results are skipped), under ``rename[field]`` where given."""
    rename = rename or {}
    parts: dict[str, Tensor | float] = {}
    for f in dataclasses.fields(result):
        value = getattr(result, f.name)
        scalar = value.numel() == 1 if isinstance(value, Tensor) else isinstance(value, int | float)
        if scalar:
            parts[rename.get(f.name, f.name)] = value
    return scalar_log(prefix, parts)
