"""Provenance of a result: package version, git commit (when the package runs from a git checkout), torch and
Python versions, the device and the date. Recorded in every run's ``result.json`` and in a benchmark's
``results.json`` / ``summary.md``.

Only the standard library is imported at module level; torch is imported inside the functions.
"""

from __future__ import annotations

import datetime as _dt
import functools
import platform
import subprocess
from pathlib import Path
from typing import Any


@functools.lru_cache(maxsize=1)
def git_commit() -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` of the git checkout the package is imported from, or ``None`` when it is
    not one (an installed wheel), git is missing or does not answer within a few seconds."""
    source = Path(__file__).resolve().parents[1]  # src/robult
    try:
        top = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "--show-toplevel", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.split()
        if len(top) != 2 or not source.is_relative_to(Path(top[0]).resolve()):
            return None
        status = subprocess.run(
            ["git", "-C", top[0], "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return {"commit": top[1], "dirty": bool(status.strip())}


def describe_device(device: Any = None, world_size: int = 1) -> str:
    """A device in words, e.g. ``cpu (x86_64, 2 threads)`` or ``cuda:0 (NVIDIA H200)``; ``device`` is a
    ``torch.device`` or its string (default: the CPU). ``world_size > 1`` prefixes the process count."""
    import torch

    dev = torch.device(device if device is not None else "cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        text = f"{dev} ({torch.cuda.get_device_name(dev)})"
    elif dev.type == "cpu":
        text = f"cpu ({platform.machine() or 'unknown'}, {torch.get_num_threads()} threads)"
    else:
        text = str(dev)
    return f"{world_size} x {text}" if world_size > 1 else text


def provenance(device: Any = None, world_size: int = 1) -> dict[str, Any]:
    """What produced a result: ``robult`` and ``torch`` versions, ``python``, ``git`` (commit and whether the work
    tree had uncommitted changes; ``None`` outside a git checkout), ``device`` (see :func:`describe_device`),
    and ``date`` (UTC, ISO 8601)."""
    import torch

    from robult import __version__

    return {
        "robult": __version__,
        "git": git_commit(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": describe_device(device, world_size),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def provenance_line(info: dict[str, Any]) -> str:
    """One markdown line of a :func:`provenance` record (for ``summary.md``)."""
    git = info.get("git")
    if not git:
        commit = "not a git checkout"
    else:
        commit = git["commit"][:12] + (" (uncommitted changes)" if git["dirty"] else "")
    return (
        f"robult {info['robult']}, commit {commit}, torch {info['torch']}, Python {info['python']}, "
        f"device {info['device']}, {info['date']}"
    )
