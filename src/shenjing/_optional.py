"""One place for optional dependencies: import them, or say which extra installs them."""

from __future__ import annotations

import importlib
from types import ModuleType

from shenjing.errors import MissingExtraError

# module name -> (extra that provides it, what the user asked for it to do)
_EXTRAS: dict[str, str] = {
    "umap": "umap",
    "ray": "ray",
}  # torchvision has no extra: it must match the installed torch (shenjing.models.zoo)


def require(module: str, *, extra: str | None = None, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` with the pip line that installs it.

    >>> require("math").sqrt(4.0)
    2.0
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = extra or _EXTRAS.get(module.split(".")[0])
        why = f"{purpose} needs" if purpose else "this needs"
        if extra is None:
            raise MissingExtraError(
                f"{why} the package {module!r}, which is not installed: pip install {module}"
            ) from exc
        raise MissingExtraError(
            f"{why} the {extra!r} extra ({module!r} is not installed): "
            f'pip install "shenjing[{extra}]"'
        ) from exc


def available(module: str) -> bool:
    """True when ``module`` can be imported (without importing it twice on failure)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
