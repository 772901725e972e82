"""Every command's ``--help`` shows its texts whole (nothing read as markup and dropped)."""

from __future__ import annotations

import pytest

from shenjing.cli.app import app, main


def _commands() -> list[str]:
    import typer.main

    group = typer.main.get_command(app)
    return sorted(group.commands)  # type: ignore[attr-defined]


def _help(capsys, command: str) -> str:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
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
