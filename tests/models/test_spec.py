"""``--model`` / ``--model-arg`` parsing: every bad value is one UsageError naming it."""

from __future__ import annotations

import pytest

from shenjing.errors import UnknownNameError, UsageError
from shenjing.models.spec import nn_from_factory, parse_model_args, resolve_factory


def test_model_args_are_python_literals_or_text():
    assert parse_model_args(["hidden=[64, 32]", "act=relu", "p=0.5", "name='x'"]) == {
        "hidden": [64, 32], "act": "relu", "p": 0.5, "name": "x"}


@pytest.mark.parametrize(("item", "match"), [
    ("hidden=[64", r"--model-arg 'hidden=\[64': '\[64' is not a Python literal \('\[' was "
                   r"never closed\); write e.g. --model-arg hidden=\[64,32\]"),
    ("shape=(1, 28", r"--model-arg 'shape=\(1, 28': '\(1, 28' is not a Python literal"),
    ("name='net", r"--model-arg \"name='net\": \"'net\" is not a Python literal"),
    ("deep=" + "[" * 500 + "]" * 500, r"--model-arg 'deep=\[\[\[.*is not a Python literal"),
])
def test_a_broken_literal_is_refused_not_passed_on_as_text(item, match):
    """``hidden=[64`` used to reach the factory as the string '[64'."""
    with pytest.raises(UsageError, match=match):
        parse_model_args([item])


def test_an_unknown_model_name_names_the_option_and_the_zoo():
    with pytest.raises(UnknownNameError, match=r"^--model 'mnistnett' is neither a zoo model "
                       r"nor a reference .*Did you mean 'mnistnet'.*\? Zoo models: mlp,"):
        resolve_factory("mnistnett")


def test_a_model_file_that_exits_at_import_is_one_usage_error(tmp_path):
    """A script's ``sys.exit()`` at import used to end the command with exit code 0."""
    (tmp_path / "script.py").write_text("import sys\nsys.exit(0)\n")
    with pytest.raises(UsageError, match=r"model file .*script.py failed while being "
                       r"imported: SystemExit: 0 \(at script.py:2\)"):
        resolve_factory(f"{tmp_path}/script.py:Net")
    (tmp_path / "factory.py").write_text("import sys\ndef make():\n    sys.exit(3)\n")
    with pytest.raises(UsageError, match=r"model factory .*factory.py:make' raised SystemExit: "
                       r"3 \(at factory.py:3\)"):
        nn_from_factory(f"{tmp_path}/factory.py:make", {})
