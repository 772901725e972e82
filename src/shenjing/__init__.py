"""shenjing (神经): see what a PyTorch network has learned.

Importing shenjing is cheap and has no side effects: names are resolved on first use,
so matplotlib, plotly and openTSNE load only when a function that needs them is called.

>>> import shenjing as sj
>>> sj.__version__ != ""
True
"""

from __future__ import annotations

import importlib
from typing import Any

from shenjing._version import __version__

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "load_dataset": "shenjing.data",
    "Dataset": "shenjing.data",
    "build_model": "shenjing.models",
    "Run": "shenjing.runs",
    "open_run": "shenjing.runs",
    "find_runs": "shenjing.runs",
    "train": "shenjing.training",
    "TrainConfig": "shenjing.training",
    "Recorder": "shenjing.training",
    "ShenjingError": "shenjing.errors",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'shenjing' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
