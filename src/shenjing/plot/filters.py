"""Figures of filters: first-layer kernels, the capped out×in kernel matrix of deeper conv
layers, an MLP's first-layer units as images of the input, and kernels across epochs.

Colours: grey kernels use a diverging map with 0.5 (white) meaning a zero weight; RGB
kernels are drawn as colour, mid-grey meaning zero. Every kernel axis is labelled
(``"filter <o>"``, ``"out <o> in <i>"``, ``"unit <k>"``) and draws the normalised array the
analysis returned, with ``vmin=0, vmax=1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from shenjing.analysis.featuremaps import grid_shape
from shenjing.analysis.filters import (
    Filters,
    FilterScale,
    KernelGrid,
    kernel_grid,
    normalise_filters,
    rgb_filters,
)
from shenjing.errors import ShapeMismatchError, UsageError

_SCALE_TEXT = {"shared": "one colour scale for the whole layer",
               "filter": "each filter scaled to its own max|w|"}


def _epoch_text(epoch: int | None) -> str:
    if epoch is None:
        return ""
    return f", epoch {epoch}" + (" (untrained)" if epoch == 0 else "")


def _tile(fig: Any, images: np.ndarray, labels: Sequence[str], titles: Sequence[str],
          cmap: str | None) -> None:
    rows, cols = grid_shape(len(images))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for slot, ax in enumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        if slot >= len(images):
            ax.set_visible(False)
            continue
        ax.set_label(labels[slot])
        ax.imshow(images[slot], cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(titles[slot], fontsize=7, pad=1)


def plot_filters(filters: Filters, *, max_filters: int = 64, scale: FilterScale = "filter",
                 title: str | None = None) -> Any:
    """A conv layer's kernels as small images, one per output filter.

    3 input channels: each ``(3, kh, kw)`` kernel as an RGB image (axis ``"filter <o>"``).
    1 input channel: each kernel as a grey diverging image. More input channels: use
    :func:`plot_kernel_grid` (this raises and says so). Shows the first ``max_filters``.
    """
    import matplotlib.pyplot as plt

    if filters.kind != "conv":
        raise ShapeMismatchError(
            f"layer {filters.layer!r} is linear {filters.weight.shape}; draw its units with "
            "plot_unit_images (the input shape is needed) or pick a conv layer")
    n_in = filters.n_in
    if n_in not in (1, 3):
        raise ShapeMismatchError(
            f"layer {filters.layer!r} has {n_in} input channels; one image per filter exists "
            "only for 1 (grey) or 3 (RGB) input channels: use plot_kernel_grid for the "
            "out×in matrix of kernels")
    if max_filters < 1:
        raise UsageError(f"max_filters must be ≥ 1, got {max_filters}")
    n = min(max_filters, filters.n_out)
    if n_in == 3:  # normalise the whole layer first: 'shared' is the layer's bound
        images = rgb_filters(filters.weight, scale)[:n]
        cmap, colour = None, "RGB colour (mid-grey = 0)"
    else:
        images = normalise_filters(filters.weight, scale)[:n, 0]
        cmap, colour = "RdBu_r", "red > 0 > blue"
    rows, cols = grid_shape(n)
    fig = plt.figure(figsize=(min(1.0 * cols + 1.0, 16), min(1.0 * rows + 1.3, 16)),
                     layout="constrained")
    _tile(fig, images, [f"filter {o}" for o in range(n)], [str(o) for o in range(n)], cmap)
    shape = "×".join(map(str, filters.weight.shape))
    shown = f"first {n} of {filters.n_out}" if n < filters.n_out else f"{n}"
    fig.suptitle(title or f"{filters.layer} filters ({shape}{_epoch_text(filters.epoch)})\n"
                 f"{shown} filters, {colour}; {_SCALE_TEXT[scale]}", fontsize=10)
    return fig


def plot_kernel_grid(grid: KernelGrid | Filters, *, max_out: int = 16, max_in: int = 16,
                     title: str | None = None) -> Any:
    """The ``out × in`` matrix of a conv layer's kernels (rows = output channels).

    Takes a :class:`KernelGrid` or a :class:`Filters` (capped to ``max_out × max_in`` by
    kernel norm). Axis ``(r, c)`` is labelled ``"out <o> in <i>"``; one symmetric colour
    scale for all kernels (stated in the title).
    """
    import matplotlib.pyplot as plt

    epoch = grid.epoch if isinstance(grid, Filters) else None
    if isinstance(grid, Filters):
        grid = kernel_grid(grid, max_out=max_out, max_in=max_in)
    rows, cols = len(grid.outs), len(grid.ins)
    fig, axes = plt.subplots(rows, cols, figsize=(0.6 * cols + 1.5, 0.6 * rows + 1.5),
                             squeeze=False, layout="constrained")
    for r, o in enumerate(grid.outs):
        for c, i in enumerate(grid.ins):
            ax = axes[r, c]
            ax.set_label(f"out {o} in {i}")
            ax.imshow(grid.images[r, c], cmap="RdBu_r", vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(str(i), fontsize=7, pad=1)
            if c == 0:
                ax.set_ylabel(str(o), fontsize=7, rotation=0, labelpad=8)
    fig.supxlabel("input channel", fontsize=9)
    fig.supylabel("output channel", fontsize=9)
    shape = "×".join(map(str, grid.shape))
    capped = (f"{rows} of {grid.shape[0]} outputs × {cols} of {grid.shape[1]} inputs "
              "(largest kernel norms)" if (rows, cols) != tuple(grid.shape[:2])
              else f"all {rows}×{cols} kernels")
    fig.suptitle(title or f"{grid.layer} kernels ({shape}{_epoch_text(epoch)})\n{capped}; "
                 f"one scale ±{grid.bound:.3g}, red > 0 > blue", fontsize=10)
    return fig


def plot_unit_images(images: np.ndarray, *, layer: str, epoch: int | None = None,
                     units: Sequence[int] | None = None, scale: FilterScale = "filter",
                     title: str | None = None) -> Any:
    """First-layer units of an MLP as images of the input ``(units, H, W)`` or RGB
    ``(units, H, W, 3)``, from :func:`shenjing.analysis.filters.unit_images`: what each
    hidden unit looks at (red: the unit's weight is positive there)."""
    import matplotlib.pyplot as plt

    images = np.asarray(images)
    if images.ndim not in (3, 4):
        raise ShapeMismatchError(f"unit images must be (units, H, W) or (units, H, W, 3), "
                                 f"got {images.shape}")
    units = list(units) if units is not None else list(range(len(images)))
    if len(units) != len(images):
        raise UsageError(f"{len(units)} unit indices for {len(images)} images")
    rows, cols = grid_shape(len(images))
    fig = plt.figure(figsize=(min(1.1 * cols + 1.0, 16), min(1.1 * rows + 1.3, 16)),
                     layout="constrained")
    _tile(fig, images, [f"unit {u}" for u in units], [str(u) for u in units],
          None if images.ndim == 4 else "RdBu_r")
    hw = "×".join(map(str, images.shape[1:3]))
    fig.suptitle(title or f"{layer}: what each hidden unit looks at ({len(images)} units as "
                 f"{hw} images{_epoch_text(epoch)})\nred = positive weight, blue = negative; "
                 f"{_SCALE_TEXT[scale]}", fontsize=10)
    return fig


def plot_filters_over_epochs(history: Sequence[Filters], *, max_filters: int = 16,
                             title: str | None = None) -> Any:
    """First-layer kernels (rows) at every epoch given (columns).

    One symmetric scale per filter over all its epochs, so growth shows. 1-in-channel
    kernels grey-diverging, 3-in-channel kernels RGB; others show the mean over inputs.
    Axis labels ``"filter <o> epoch <e>"``.
    """
    import matplotlib.pyplot as plt

    if not history:
        raise UsageError("no epochs to draw")
    shapes = {f.weight.shape for f in history}
    if len(shapes) != 1 or history[0].kind != "conv":
        raise ShapeMismatchError(f"need conv weights of one shape across epochs, got {shapes}")
    n = min(max_filters, history[0].n_out)
    w = np.stack([f.weight[:n] for f in history]).astype(np.float64)  # (E, n, in, kh, kw)
    bound = np.abs(w).max(axis=(0, 2, 3, 4))
    bound = np.where(bound > 0, bound, 1.0)
    normed = 0.5 + 0.5 * w / bound[None, :, None, None, None]
    rgb = w.shape[2] == 3
    fig, axes = plt.subplots(n, len(history), figsize=(0.9 * len(history) + 1.2, 0.9 * n + 1),
                             squeeze=False, layout="constrained")
    for o in range(n):
        for e, f in enumerate(history):
            ax = axes[o, e]
            ax.set_label(f"filter {o} epoch {f.epoch}")
            img = normed[e, o].transpose(1, 2, 0) if rgb else normed[e, o].mean(axis=0)
            ax.imshow(img, cmap=None if rgb else "RdBu_r", vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if o == 0:
                ax.set_title(f"ep {f.epoch}", fontsize=8)
            if e == 0:
                ax.set_ylabel(str(o), fontsize=8, rotation=0, labelpad=8)
    fig.suptitle(title or f"{history[0].layer} filters across epochs\n"
                 "one colour scale per filter (row)", fontsize=10)
    return fig
