"""Run the CLI in-process and return what a user would see: exit code, stdout, stderr."""

from __future__ import annotations

from typing import Any


def invoke(capsys: Any, *args: str) -> tuple[int, str, str]:
    """``shenjing ARGS…`` through :func:`shenjing.cli.app.main` (the console entry point)."""
    from shenjing.cli.app import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
