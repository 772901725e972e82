"""Command-line interface (``shenjing``): a thin layer over the library."""

from shenjing.cli.app import app, main

__all__ = ["app", "main"]
