"""What a run wrote: ``<run>/written.json``, the manifest that ``--overwrite`` and ``--resume`` trust.

Before robult writes a file (or creates a directory) in a run directory, it lists its path here, relative to the
run directory (a directory ends with ``/``). ``--overwrite`` deletes exactly the listed files, and the listed
directories once they are empty, so a file robult never wrote (your notes in ``logs/``, a file of the same name
that was there before) is never deleted; it never follows a symbolic link and never deletes outside ``out_dir``.
Resuming removes the temporary files of robult's own atomic writes that a kill left behind (``.<file>.<random>.tmp``
beside a listed file, ``.model.<random>.tmp`` and ``.model.old-<hex>`` artefact directories), nothing else.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from robult.utils.io import atomic_write_json

WRITTEN = "written.json"
FORMAT = "robult-written"
# the temporary names of robult's writers: utils.io.atomic_open (tempfile.mkstemp: 8 random characters) and the
# model artefact's directory swap (inference.artefact.write_artefact)
_TEMP_FILE = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp$")
_TEMP_DIRS = (re.compile(r"^\.model\.[A-Za-z0-9_]{8}\.tmp$"), re.compile(r"^\.model\.old-[0-9a-f]{8}$"))


class WrittenError(ValueError):
    """A manifest that cannot be trusted (unreadable, or a path leaving the run directory)."""


def _check_entry(entry: object, where: Path) -> str:
    if not isinstance(entry, str) or not entry:
        raise WrittenError(f"{where}: entry {entry!r} is not a path")
    p = PurePosixPath(entry.rstrip("/"))
    if p.is_absolute() or ".." in p.parts or "\\" in entry or not p.parts:
        raise WrittenError(f"{where}: entry {entry!r} leaves the run directory; the manifest was altered")
    return entry


def recorded(run_dir: str | Path) -> list[str] | None:
    """The paths listed in ``<run_dir>/written.json`` (``None`` when there is none: a run of an older robult)."""
    path = Path(run_dir) / WRITTEN
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WrittenError(f"{path}: cannot read the list of files robult wrote ({err})") from None
    paths = doc.get("paths") if isinstance(doc, dict) else None
    if not isinstance(paths, list):
        raise WrittenError(f"{path}: no 'paths' list")
    return [_check_entry(p, path) for p in paths]


def record(run_dir: str | Path, paths: Iterable[str]) -> None:
    """Add ``paths`` (relative to ``run_dir``; ``dir/`` for a directory) to the manifest before they are written;
    a directory is listed only when robult creates it (one that exists and is not listed stays someone else's)."""
    run_dir = Path(run_dir)
    have = recorded(run_dir) or []
    new = []
    for p in paths:
        _check_entry(p, run_dir / WRITTEN)
        if p in have or p in new:
            continue
        if p.endswith("/") and (run_dir / p).exists():
            continue
        new.append(p)
    if new:
        atomic_write_json(run_dir / WRITTEN, {"format": FORMAT, "paths": [*have, *new]})


def _inside(path: Path, root: Path) -> bool:
    return os.path.realpath(path) == os.path.realpath(root) or os.path.realpath(path).startswith(
        os.path.realpath(root) + os.sep
    )


def clear_written(run_dir: str | Path, out_dir: str | Path) -> list[str]:
    """Delete what the manifest lists (files, then the listed directories that are empty, deepest first) and the
    manifest itself; return the deleted paths. A symbolic link is removed, never followed.

    Raises:
        WrittenError: the run directory is not inside ``out_dir`` (a symlinked run directory pointing elsewhere),
            or it has no manifest (a run of an older robult: nothing is deleted; delete it yourself to retrain).
    """
    run_dir = Path(run_dir)
    if run_dir.is_symlink() or not _inside(run_dir, out_dir) or os.path.realpath(run_dir) == os.path.realpath(out_dir):
        raise WrittenError(
            f"{run_dir}: --overwrite deletes only inside out_dir ({out_dir}), and this run directory is not inside it "
            "(a symbolic link?); delete its files yourself or choose another name"
        )
    paths = recorded(run_dir)
    if paths is None:
        raise WrittenError(
            f"{run_dir}: no {WRITTEN} (the list of files robult wrote; runs of older versions have none), so "
            "--overwrite deletes nothing; delete the run directory yourself to retrain it, or choose another name"
        )
    deleted = []
    for entry in [p for p in paths if not p.endswith("/")]:
        target = run_dir / entry
        if not (target.is_symlink() or target.exists()):
            continue
        if not _inside(target.parent, run_dir):  # a parent directory replaced by a link out of the run
            continue
        if target.is_symlink() or target.is_file():
            target.unlink()
            deleted.append(entry)
    for entry in sorted((p for p in paths if p.endswith("/")), key=lambda p: -len(PurePosixPath(p).parts)):
        target = run_dir / entry.rstrip("/")
        if target.is_symlink():
            target.unlink()
        elif target.is_dir() and _inside(target, run_dir) and not any(target.iterdir()):
            target.rmdir()
        else:
            continue
        deleted.append(entry)
    (run_dir / WRITTEN).unlink(missing_ok=True)
    return deleted


def clear_temp_files(run_dir: str | Path) -> list[str]:
    """Remove the temporary files robult's atomic writes leave when killed mid-write, beside the files the manifest
    lists (``checkpoints/.last.ckpt.k3j2x9a1.tmp``), and the model artefact's temporary directories; return them.
    Nothing else is touched, and nothing at all without a manifest."""
    run_dir = Path(run_dir)
    paths = recorded(run_dir)
    if not paths:
        return []
    listed = {PurePosixPath(p.rstrip("/")) for p in paths} | {PurePosixPath(WRITTEN)}
    removed = []
    for folder in {PurePosixPath(".")} | {p.parent for p in listed}:
        directory = run_dir / folder
        if not directory.is_dir() or directory.is_symlink() or not _inside(directory, run_dir):
            continue
        for child in directory.iterdir():
            m = _TEMP_FILE.match(child.name)
            if m and (folder / m.group("name")) in listed and child.is_file() and not child.is_symlink():
                child.unlink()
                removed.append(str(folder / child.name))
            elif (
                folder == PurePosixPath(".")
                and any(r.match(child.name) for r in _TEMP_DIRS)
                and child.is_dir()
                and not child.is_symlink()
            ):
                shutil.rmtree(child)
                removed.append(child.name)
    return sorted(removed)
