"""``python -m robult.cli`` runs the command line, as ``python -m robult`` does."""

from robult.cli import main

main()
