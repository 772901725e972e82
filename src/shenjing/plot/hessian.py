"""Figures of the Hessian view: the eigenvalue density (SLQ) and sharpness across epochs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plot_hessian_density(grid: np.ndarray, density: np.ndarray, *, ax: Any = None,
                         top: Sequence[float] | None = None, log: bool = True,
                         title: str | None = None) -> Figure:
    """Eigenvalue density of the Hessian (SLQ), log-scaled, with top eigenvalues marked."""
    import matplotlib.pyplot as plt

    fig, ax = (plt.subplots(figsize=(6.4, 4)) if ax is None else (ax.figure, ax))
    ax.plot(grid, density, color="C0", lw=1.5)
    if log:
        ax.set_yscale("log")
        floor = max(float(np.max(density)) * 1e-8, 1e-30)
        ax.set_ylim(bottom=floor)
    for i, v in enumerate(top or ()):
        ax.axvline(v, color="C3", ls=":", lw=1, label="top eigenvalues" if i == 0 else None)
    if top:
        ax.legend(fontsize=8)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    ax.set_title(title or "Hessian eigenvalue density (stochastic Lanczos quadrature)")
    return fig


def plot_sharpness_epochs(epochs: Sequence[int], values: Sequence[float], *,
                          ax: Any = None) -> Figure:
    """Top Hessian eigenvalue at each epoch checkpoint (sharpness across training)."""
    import matplotlib.pyplot as plt

    fig, ax = (plt.subplots(figsize=(5.6, 3.6)) if ax is None else (ax.figure, ax))
    ax.plot(list(epochs), list(values), "-o", color="C2")
    ax.set_xlabel("epoch")
    ax.set_ylabel("top Hessian eigenvalue λ_max")
    ax.set_title("sharpness across training")
    return fig
