"""How the ``robult`` commands report errors: a user error is one line (exit 2); anything else is a bug of ours or
of a library: one line naming a saved traceback (exit 1, :func:`robult.cli.main`). ``--debug`` (or
``ROBULT_DEBUG=1``) prints the traceback of every error instead."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

ROBULT_DIR = Path(__file__).resolve().parents[1]  # the robult package (this file is robult/cli/errors.py)

DEBUG_ENV = "ROBULT_DEBUG"

ERROR_DIR_ENV = "ROBULT_ERROR_DIR"


def debugging() -> bool:
    """Whether ``--debug`` or ``ROBULT_DEBUG`` asks for tracebacks."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def save_traceback(err: BaseException) -> Path | None:
    """Write ``err``'s traceback to ``$ROBULT_ERROR_DIR`` (default: the system's temp directory) and return the
    file, or ``None`` where it cannot be written (the one-line message must not fail in turn)."""
    import tempfile
    import time
    import traceback

    folder = Path(os.environ.get(ERROR_DIR_ENV) or tempfile.gettempdir())
    path = folder / f"robult-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    from robult import __version__

    text = f"robult {__version__}\ncommand: {' '.join(sys.argv)}\n\n" + "".join(
        traceback.format_exception(type(err), err, err.__traceback__)
    )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError:
        return None
    return path


def raised_outside_robult(err: BaseException) -> bool:
    """Whether the innermost frame of ``err``'s traceback lies outside the robult package: a ``ValueError`` that
    robult did not raise itself (numpy's, torch's) may be a bug of ours rather than a checked input."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return ROBULT_DIR not in Path(tb.tb_frame.f_code.co_filename).resolve().parents


def fail(message: str | BaseException) -> None:
    if isinstance(message, BaseException):
        err = message
        message = error_text(err)
        if not isinstance(err, OSError) and raised_outside_robult(err):
            saved = save_traceback(err)
            if saved is not None:
                message += f" (raised outside robult: traceback saved to {saved})"
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def error_text(err: BaseException) -> str:
    """One line: an ``OSError`` as ``FILE: reason`` (a full disk, a read-only or missing directory, a file where a
    directory is expected), anything else as its text."""
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        target = f" -> {err.filename2}" if err.filename2 is not None else ""
        return f"{err.filename}{target}: {err.strerror}"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return " ".join(str(err).split()) or type(err).__name__


def user_errors() -> tuple[type[BaseException], ...]:
    """What the commands report in one line instead of a traceback (``OSError`` includes ``FileNotFoundError``,
    ``FileExistsError``, a full disk and a read-only file system)."""
    from robult.config import ConfigError

    return (ConfigError, ValueError, OSError)


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Report the user errors (:func:`user_errors`) raised inside as one line and exit with status 2."""
    try:
        yield
    except user_errors() as err:
        if debugging():
            raise
        fail(err)
