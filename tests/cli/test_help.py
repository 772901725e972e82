"""Every command's ``--help`` shows its texts whole (nothing read as markup and dropped)."""

from __future__ import annotations

import pytest

from shenjing.cli.app import app, main


def _commands() -> list[str]:
    """Every command as typed after ``shenjing``, a group's subcommands too
    (``landscape``, ``landscape line`` …)."""
    import typer.main

    def walk(group, prefix: str) -> list[str]:
        found = []
        for name, command in group.commands.items():
            found.append(prefix + name)
            if hasattr(command, "commands"):
                found += walk(command, f"{prefix}{name} ")
        return found

    return sorted(walk(typer.main.get_command(app), ""))


def _help(capsys, command: str) -> str:
    with pytest.raises(SystemExit) as info:
        main([*command.split(), "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", _commands())
def test_help_texts_are_whole(capsys, command):
    text = _help(capsys, command)
    assert "Usage: shenjing " + command in text
    # a "[default: …]" swallowed as markup leaves "write ." behind
    import re

    assert not re.search(r" \.(\s|$)", text), text


def test_bracketed_defaults_are_shown(capsys):
    text = _help(capsys, "train")
    assert "Run folder to write [default: runs/MODEL-DATA]." in " ".join(text.split())


@pytest.mark.parametrize("command", [c for c in _commands() if c not in ("runs", "layers")])
def test_every_command_says_whether_it_resumes(capsys, command):
    """Issue 13 item 11: a user must know before a long job whether a kill costs it all."""
    text = " ".join(_help(capsys, command).split()).lower()
    assert "resum" in text, text[:400]
