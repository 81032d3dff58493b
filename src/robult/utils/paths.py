"""Names that become one directory level (a run name, a dataset's name in the mask store): checked once here."""

from __future__ import annotations

import re
import unicodedata


def path_component_problem(value: object) -> str | None:
    """Why ``value`` cannot be one path component, or ``None`` when it can: it must be a non-empty string, not
    ``.`` or ``..``, not start with ``.`` (hidden, or ``..`` tricks), with no ``/`` or ``\\`` (so not an absolute
    path either), no control character (newline, tab, NUL) and no surrounding spaces."""
    if not isinstance(value, str) or not value:
        return "it must be a non-empty string"
    if value in (".", ".."):
        return "it names the directory itself or its parent"
    if "/" in value or "\\" in value:
        return "it contains a path separator ('/' or '\\')"
    if value.startswith("."):
        return "it starts with '.'"
    if any(unicodedata.category(c).startswith("C") for c in value):
        return "it contains a control character (a newline, tab or the like)"
    if value != value.strip():
        return "it has leading or trailing spaces"
    return None


def check_path_component(value: object, what: str) -> str:
    """``value`` when it is one safe path component (:func:`path_component_problem`), else a ``ValueError`` naming
    ``what`` (e.g. ``"key 'name'"``) and the value."""
    problem = path_component_problem(value)
    if problem is not None:
        raise ValueError(f"{what}: {value!r} cannot name a directory: {problem}; use one plain name, e.g. 'my-run'")
    assert isinstance(value, str)
    return value


def safe_file_stem(name: str, fallback: str) -> str:
    """``name`` as a file stem: every character other than ``A-Z a-z 0-9 _ . -`` replaced by ``_``; ``fallback``
    when ``name`` is empty."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or fallback
