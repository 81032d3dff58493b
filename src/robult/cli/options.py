"""Help texts the ``robult`` commands share."""

from __future__ import annotations


def help_text(text: str) -> str:
    """``text`` as it should read in ``--help``: the help renderer (rich markup) drops ``[...]``, which must be
    escaped to show an extra such as ``robult[parquet]``."""
    return text.replace("[", "\\[")


def method_names() -> str:
    """The registered methods (robult.methods.METHODS), for help texts."""
    from robult.methods import METHODS

    return ", ".join(sorted(METHODS))
