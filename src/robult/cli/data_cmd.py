"""``robult datasets``: the registered datasets and where each is read from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def datasets(
    data_dir: Annotated[Path | None, typer.Option(help="Root data directory to check.")] = None,
) -> None:
    """List the registered datasets and where each is read from."""
    from robult.data.registry import default_data_dir, registered_datasets

    root = data_dir or default_data_dir()
    typer.echo(f"data directory: {root if root else '(none: pass --data-dir or set $ROBULT_DATA_DIR)'}")
    rows = []
    for name, info in sorted(registered_datasets().items(), key=lambda kv: (kv[1].group, kv[0])):
        if info.folder is None:
            where = "generated" if info.group == "generated" else "given path"
        elif root is None:
            where = f"<data-dir>/{info.folder} (no data directory)"
        else:
            folder = Path(root) / info.folder
            where = f"{folder}" + ("" if folder.is_dir() else "  [missing]")
        rows.append((name, info.group, where, info.description))
    width = max(len(r[0]) for r in rows)
    gwidth = max(len(r[1]) for r in rows)
    for name, group, where, desc in rows:
        typer.echo(f"{name:<{width}}  {group:<{gwidth}}  {desc}\n{'':<{width}}  {'':<{gwidth}}  -> {where}")
