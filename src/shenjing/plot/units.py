"""Draw what each unit responds to: per unit, its best input with the receptive-field box,
then the top-k crops, each titled with its activation and label.

Crops are cut under the unit's measured receptive field around the position where the
unit's map is largest, clipped at the image border; a clipped crop is drawn on a canvas of
the full field size (the part outside the image left blank), and every picture uses one
grey scale (the range of all inputs drawn), so sizes and brightness compare across crops.
Layers without a spatial map (linear, output) show the whole input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from shenjing.analysis.units import ReceptiveField, TopUnits

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: the most units one figure draws (the rest are in the JSON)
MAX_DRAWN = 16


def _grey(image: np.ndarray) -> np.ndarray:
    """``(C, *spatial)`` → a 2-D grey image (channels averaged; 1-D inputs as one row)."""
    img = np.asarray(image, dtype=np.float64)
    img = img.mean(axis=0) if img.ndim == 3 else img
    return img[None, :] if img.ndim == 1 else img


def _canvas(image: np.ndarray, field: ReceptiveField | None, position: Sequence[int] | None
            ) -> np.ndarray:
    """The crop under the field at ``position`` at the full field size (NaN outside the
    image), or the whole grey image without a field."""
    if field is None or position is None or len(field.size) != 2:
        return _grey(image)
    return _grey(field.crop(np.asarray(image), position))


def _label_text(label: Any, classes: Sequence[str] | None) -> str:
    if classes and 0 <= int(label) < len(classes):
        return str(classes[int(label)])
    return str(int(label))


def plot_top_units(top: TopUnits, images: np.ndarray, *, field: ReceptiveField | None = None,
                   classes: Sequence[str] | None = None, epoch: int | None = None,
                   max_units: int = MAX_DRAWN) -> Figure:
    """Units × (best input with its receptive-field box, then the ``k`` top crops).

    ``images``: the inputs ``top.indices`` point into, ``(N, C, *spatial)``. Each crop's
    title is its activation (the ``top.reduce`` over the unit's map) and its label; each
    row's first picture names the unit and the class purity of its top-k (how many of the k
    share the most common label). A grid of panels: it makes its own figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    images = np.asarray(images)
    rows = min(top.n_units, int(max_units))
    k = top.k
    purity = top.purity()
    shown = images[np.unique(top.indices[:rows])]
    lo, hi = float(np.nanmin(shown)), float(np.nanmax(shown))
    fig, axes = plt.subplots(rows, k + 1, figsize=(1.15 * (k + 1) + 0.4, 1.25 * rows + 0.7),
                             squeeze=False)
    cmap = plt.get_cmap("gray").with_extremes(bad="#f3d9d9")  # outside the image
    for r in range(rows):
        unit = int(top.units[r])
        first = images[int(top.indices[r, 0])]
        pos0 = None if top.positions is None else top.positions[r, 0]
        a = axes[r, 0]
        a.imshow(_grey(first), cmap=cmap, vmin=lo, vmax=hi)
        pure = "" if purity is None else f"\npurity {int(purity[r])}/{k}"
        a.set_title(f"unit {unit}{pure}", fontsize=7)
        if field is not None and pos0 is not None and len(field.size) == 2:
            (y0, y1), (x0, x1) = field.clipped_box(pos0, first.shape[1:])
            a.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                                  edgecolor="#e8541e", linewidth=1.2))
        for c in range(k):
            a = axes[r, c + 1]
            pos = None if top.positions is None else top.positions[r, c]
            a.imshow(_canvas(images[int(top.indices[r, c])], field, pos), cmap=cmap,
                     vmin=lo, vmax=hi)
            label = ("" if top.labels is None
                     else f" · {_label_text(top.labels[r, c], classes)}")
            a.set_title(f"{top.values[r, c]:.3g}{label}", fontsize=7)
    for a in axes.ravel():
        a.set_xticks([])
        a.set_yticks([])
    when = "" if epoch is None else f", epoch {epoch}"
    more = f" (units shown: {rows} of {top.n_units})" if rows < top.n_units else ""
    where = ("crops under the receptive field "
             f"{'×'.join(map(str, field.size))} px, clipped at the border"
             if field is not None and top.positions is not None else "whole inputs")
    fig.suptitle(f"{top.layer}{when}: top {k} of {top.n_samples} inputs by {top.reduce} "
                 f"activation{more}\n{where}; title = activation · label", fontsize=9)
    fig.tight_layout()
    return fig


__all__ = ["MAX_DRAWN", "plot_top_units"]
