"""vit-pytorch's ``ViT``, built offline, for the tests that bring a third-party model.

``import vit_pytorch`` imports torchvision (for its DINO helpers), which does not install
beside our CPU torch; the ViT itself needs only torch and einops. So its module file is
loaded by path, without running the package's ``__init__``. Skipped where vit-pytorch is
not installed (``scripts/setup.sh --dev`` installs it without dependencies).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from torch import nn


def vit_module() -> ModuleType | None:
    """``vit_pytorch/vit.py`` as a module, or None when vit-pytorch (or einops) is absent."""
    spec = importlib.util.find_spec("vit_pytorch")  # finds the folder; runs no __init__
    if spec is None or not spec.submodule_search_locations or \
            importlib.util.find_spec("einops") is None:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "vit.py"
    loader_spec = importlib.util.spec_from_file_location("_vit_pytorch_vit", path)
    if loader_spec is None or loader_spec.loader is None:
        return None
    module = importlib.util.module_from_spec(loader_spec)
    loader_spec.loader.exec_module(module)
    return module


def vit_pytorch_vit(n_classes: int = 10, image: int = 8, patch: int = 2, dim: int = 32,
                    depth: int = 2, heads: int = 4, mlp_dim: int = 64) -> nn.Module:
    """vit-pytorch's ViT for one-channel ``image``×``image`` inputs (8×8 digits)."""
    module = vit_module()
    if module is None:
        raise ImportError("vit-pytorch is not installed (pip install --no-deps vit-pytorch "
                          "einops)")
    return module.ViT(image_size=image, patch_size=patch, num_classes=n_classes, dim=dim,
                      depth=depth, heads=heads, mlp_dim=mlp_dim, channels=1, dim_head=8)
