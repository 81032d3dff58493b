"""The ``robult`` command line: train, evaluate, predict, inspect, export (:mod:`robult.cli.run_cmds`), config
(:mod:`robult.cli.config_cmd`), benchmark and tune (:mod:`robult.cli.experiment_cmds`), datasets
(:mod:`robult.cli.data_cmd`).

Heavy modules (Lightning, matplotlib, the trainer) are imported inside the commands, so ``robult --help`` is fast.
Errors in user input print one line naming the file or key and exit with status 2 (:mod:`robult.cli.errors`).
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from robult.cli import config_cmd, data_cmd, experiment_cmds, run_cmds
from robult.cli.errors import DEBUG_ENV, debugging, error_text, save_traceback
from robult.cli.experiment_cmds import DEFAULT_BENCHMARK_DATASET

app = typer.Typer(
    name="robult",
    help="Multimodal learning with scarce labels and missing modalities (Robult).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from robult import __version__

        typer.echo(f"robult {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", help="Print the full traceback of any error (also: environment variable ROBULT_DEBUG=1)."
        ),
    ] = False,
) -> None:
    """Multimodal learning with scarce labels and missing modalities (Robult)."""
    if debug:
        os.environ[DEBUG_ENV] = "1"


# the commands, in the order `robult --help` lists them (the config group comes last, after the commands)
for command in (run_cmds.train, run_cmds.evaluate, run_cmds.predict, run_cmds.inspect, run_cmds.export):
    app.command()(command)
app.add_typer(config_cmd.config_app, name="config")
for command in (experiment_cmds.benchmark, experiment_cmds.tune, data_cmd.datasets):
    app.command()(command)


def main() -> None:
    """Entry point of the ``robult`` script. An exception that is not a user error (a bug of ours or of a library)
    prints one line naming the file its traceback was saved to, and exits with status 1; ``--debug`` (or
    ``ROBULT_DEBUG=1``) prints the traceback instead."""
    try:
        app(prog_name="robult")
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:
        if debugging():
            raise
        saved = save_traceback(err)
        where = f"traceback saved to {saved}" if saved else "rerun with --debug for the traceback"
        typer.secho(
            f"error: unexpected {type(err).__name__}: {error_text(err)} ({where}; please report it with that file)",
            fg=typer.colors.RED,
            err=True,
        )
        sys.exit(1)


__all__ = ["DEFAULT_BENCHMARK_DATASET", "app", "main"]
