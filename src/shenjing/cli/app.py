"""The Typer app: one group per area, registered from ``COMMAND_MODULES``.

Each module in ``shenjing.cli`` named here defines ``register(app)``, adding commands
that each turn their options into one library call. Library errors are caught only here,
at the edge, and printed as one red line; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import importlib
import os
import sys

# OpenMP threads that spin while waiting make small torch ops 8-10x slower whenever another
# process shares the cores (measured on a 2-core machine: 2 epochs of dropout_cnn on digits
# took 14.1 s with the default policy, 1.7 s passive). Set before torch is imported; a
# value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer
from rich.console import Console

from shenjing._version import __version__
from shenjing.errors import ShenjingError, UsageError

# modules under shenjing.cli that add commands (each has ``register(app)``)
COMMAND_MODULES: tuple[str, ...] = (
    "inspect",
    "train",
    "report",
    "landscape",
    "hessian",
    "maps",
    "filters",
    "weights",
    "dynamics",
    "fit",
    "warp",
    "capture",
    "embed",
    "attention",
    "recurrent",
    "attribute",
    "units",
    "visualize",
    "gan",
    "dann",
    "compare",
    "export",
)

console = Console(stderr=True, emoji=False)
app = typer.Typer(
    name="shenjing",
    help="See what a PyTorch network has learned: features, maps, filters, landscapes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # help texts are plain text: "[default: runs/MODEL-DATA]" must not be read as markup
    rich_markup_mode=None,
)

_state = {"debug": False}


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"shenjing {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback,
                                 is_eager=True, help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    """shenjing (神经): what has my network learned, and where is it kept?"""
    _state["debug"] = debug


for _name in COMMAND_MODULES:
    importlib.import_module(f"shenjing.cli.{_name}").register(app)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, turning every refusal into one line.

    Click's own usage errors (a missing option, a value that is not a number, an unknown
    option) and shenjing's errors are printed as one red line: exit 2 for usage errors, 1
    otherwise. ``--debug`` lets shenjing's errors through with their traceback.
    """
    from shenjing.cli._common import click_error_line, click_errors

    args = sys.argv[1:] if argv is None else list(argv)
    usage_error, abort = click_errors()
    try:
        code = app(args=args, prog_name="shenjing", standalone_mode=False)
    except usage_error as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `shenjing`: the help, as ever
            exc.show()  # type: ignore[attr-defined]
            sys.exit(2)
        commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
        _print_error("UsageError", click_error_line(exc, args, commands))
        sys.exit(2)
    except abort as exc:
        cause = exc.__cause__  # an EOFError raised by the command, or ctrl-D at a prompt
        detail = f": {type(cause).__name__}: {cause}" if cause is not None else ""
        _print_error("Aborted", f"stopped before finishing{detail}; nothing more was done")
        sys.exit(1)
    except ShenjingError as exc:
        if _state["debug"]:
            raise
        _print_error(type(exc).__name__, str(exc))
        sys.exit(2 if isinstance(exc, UsageError) else 1)
    # like Click's standalone mode: always leave through SystemExit (0 when all went well)
    sys.exit(code if isinstance(code, int) and not isinstance(code, bool) else 0)


def _print_error(kind: str, message: str) -> None:
    """One red line on stderr: ``Kind: message``."""
    from rich.markup import escape

    # one line even when the message quotes a multi-line error of the user's code
    text = " ".join(part.strip() for part in message.splitlines() if part.strip())
    # escape: messages carry user text and pip lines like "shenjing[vision]"
    console.print(f"[red]{escape(f'{kind}: {text}')}[/red]", highlight=False,
                  soft_wrap=True)
