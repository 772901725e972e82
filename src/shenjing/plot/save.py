"""Saving figures into a run: PNG and SVG, atomically."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shenjing import _io

_DEFAULT_FORMATS: list[tuple[str, ...]] = [("png", "svg")]


@contextlib.contextmanager
def figure_formats(*formats: str) -> Iterator[None]:
    """Within the block, :func:`save_figure` writes only ``formats`` by default.

    The demo uses ``figure_formats("png")``: the report inlines PNGs, and drawing every
    figure a second time as SVG would cost a third of its time budget.
    """
    _DEFAULT_FORMATS.append(tuple(formats))
    try:
        yield
    finally:
        _DEFAULT_FORMATS.pop()


def save_figure(fig: Any, folder: str | os.PathLike[str], stem: str, *,
                formats: tuple[str, ...] | None = None, dpi: int = 120,
                close: bool = True) -> list[Path]:
    """Write a matplotlib Figure as ``folder/stem.png`` and ``.svg`` (atomic); return paths.

    The figure is closed afterwards (``close=False`` keeps it), so stages that draw many
    figures do not accumulate them in pyplot's registry.
    """
    folder = Path(folder)
    paths = []
    for fmt in formats or _DEFAULT_FORMATS[-1]:
        target = folder / f"{stem}.{fmt}"
        with _io.atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight",
                        metadata={"Date": None} if fmt == "svg" else None)
        paths.append(target)
    if close:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return paths
