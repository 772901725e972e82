"""Saving figures into a run: PNG and SVG, atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from shenjing import _io


def save_figure(fig: Any, folder: str | os.PathLike[str], stem: str, *,
                formats: tuple[str, ...] = ("png", "svg"), dpi: int = 120,
                close: bool = True) -> list[Path]:
    """Write a matplotlib Figure as ``folder/stem.png`` and ``.svg`` (atomic); return paths.

    The figure is closed afterwards (``close=False`` keeps it), so stages that draw many
    figures do not accumulate them in pyplot's registry.
    """
    folder = Path(folder)
    paths = []
    for fmt in formats:
        target = folder / f"{stem}.{fmt}"
        with _io.atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight",
                        metadata={"Date": None} if fmt == "svg" else None)
        paths.append(target)
    if close:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return paths
