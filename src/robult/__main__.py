"""``python -m robult`` runs the command line."""

from robult.cli import main

main()
