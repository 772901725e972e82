"""Option parsing shared by CLI commands."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import typer

from shenjing.errors import UsageError

TRUST_CODE_HELP = ("Run the code this run folder names (its model factory, data factory, loss "
                   "or function file) although you did not create the run on this machine. A "
                   "run folder is data: read that code first.")


def trust_code_option() -> Any:
    """``--trust-code``: consent to the run folder's code (see shenjing.trust)."""
    import typer

    return typer.Option(False, "--trust-code", help=TRUST_CODE_HELP)


def parse_epochs(text: str) -> list[int | str]:
    """``'0,5'`` → ``[0, 5]``; ``'init,final'`` kept as words for ``Run.resolve_epoch``."""
    out: list[int | str] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        out.append(int(part) if part.lstrip("-").isdigit() else part)
    if not out:
        raise UsageError(f"--epochs {text!r} names no epoch; use e.g. --epochs 0,5")
    return out


def parse_list(text: str | None) -> list[str]:
    """``'fc1, conv1'`` → ``['fc1', 'conv1']`` (empty for None)."""
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def parse_range(text: str, option: str = "--range") -> tuple[float, float]:
    """``'-0.5:1.5'`` → ``(-0.5, 1.5)``, refusing text that is not MIN:MAX of two finite
    numbers with min < max, in one line naming ``option``."""
    from shenjing._checks import value_range

    return value_range(option, text)


def name_list(option: str, text: str | None, *, example: str = "fc1,relu1") -> list[str] | None:
    """``--layers 'fc1, relu1'`` → ``['fc1', 'relu1']``; None when the option was not given.

    Given but naming nothing (``--layers ,``) is refused, naming the option, instead of
    being read as "not given" (which would silently mean "all" or "the default").
    """
    if text is None:
        return None
    names = parse_list(text)
    if not names:
        raise UsageError(f"{option} {text!r} names nothing; give names separated by commas, "
                         f"e.g. {option} {example}, or leave {option} out")
    return names


def click_errors() -> tuple[type[Exception], type[Exception]]:
    """Click's ``UsageError`` and ``Abort`` classes, from whichever click Typer runs on (its
    own copy in recent versions, the click package before): found through Typer's public
    ``BadParameter`` (a ``UsageError``) and ``Abort``."""
    import typer

    usage = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
    return usage, typer.Abort


_KINDS: dict[type, str] = {int: "a whole number", float: "a number"}


def click_error_line(exc: Exception, argv: list[str], commands: Iterable[str] = ()) -> str:
    """One line for a usage error Click found before the command ran.

    A value Click could not convert is said the way :mod:`shenjing._checks` says a value
    out of range (``--epochs 'abc': expected a whole number, e.g. --epochs 5``); anything
    else (a missing or unknown option) gets Click's message and where to read the options:
    the help of the subcommand in ``argv`` when it is one of ``commands``.
    """
    ctx = getattr(exc, "ctx", None)
    command = getattr(ctx, "command_path", None) or "shenjing"
    if command == "shenjing":  # an error met while parsing: the subcommand is in argv
        known = set(commands)
        named = next((a for a in argv if not a.startswith("-")), None)
        command = f"shenjing {named}" if named in known else command
    where = f"see `{command} --help`"
    param = getattr(exc, "param", None)
    annotation: Any = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    kind = _KINDS.get(annotation) if isinstance(annotation, type) else None
    if kind is not None and getattr(param, "param_type_name", "") == "option" and \
            type(exc).__name__ == "BadParameter":
        names = [*param.opts, *param.secondary_opts]  # type: ignore[union-attr]
        option = max(names, key=len)
        value = _given_value(argv, names)
        default = param.default  # type: ignore[union-attr]
        example = default if isinstance(default, (int, float)) and \
            not isinstance(default, bool) else 1
        return f"{option} {value!r}: expected {kind}, e.g. {option} {example} ({where})"
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    return f"{message.rstrip('.')}; {where}"


def _given_value(argv: list[str], names: list[str]) -> str:
    """The text given after the last of ``names`` in ``argv`` (``--n 5`` or ``--n=5``)."""
    value = ""
    for i, token in enumerate(argv):
        for name in names:
            if token == name and i + 1 < len(argv):
                value = argv[i + 1]
            elif token.startswith(f"{name}="):
                value = token[len(name) + 1:]
    return value


RUN_ARG = typer.Argument(..., help="Run folder (made by `shenjing train` or `inspect`).")
"""The RUN argument of every command that reads a run folder."""


def print_lines(out: Any, text: str) -> None:
    """Print a stage's text line by line, its ``WARNING`` lines in yellow, as plain text."""
    for line in text.splitlines():
        style = "yellow" if line.lstrip().startswith("WARNING") else None
        out.print(line, style=style, markup=False)
