"""The layers depend one way, and importing shenjing stays cheap."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "shenjing"

# lower number = lower layer; a module may import only from its own layer or lower ones
LAYERS = {
    "errors": 0, "_io": 0, "_optional": 0, "_version": 0, "hooks": 0, "_imports": 0,
    "_device": 0, "_checks": 0, "_labels": 0, "_lazy": 0, "filenames": 0,
    "backend": 0,  # where the heavy views compute (local, or a Ray cluster)
    "data": 1, "models": 1, "trust": 1,
    "runs": 2,
    "training": 3, "capture": 3,
    "integrations": 4,  # Lightning / Hugging Face callbacks: drive training's Recorder
    "analysis": 4,
    "plot": 5,
    "report": 6,  # built from files alone: needs runs and plot, never a stage
    "stages": 7,  # a stage may write the report (inspect's last step)
    "demo": 8,
    "cli": 9, "__main__": 9,
}


def _layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return [m for m in found if m.startswith("shenjing.")]


def test_layers_import_only_downward():
    violations = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        own = rel.parts[0].removesuffix(".py")
        if own == "__init__":
            continue  # the package's lazy re-exports
        for mod in _imports(path):
            target = _layer_of(mod)
            if target in LAYERS and own in LAYERS and LAYERS[target] > LAYERS[own]:
                violations.append(f"{rel} imports {mod}")
    assert not violations, "\n".join(violations)


def test_every_top_level_module_has_a_layer():
    names = {p.name.removesuffix(".py") for p in SRC.iterdir()
             if (p.suffix == ".py" or p.is_dir()) and not p.name.startswith(("__pycache__",))}
    names -= {"__init__", "py.typed"}
    assert names <= set(LAYERS), names - set(LAYERS)


@pytest.mark.parametrize("heavy", ["matplotlib", "plotly", "openTSNE", "sklearn", "torch"])
def test_import_shenjing_is_cheap(heavy):
    code = ("import sys, shenjing, shenjing.plot, shenjing.analysis; "
            f"print({heavy!r} in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


def test_every_public_name_resolves():
    import shenjing

    missing = [f"{space.__name__}.{n}" for space in (shenjing, shenjing.plot, shenjing.analysis)
               for n in space.__all__ if not hasattr(space, n)]
    assert missing == []
    assert callable(shenjing.train) and shenjing.train.__module__ == "shenjing.training.trainer"
