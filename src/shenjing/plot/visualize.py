"""Draw a feature visualization: one image per unit with the activation it reached."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from shenjing.analysis.visualize import FeatureVisualization

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def unit_title(fv: FeatureVisualization, i: int) -> str:
    """``"unit 3\\nreached 1.28\\n(best real 0.765, ×1.67)"``; without data, the noise
    image's activation instead of the best real input's."""
    row = fv.per_unit()[i]
    head = f"unit {row['unit']}\nreached {row['reached']:.3g}"
    if "best_real" in row:
        ratio = "×?" if row["ratio"] is None else f"×{row['ratio']:.2f}"
        return f"{head}\n(best real {row['best_real']:.3g}, {ratio})"
    return f"{head}\n(noise {row['noise']:.3g})"


def _picture(pixels: np.ndarray) -> tuple[np.ndarray, str | None]:
    """One unit's [0, 1] pixels as imshow draws them: grey, RGB, or a vector as one row."""
    p = np.clip(np.asarray(pixels, dtype=np.float64), 0.0, 1.0)
    if p.ndim == 3 and p.shape[0] == 3:
        return p.transpose(1, 2, 0), None
    if p.ndim == 3:
        return p.mean(axis=0), "gray"
    return p.reshape(1, -1), "gray"


def plot_visualization(fv: FeatureVisualization, *, columns: int = 8,
                       title: str | None = None) -> Figure:
    """A grid of the units' images (black = the data's black pixel, white = white), each
    titled with the activation reached next to the best real input's and their ratio."""
    import matplotlib.pyplot as plt

    n = len(fv.units)
    cols = max(1, min(columns, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.5 * rows + 0.6),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.remove()
            continue
        img, cmap = _picture(fv.pixels[i])
        ax.imshow(img, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(unit_title(fv, i), fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or f"What each unit of {fv.layer} would like to see "
                 f"({fv.steps} steps, seed {fv.seed})", fontsize=9)
    fig.tight_layout()
    return fig


__all__ = ["plot_visualization", "unit_title"]
