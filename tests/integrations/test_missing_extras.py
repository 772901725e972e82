"""Without its library, each integration says in one error which extra to install."""

from __future__ import annotations

import importlib
import sys

import pytest

from shenjing.errors import MissingExtraError


@pytest.mark.parametrize(("module", "library", "extra"), [
    ("shenjing.integrations.lightning", "lightning", "lightning"),
    ("shenjing.integrations.hf", "transformers", "hf"),
])
def test_missing_library_names_the_pip_line(monkeypatch, module, library, extra):
    for name in [m for m in sys.modules if m == library or m.startswith(library + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, library, None)  # import → ImportError
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(MissingExtraError, match=rf'pip install "shenjing\[{extra}\]"'):
        importlib.import_module(module)
    monkeypatch.delitem(sys.modules, module, raising=False)


def test_import_shenjing_integrations_stays_light():
    import subprocess

    code = ("import sys, shenjing.integrations; "
            "print(any(m in sys.modules for m in ('lightning', 'transformers', 'tensorboard')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"
