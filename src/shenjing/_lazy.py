"""Names of a package that resolve on first use (PEP 562), so importing it stays cheap.

``shenjing``, ``shenjing.plot`` and ``shenjing.analysis`` re-export functions from modules
that import torch, matplotlib or scikit-learn; each package's ``__getattr__`` calls
:func:`resolve`, which imports the defining module only when the name is first asked for.

An export must not be named like a submodule of its package: importing that submodule
binds the module to the package attribute of the same name, so the name would mean the
function or the module depending on what happened to be imported first.

>>> import shenjing
>>> resolve("shenjing", {"open_run": "shenjing.runs"}, (), "open_run").__name__
'open_run'
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Collection, Mapping
from typing import Any


def resolve(package: str, exports: Mapping[str, str], submodules: Collection[str],
            name: str) -> Any:
    """The object ``package.name`` stands for, imported now and kept on the package.

    ``exports`` maps each public name to ``"module"`` (an attribute of the same name there)
    or ``"module:attribute"``; a name in ``submodules`` is the subpackage ``package.name``.
    Any other name raises the ``AttributeError`` Python raises for a missing attribute.
    """
    if name in submodules:
        return importlib.import_module(f"{package}.{name}")
    if name not in exports:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    module, _, attribute = exports[name].partition(":")
    value = getattr(importlib.import_module(module), attribute or name)
    setattr(sys.modules[package], name, value)  # later lookups skip __getattr__
    return value
