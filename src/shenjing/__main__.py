"""``python -m shenjing`` runs the CLI."""

from shenjing.cli import main

main()
