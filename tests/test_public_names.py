"""The public surface: the exact top-level names, and namespaces no submodule can shadow."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import shenjing

SRC = Path(__file__).resolve().parents[1] / "src" / "shenjing"

TOP_LEVEL = [
    "Activations", "Dataset", "Embedding", "LayerNotFoundError", "MissingExtraError",
    "NotApplicableError", "Recorder", "Run", "RunError", "ShenjingError", "TrainConfig",
    "UntrustedCodeError", "UsageError", "__version__", "analysis", "attention_stage",
    "build_model",
    "build_report", "capture_dataset", "capture_stage", "dynamics_stage", "embed",
    "embed_stage", "filters_stage", "find_runs", "fit_study", "hessian", "inspect_model",
    "landscape_line", "landscape_plane", "landscape_trajectory", "list_layers",
    "load_dataset", "load_weights", "maps_stage", "open_run", "plot", "recurrent_stage",
    "run_demo", "train", "attribute_stage", "units_stage", "visualize_stage",
    "warp", "weights_stage", "gan", "dann",
    "compare",
]
NAMESPACES = ("shenjing", "shenjing.plot", "shenjing.analysis")


def test_the_top_level_names_are_exactly_these():
    assert sorted(shenjing.__all__) == sorted(TOP_LEVEL)
    assert dir(shenjing) == sorted(TOP_LEVEL)


def test_plot_exports_every_public_plot_function():
    defined = {f"{path.stem}.{node.name}" for path in (SRC / "plot").glob("*.py")
               for node in ast.parse(path.read_text(encoding="utf-8")).body
               if isinstance(node, ast.FunctionDef) and node.name.startswith("plot_")}
    exported = {f"{getattr(shenjing.plot, name).__module__.rsplit('.', 1)[1]}.{name}"
                for name in shenjing.plot.__all__}
    assert exported == defined


def _submodules(package: types.ModuleType) -> set[str]:
    return {info.name for info in pkgutil.iter_modules(package.__path__)}


@pytest.mark.parametrize("name", NAMESPACES)
def test_no_export_is_named_like_a_submodule(name):
    package = importlib.import_module(name)
    namespaces = set(getattr(package, "_NAMESPACES", ()))
    assert set(package.__all__) & _submodules(package) == namespaces


# a fresh interpreter: there, every submodule is bound to its package before any export
# is first looked up, the order in which a submodule would displace an export of its name
IMPORT_ALL_FIRST = r"""
import importlib, pkgutil, sys, types
displaced = []
for name in sys.argv[1:]:
    package = importlib.import_module(name)
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{name}.{info.name}")
    for public in set(package.__all__) - set(getattr(package, "_NAMESPACES", ())):
        if public == "__version__":
            continue
        module, _, attribute = package._EXPORTS[public].partition(":")
        defined = getattr(importlib.import_module(module), attribute or public)
        if getattr(package, public) is not defined:
            displaced.append(f"{name}.{public}")
print(displaced)
"""


def test_every_export_is_its_object_even_after_every_submodule_is_imported():
    out = subprocess.run([sys.executable, "-c", IMPORT_ALL_FIRST, *NAMESPACES],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_name_that_moved_says_where_it_is_now():
    with pytest.raises(AttributeError, match=r"'plot_embedding'; it is "
                                             r"shenjing\.plot\.plot_embedding$"):
        shenjing.plot_embedding  # noqa: B018
    with pytest.raises(AttributeError, match=r"'cka_matrix'; it is shenjing\.analysis\."):
        shenjing.cka_matrix  # noqa: B018
    with pytest.raises(AttributeError, match=r"^module 'shenjing' has no attribute 'nope'$"):
        shenjing.nope  # noqa: B018
    with pytest.raises(AttributeError, match=r"^module 'shenjing.plot' has no attribute 'x'$"):
        shenjing.plot.x  # noqa: B018
