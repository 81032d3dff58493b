"""Numeric bounds of config dataclass fields, declared once in the field's metadata.

A field declared ``field(default=0.5, metadata={"gt": 0.0})`` is checked by :func:`check_bounds` (called from the
dataclass's ``__post_init__``) and, with the same bounds, by the run config's pydantic section
(:mod:`robult.config`), which names the key (``loss.temperature``) in its error.
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any

BOUNDS = {"gt": (operator.gt, ">"), "ge": (operator.ge, ">="), "lt": (operator.lt, "<"), "le": (operator.le, "<=")}


def field_bounds(f: dataclasses.Field) -> dict[str, float]:
    """The ``gt``/``ge``/``lt``/``le`` bounds in a field's metadata (the keyword names of ``pydantic.Field``)."""
    return {k: v for k, v in f.metadata.items() if k in BOUNDS}


def check_bounds(obj: Any) -> None:
    """Raise ``ValueError`` naming the first field of dataclass ``obj`` outside its declared bounds."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        for kind, bound in field_bounds(f).items():
            test, symbol = BOUNDS[kind]
            if not test(value, bound):
                raise ValueError(f"{f.name} must be {symbol} {bound}, got {value!r}")
