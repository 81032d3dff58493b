"""Option dataclasses (a model's or a loss's config) as sections of the run config: their fields, meanings and union.

A method reads one model config and one loss config (:class:`robult.methods.Method`); the run config's ``model`` and
``loss`` sections are the unions of those of every registered method. A key that two configs share must mean the same
thing in both: same type, same default and same bounds (:func:`option_fields` raises otherwise, so a mismatch fails
at import).
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any

from robult.utils.bounds import field_bounds


def docstring_attributes(cls: type) -> dict[str, str]:
    """Field name -> meaning, from the ``Attributes:`` block of a class docstring (Google style; an entry may name
    several fields, ``a, b, c: meaning``, and continue on indented lines). Only ``cls``'s own docstring is read
    (:func:`field_meanings` adds its bases')."""
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    out: dict[str, str] = {}
    lines = doc.split("\n")
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
    except StopIteration:
        return out
    keys: list[str] = []
    indent: int | None = None
    for line in lines[start + 1 :]:
        if not line.strip():
            if keys:
                continue
            break
        width = len(line) - len(line.lstrip())
        if indent is None:
            indent = width
        if width < indent:
            break
        text = line.strip()
        head, sep, rest = text.partition(": ")
        names = [h.strip() for h in head.split(",")]
        if width == indent and sep and all(n.isidentifier() for n in names):
            keys = names
            for k in keys:
                out[k] = rest.strip()
        elif keys:
            for k in keys:
                out[k] = f"{out[k]} {text}".strip()
    return out


def field_meanings(cls: type) -> dict[str, str]:
    """Field name -> meaning for every field of the dataclass ``cls``: a field's ``metadata["help"]`` when it has
    one, else the ``Attributes:`` entry of the nearest class in its MRO that documents it."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        out.update(docstring_attributes(klass))
    for f in dataclasses.fields(cls):
        if "help" in f.metadata:
            out[f.name] = str(f.metadata["help"])
    return {f.name: out[f.name] for f in dataclasses.fields(cls) if f.name in out}


@dataclasses.dataclass(frozen=True)
class OptionField:
    """One key of a union of configs: its field (from the first config that declares it), type and the configs
    declaring it."""

    name: str
    type: Any
    field: dataclasses.Field
    owners: tuple[type, ...]

    @property
    def default(self) -> Any:
        return self.field.default


def option_fields(configs: typing.Iterable[type], section: str = "loss") -> dict[str, OptionField]:
    """The union of the fields of the dataclasses ``configs`` (each counted once), in declaration order.

    Raises:
        TypeError: a field without a default, or a key declared by two configs with a different type, default or
            bounds (the name would mean two things in one run config). ``section`` names the section in the message.
    """
    out: dict[str, OptionField] = {}
    for cls in dict.fromkeys(configs):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.default is dataclasses.MISSING:
                raise TypeError(f"{cls.__name__}.{f.name} has no default; every {section} option needs one")
            seen = out.get(f.name)
            if seen is None:
                out[f.name] = OptionField(f.name, hints[f.name], f, (cls,))
                continue
            first = seen.owners[0].__name__
            for what, a, b in (
                ("type", seen.type, hints[f.name]),
                ("default", seen.default, f.default),
                ("bounds", field_bounds(seen.field), field_bounds(f)),
            ):
                if a != b:
                    raise TypeError(
                        f"{section} option {f.name!r} has {what} {a!r} in {first} but {b!r} in {cls.__name__}: a key "
                        f"shared by two {section} configs must mean one thing (rename one of them)"
                    )
            out[f.name] = dataclasses.replace(seen, owners=(*seen.owners, cls))
    return out


def option(default: Any, help: str, **bounds: float) -> Any:
    """A config dataclass field with its default, its meaning (``robult config show`` prints it) and numeric bounds
    (``ge``, ``gt``, ``le``, ``lt``; checked by the run config and :func:`robult.utils.bounds.check_bounds`)::

        hidden_dim: int = option(128, "the common width of every encoder output", ge=1)
    """
    return dataclasses.field(default=default, metadata={**bounds, "help": help})


def option_names(cls: type) -> list[str]:
    """The field names of the dataclass ``cls``, in declaration order."""
    return [f.name for f in dataclasses.fields(cls)]


__all__ = ["OptionField", "docstring_attributes", "field_meanings", "option", "option_fields", "option_names"]
