"""How ``shenjing landscape`` reads its command line: one subcommand per kind of landscape
(``line``, ``plane``, ``trajectory``), the old one-command spelling translated onto them, and
one line naming the kind an option belongs to when it is given to another.

Why a group class: ``shenjing landscape RUN --line 0:final`` is in users' scripts, so the
old spelling must keep working, but each kind now takes only its own options. Translating
the old spelling into the new one, before Click parses anything, lets Click's own parser
refuse what does not apply, with the same options, defaults and checks for both spellings.
"""

from __future__ import annotations

import shlex
from typing import Any

from rich.console import Console
from typer.core import TyperCommand, TyperGroup

from shenjing.cli._common import click_errors
from shenjing.errors import UsageError

KIND_FLAGS: dict[str, str] = {"--line": "line", "--plane": "plane",
                              "--trajectory": "trajectory"}
"""The old spelling's flag for each kind → the subcommand that now computes it."""

LINE_ENDS = ("--from", "--to")
"""The new spelling of the old ``--line START:END``."""

WHY_NOT: dict[tuple[str, str], str] = {
    ("trajectory", "--range"): "its plane covers the trajectory's own extent",
}
"""Why an option does not apply to a kind, where the kind's help alone would not say."""

_OLD_SPELLING = "shenjing.landscape.old_spelling"
"""Key in Click's shared ``ctx.meta``: the old spelling's kind flag, set while it runs."""

_NEW_SPELLING = "shenjing.landscape.new_spelling"
"""Key in ``ctx.meta``: the command line in the new spelling, for the deprecation note."""

notes = Console(stderr=True, emoji=False)


class LandscapeGroup(TyperGroup):
    """The ``landscape`` group: ``line|plane|trajectory RUN …``, or the old ``RUN --line A:B``
    (``--plane``, ``--trajectory``) rewritten into that before it is parsed."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Rewrite the old spelling into the new one, then parse as a group does."""
        if args and args[0] not in self.commands:
            if _asks_for_group_help(args):
                return super().parse_args(ctx, ["--help"])
            kind, new_args = translate_old_spelling(args)
            ctx.meta[_OLD_SPELLING] = f"--{kind}"  # the old flag is the kind's name
            ctx.meta[_NEW_SPELLING] = f"shenjing landscape {shlex.join([kind, *new_args])}"
            args = [kind, *new_args]
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        """Run the subcommand; after an old-spelling run that worked, say the new spelling.

        The note comes last, and only when the command succeeded, so that a refused command
        still prints exactly one line on stderr (the error), whichever spelling it used.
        """
        result = super().invoke(ctx)
        new_spelling = ctx.meta.get(_NEW_SPELLING)
        if new_spelling is not None:
            notes.print(f"note: `shenjing landscape RUN --line/--plane/--trajectory` is "
                        f"deprecated; write: {new_spelling}", style="yellow", markup=False,
                        highlight=False, soft_wrap=True)
        return result


class KindCommand(TyperCommand):
    """One kind's subcommand: an option that belongs to another kind is refused naming
    both, instead of Click's bare ``No such option``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Parse as Click does; translate its refusal of another kind's option."""
        usage_error, _ = click_errors()
        try:
            return super().parse_args(ctx, args)
        except usage_error as exc:
            option = getattr(exc, "option_name", None)
            if not isinstance(option, str) or not (owners := _kinds_with_option(ctx, option)):
                raise
            no_such_option: Any = type(exc)  # Click's NoSuchOption, from Typer's own copy
            message = not_applicable(option, kind=ctx.info_name, owners=owners,
                                     old_flag=ctx.meta.get(_OLD_SPELLING))
            raise no_such_option(option, message=message, ctx=ctx) from None


def not_applicable(option: str, *, kind: str, owners: list[str],
                   old_flag: str | None = None) -> str:
    """The one line that refuses ``option`` for ``kind``, naming the kinds that take it.

    >>> not_applicable("--norm", kind="line", owners=["plane"])
    '--norm does not apply to a line; it is an option of `landscape plane`'
    """
    what = old_flag or f"a {kind}"
    why = WHY_NOT.get((kind, option))
    where = " and ".join(f"`landscape {k}`" for k in owners)
    return (f"{option} does not apply to {what}{f': {why}' if why else ''}; "
            f"it is an option of {where}")


def _kinds_with_option(ctx: Any, option: str) -> list[str]:
    """The sibling subcommands (kinds) that take ``option``, in the group's order."""
    group = getattr(ctx.parent, "command", None)
    siblings = getattr(group, "commands", {})
    return [name for name, command in siblings.items()
            if any(option in (*p.opts, *getattr(p, "secondary_opts", ()))
                   for p in command.params)]


def _asks_for_group_help(args: list[str]) -> bool:
    """``landscape --help``, or ``landscape RUN --help`` with no kind to show the help of."""
    return "--help" in args and not any(_flag_name(a) in KIND_FLAGS for a in args)


def _flag_name(token: str) -> str:
    return token.partition("=")[0]


def translate_old_spelling(args: list[str]) -> tuple[str, list[str]]:
    """``RUN --line A:B …`` → ``('line', [RUN, '--from', A, '--to', B, …])``; ``--plane``
    and ``--trajectory`` become the subcommand. Every other token is kept, in order, for
    the subcommand's parser to accept or refuse.

    >>> translate_old_spelling(["runs/mlp", "--line", "0:final", "--steps", "5"])
    ('line', ['runs/mlp', '--from', '0', '--to', 'final', '--steps', '5'])
    >>> translate_old_spelling(["--plane", "runs/mlp"])
    ('plane', ['runs/mlp'])
    """
    kinds: list[str] = []
    kept: list[str] = []
    line_at, line_value = -1, ""
    tokens = iter(args)
    for token in tokens:
        name, has_value, value = token.partition("=")
        if name == "--line":
            kinds.append("line")
            line_at, line_value = len(kept), value if has_value else next(tokens, "")
        elif token in KIND_FLAGS:
            kinds.append(KIND_FLAGS[token])
        else:
            kept.append(token)
    if len(kinds) != 1:
        raise UsageError("choose exactly one of --line START:END, --plane, --trajectory; "
                         "or, the new spelling, `shenjing landscape line|plane|trajectory "
                         "RUN` (see `shenjing landscape --help`)")
    if kinds[0] != "line":
        return kinds[0], kept
    given = [t for t in kept if _flag_name(t) in LINE_ENDS]
    if given:
        raise UsageError(f"--line and {given[0]} both give the line's ends; use "
                         "`shenjing landscape line RUN --from START --to END` alone")
    start, end = _parse_line(line_value)
    return "line", [*kept[:line_at], "--from", start, "--to", end, *kept[line_at:]]


def _parse_line(text: str) -> tuple[str, str]:
    """``'0:final'`` → ``('0', 'final')``, refusing anything but two non-empty ends."""
    parts = text.split(":")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise UsageError(f"--line {text!r} must look like START:END, e.g. 0:final or "
                         "init:final")
    return parts[0].strip(), parts[1].strip()
