"""``robult config show``: every config key with its default and meaning, or a resolved config as YAML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from robult.cli.errors import one_line_errors

config_app = typer.Typer(help="Inspect the run configuration.", no_args_is_help=True)


@config_app.command("show")
def config_show(
    method: Annotated[
        str | None,
        typer.Option(
            help="Only the keys this method reads, with the values it uses (its fixed options and fallbacks); with "
            "--config/--set, its resolved values and the keys it ignores."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Print the resolved config of this YAML file (with --set applied)."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key, e.g. --set train.lr=0.001 (repeatable); prints the result."),
    ] = None,
) -> None:
    """Print every config key with its type, default and meaning (set them in YAML or with --set section.key=value);
    with --config and/or --set, print the resolved config as YAML instead (every key, as a run would use it). With
    --method, only that method's keys (and, resolved, the keys the config sets that it ignores, as comments)."""
    if config is not None or set_:
        with one_line_errors():
            from robult.config import config_to_yaml, load_config, method_config_yaml

            flags = [f"train.method={json.dumps(method)}"] if method is not None else []
            resolved = load_config(config, [*flags, *(set_ or [])])
        typer.echo(config_to_yaml(resolved) if method is None else method_config_yaml(resolved), nl=False)
        return
    with one_line_errors():
        from robult.config import config_keys, format_config_keys
        from robult.methods import METHODS

        rows = config_keys(method)
    typer.echo(format_config_keys(rows))
    typer.echo("\nmethods: " + ", ".join(sorted(METHODS)))
