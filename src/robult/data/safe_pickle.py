"""A restricted unpickler for the public feature pickles (MMSA, MultiBench).

``pickle.load`` runs whatever callable a file names, so a downloaded pickle can execute code. :func:`safe_load`
admits only the globals that plain containers and numpy arrays, dtypes and scalars need, and refuses every other
one with :class:`UnsafePickleError`, naming the file and the offending ``module.qualname``.

Admitted: ``numpy.ndarray``, ``numpy.dtype``, ``_reconstruct`` / ``scalar`` (``numpy.core.multiarray`` as written
by numpy 1.x, ``numpy._core.multiarray`` as written by numpy 2), ``_frombuffer`` (protocol 5), ``_codecs.encode``
(how protocol-2 pickles store ``bytes``), ``collections.OrderedDict`` and the plain builtin containers
(``set``, ``frozenset``, ``bytearray``, ``complex``, ...; ``__builtin__`` for Python-2-era protocols). Object
arrays (MMSA's ``raw_text`` and ``id``) pickle their items as plain ``str`` and load fine.
"""

from __future__ import annotations

import codecs
import collections
import io
import pickle
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["UnsafePickleError", "safe_load", "safe_loads"]


class UnsafePickleError(ValueError):
    """A pickle that references a global outside the allow-list (code execution risk or an unexpected type)."""


def _numpy_core(module: str) -> Any:
    """``numpy._core.<module>`` (numpy >= 2) or ``numpy.core.<module>`` (numpy 1.x), whichever is installed."""
    import importlib

    try:
        return importlib.import_module(f"numpy._core.{module}")
    except ImportError:  # numpy < 1.26 has no numpy._core
        return importlib.import_module(f"numpy.core.{module}")


def _allowed() -> dict[tuple[str, str], Any]:
    multiarray = _numpy_core("multiarray")
    numeric = _numpy_core("numeric")
    table: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("_codecs", "encode"): codecs.encode,
    }
    for core in ("numpy.core", "numpy._core"):
        table[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        table[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        table[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    plain = {
        "dict": dict,
        "list": list,
        "tuple": tuple,
        "set": set,
        "frozenset": frozenset,
        "bytearray": bytearray,
        "bytes": bytes,
        "str": str,
        "int": int,
        "float": float,
        "complex": complex,
        "bool": bool,
    }
    for module in ("builtins", "__builtin__"):
        for name, obj in plain.items():
            table[(module, name)] = obj
    return table


_ALLOWED: dict[tuple[str, str], Any] | None = None


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], source: str) -> None:
        super().__init__(file, encoding="latin1")  # latin1: how numpy reads Python-2-era array payloads
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        global _ALLOWED
        if _ALLOWED is None:
            _ALLOWED = _allowed()
        obj = _ALLOWED.get((module, name))
        if obj is None:
            raise UnsafePickleError(
                f"{self._source}: refusing to unpickle {module}.{name}; only numpy arrays, dtypes, scalars and plain "
                "containers are allowed in a data pickle (convert the file to plain numpy arrays)"
            )
        return obj


def safe_load(path_or_file: str | Path | IO[bytes]) -> Any:
    """Unpickle a file (path or binary file object) admitting only numpy arrays and plain containers.

    Raises:
        UnsafePickleError: the pickle references another global (named in the message with the file).
        ValueError: the file is not a readable pickle (truncated, another format), naming the file.
    """
    if isinstance(path_or_file, (str, Path)):
        with open(path_or_file, "rb") as fh:
            return _load(fh, str(path_or_file))
    return _load(path_or_file, str(getattr(path_or_file, "name", "<stream>")))


def _load(fh: IO[bytes], source: str) -> Any:
    try:
        return _RestrictedUnpickler(fh, source).load()
    except UnsafePickleError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        AttributeError,
        ImportError,
        IndexError,
        KeyError,
        TypeError,
        ValueError,
    ) as err:
        raise ValueError(f"{source}: not a readable pickle ({type(err).__name__}: {err})") from err


def safe_loads(data: bytes, source: str = "<bytes>") -> Any:
    """:func:`safe_load` for an in-memory pickle; ``source`` names it in errors."""
    buf = io.BytesIO(data)
    buf.name = source  # type: ignore[attr-defined]
    return safe_load(buf)
