"""The ``>>>`` examples in shenjing's docstrings run, in the default test run.

One test per module that has examples. Each runs in a fresh temporary working directory,
so an example that writes a run folder leaves nothing behind. A module that needs an
optional library that is not installed is skipped with the library's name.
"""

from __future__ import annotations

import doctest
import importlib
import io
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules_with_examples() -> list[str]:
    names = []
    for path in sorted((SRC / "shenjing").rglob("*.py")):
        if path.name == "__main__.py" or ">>>" not in path.read_text(encoding="utf-8"):
            continue
        parts = path.relative_to(SRC).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _import_or_skip(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.partition(".")[0] != "shenjing":
            pytest.skip(f"{name} needs {exc.name!r}, which is not installed")
        raise


@pytest.mark.parametrize("name", _modules_with_examples())
def test_docstring_examples(name, tmp_path, monkeypatch):
    module = _import_or_skip(name)
    monkeypatch.chdir(tmp_path)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report = io.StringIO()
    tests = [t for t in doctest.DocTestFinder().find(module, name) if t.examples]
    assert tests, f"{name} has '>>>' in its source but no docstring example was found"
    for test in tests:
        runner.run(test, out=report.write)
    assert runner.failures == 0, report.getvalue()
