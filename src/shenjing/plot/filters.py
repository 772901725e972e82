"""Figures of filters: first-layer kernels, the capped out×in kernel matrix of deeper conv
layers, Conv1d kernels as small line plots, an MLP's first-layer units as images of the
input, and kernels across epochs.

Colours: grey kernels use a diverging map with 0.5 (white) meaning a zero weight; RGB
kernels are drawn as colour, mid-grey meaning zero. Every kernel axis is labelled
(``"filter <o>"``, ``"out <o> in <i>"``, ``"unit <k>"``) and draws the normalised array the
analysis returned, with ``vmin=0, vmax=1``; Conv1d kernels are drawn as raw weights.

The across-epochs figure (:func:`plot_filters_over_epochs`) is laid out by hand, not by a
layout engine: cells of one filter each, in a grid whose number of columns is chosen so the
figure stays within 16 × 12 inches for 1 to 200 filters and epochs (capped to
``max_filters`` filters and ``max_epochs`` epochs, both stated in the title), with its colour
bar or epoch legend outside the cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from shenjing._labels import epoch0_words
from shenjing.analysis.filters import (
    Filters,
    FilterScale,
    KernelGrid,
    KernelSignals,
    filters_to_follow,
    kernel_grid,
    kernel_signals,
    normalise_filters,
    reference_change,
    rgb_filters,
)
from shenjing.analysis.maps import evenly_spaced, grid_shape
from shenjing.errors import ShapeMismatchError, UsageError

_SCALE_TEXT = {"shared": "one colour scale for the whole layer",
               "filter": "each filter scaled to its own max|w|"}

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _epoch_text(epoch: int | None) -> str:
    if epoch is None:
        return ""
    return f", epoch {epoch}" + (f" ({epoch0_words()})" if epoch == 0 else "")


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
                 title: str | None = None) -> Figure:
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
                     title: str | None = None) -> Figure:
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
                     title: str | None = None) -> Figure:
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


def _pct(x: float) -> str:
    return "∞" if not np.isfinite(x) else f"{x:.0%}" if x >= 0.01 else f"{x:.1%}"


def plot_kernel_signals(signals: KernelSignals | Filters, *, reference: Filters | None = None,
                        max_out: int = 16, max_in: int = 8, title: str | None = None) -> Figure:
    """A Conv1d layer's kernels ``(out, in, k)`` as small line plots (weight against tap).

    Takes :class:`~shenjing.analysis.filters.KernelSignals` or a :class:`Filters` (capped
    with :func:`~shenjing.analysis.filters.kernel_signals`, ``reference`` the epoch to
    compare with). One input channel: the output filters tiled in a grid, one axes each
    (``"out <o> in <i>"``). Several: one row per output filter (most changed first), axes
    ``"out <o>"``, holding that filter's kernel for each shown input channel side by side,
    separated by a thin line and labelled ``in <i>`` under the last row; each line's gid is
    ``"in <i> epoch <e>"``. The reference kernel is a dashed grey line under each, the
    relative change of each filter in its label. One y range (±max|w| shown) for all.
    """
    import matplotlib.pyplot as plt

    if isinstance(signals, Filters):
        signals = kernel_signals(signals, reference, max_out=max_out, max_in=max_in)
    ks = signals
    rows, cols = len(ks.outs), len(ks.ins)
    single_in = cols == 1
    k = ks.weights.shape[-1]
    grid_r, grid_c = grid_shape(rows) if single_in else (rows, 1)
    fig_w = min(16.0, max(7.0, 1.3 + (1.55 * grid_c if single_in else 0.22 * cols * (k + 1))))
    fig_h = min(12.0, 1.6 + (1.05 if single_in else 0.62) * grid_r)
    fig, axes = plt.subplots(grid_r, grid_c, figsize=(fig_w, fig_h), squeeze=False,
                             sharex=True, sharey=True, layout="constrained")
    flat = list(axes.ravel())
    lim = 1.08 * (ks.bound or 1.0)
    taps = np.arange(k)
    for slot, ax in enumerate(flat):
        if slot >= rows:
            ax.set_visible(False)
            continue
        o = ks.outs[slot]
        ax.set_label(f"out {o} in {ks.ins[0]}" if single_in else f"out {o}")
        for c, i in enumerate(ks.ins):
            x = taps + c * (k + 1)
            if ks.reference is not None:
                ref = ax.plot(x, ks.reference[slot, c], color="0.6", ls="--", lw=1.0,
                              label=f"epoch {ks.reference_epoch}")[0]
                ref.set_gid(f"in {i} epoch {ks.reference_epoch}")
            line = ax.plot(x, ks.weights[slot, c], color="C0", lw=1.4, marker=".", ms=3,
                           label=f"epoch {ks.epoch}")[0]
            line.set_gid(f"in {i} epoch {ks.epoch}")
            if c:
                ax.axvline(c * (k + 1) - 1, color="0.8", lw=0.8)
        ax.axhline(0.0, color="0.85", lw=0.7, zorder=0)
        ax.set_ylim(-lim, lim)
        ax.tick_params(labelsize=6)
        change = f" · Δ {_pct(float(ks.change[slot]))}" if ks.change is not None else ""
        if single_in:
            ax.set_title(f"out {o}{change}", fontsize=7, pad=2)
        else:
            ax.set_ylabel(f"out {o}{change}", fontsize=7, rotation=0, ha="right",
                          va="center")
    if not single_in:
        flat[rows - 1].set_xticks([c * (k + 1) + (k - 1) / 2 for c in range(cols)],
                                  [f"in {i}" for i in ks.ins], fontsize=7)
    fig.supxlabel("tap (kernel position)" + ("" if single_in else ", per input channel"),
                  fontsize=9)
    fig.supylabel("weight", fontsize=9)
    handles, labels = flat[0].get_legend_handles_labels()
    fig.legend(handles[:2], labels[:2], loc="outside right upper", fontsize=8,
               frameon=False)
    shape = "×".join(map(str, ks.shape))
    capped = (f"{rows} of {ks.shape[0]} filters" + ("" if single_in else
                                                    f" × {cols} of {ks.shape[1]} inputs"))
    order = (f"most changed since epoch {ks.reference_epoch} first"
             if ks.reference is not None else "largest kernel norm first")
    fig.suptitle(title or f"{ks.layer} Conv1d kernels ({shape}{_epoch_text(ks.epoch)})\n"
                 f"{capped}, {order}; Δ = ‖w − w_ref‖/‖w_ref‖ per filter", fontsize=10)
    return fig


# ---- across epochs: cells laid out by hand ----------------------------------------------
MAX_FIG_W, MAX_FIG_H = 16.0, 12.0
_CELL_TITLE_H = 0.26   # inches above each cell for its label
_CELL_GAP_W = 0.18     # inches between cells
_TOP, _BOTTOM, _LEFT, _RIGHT = 0.75, 0.25, 0.25, 1.2    # margins, the right one for the legend


def cell_layout(n: int, cell_w: float, cell_h: float, *, min_cell_w: float = 0.8,
                max_scale: float = 0.4) -> tuple[int, int, float]:
    """``(rows, cols, scale)`` for ``n`` cells of ``cell_w × cell_h`` units each.

    ``scale`` is inches per unit. The grid (cells, their labels and gaps) fits the
    ``16 × 12`` inch figure less its margins; among the column counts that fit, the one
    giving the largest cells wins (ties: the squarer grid). Cells are at least
    ``min_cell_w`` inches wide when that fits, and at most ``max_scale`` inches per unit.
    """
    if n < 1:
        raise UsageError(f"a layout needs at least one cell, got {n}")
    avail_w = MAX_FIG_W - _LEFT - _RIGHT - 0.05
    avail_h = MAX_FIG_H - _TOP - _BOTTOM - 0.05
    best: tuple[float, float, int, int] | None = None
    for cols in range(1, n + 1):
        rows = -(-n // cols)
        by_w = (avail_w - (cols - 1) * _CELL_GAP_W) / (cols * cell_w)
        by_h = (avail_h - rows * _CELL_TITLE_H) / (rows * cell_h)
        scale = min(by_w, by_h, max_scale)
        if scale <= 0:
            continue
        wide_enough = scale * cell_w >= min_cell_w
        squareness = -abs(np.log((cols * cell_w) / (rows * cell_h) / 1.4))
        key = (float(wide_enough), scale, squareness)
        if best is None or key > best[:3]:
            best = (*key, rows, cols)  # type: ignore[assignment]
    if best is None:  # pragma: no cover - avail_h always leaves room for one row
        raise UsageError(f"{n} cells do not fit a {MAX_FIG_W}×{MAX_FIG_H} inch figure")
    rows, cols = int(best[3]), int(best[4])  # type: ignore[misc]
    return rows, cols, float(best[1])


MIN_FIG_W, MIN_GRID_H = 7.0, 1.4   # room for the two title lines; for the legend


def _place_cells(fig_w: float, fig_h: float, x0: float, cols: int, w: float, h: float,
                 n: int) -> list[tuple[float, float, float, float]]:
    """Axes rectangles (figure fractions) of ``n`` cells ``w × h`` inches, row-major, the
    grid starting ``x0`` inches from the left, below the title margin."""
    out = []
    for k in range(n):
        r, c = divmod(k, cols)
        x = x0 + c * (w + _CELL_GAP_W)
        y = fig_h - _TOP - (r + 1) * (h + _CELL_TITLE_H)
        out.append((x / fig_w, y / fig_h, w / fig_w, h / fig_h))
    return out


UPSAMPLE = 4   # image pixels per kernel weight in a strip: the gap is a quarter weight wide


def kernel_strip(kernels: np.ndarray, rgb: bool, upsample: int = UPSAMPLE) -> np.ndarray:
    """Kernels ``(E, kh, kw[, 3])`` in [0, 1] side by side, each weight ``upsample`` pixels
    square, with a 1-pixel gap: ``(kh·u, E·kw·u + E − 1)`` with NaN gaps for grey kernels,
    ``(kh·u, E·kw·u + E − 1, 4)`` RGBA with transparent gaps for RGB ones."""
    e, kh, kw = kernels.shape[:3]
    big = np.repeat(np.repeat(kernels, upsample, axis=1), upsample, axis=2)
    step = kw * upsample + 1
    width = e * step - 1
    if rgb:
        strip = np.zeros((kh * upsample, width, 4))
        for j in range(e):
            strip[:, j * step: j * step + kw * upsample, :3] = big[j]
            strip[:, j * step: j * step + kw * upsample, 3] = 1.0
        return strip
    strip = np.full((kh * upsample, width), np.nan)
    for j in range(e):
        strip[:, j * step: j * step + kw * upsample] = big[j]
    return strip


def plot_filters_over_epochs(history: Sequence[Filters], *, max_filters: int = 32,
                             max_epochs: int = 8, title: str | None = None) -> Figure:
    """Each filter at every epoch given (thinned), one cell per filter, in a readable grid.

    Conv2d kernels: a cell holds the filter's kernel at each shown epoch left to right (RGB
    for 3 input channels, else the mean over inputs, grey-diverging), one symmetric scale
    per filter over its epochs so growth shows. Conv1d kernels: a cell holds one line per
    shown epoch (the filter's strongest input channel), coloured by epoch. At most
    ``max_filters`` filters (the most changed first-to-last, most changed first; all in index
    order when they fit) and ``max_epochs`` epochs (evenly spaced, first and last kept).
    Cell axes are labelled ``"filter <o>"`` and titled with the filter's relative change;
    the figure stays within 16 × 12 inches and its legend outside the cells.
    """
    import matplotlib.pyplot as plt

    if not history:
        raise UsageError("no epochs to draw")
    shapes = {f.weight.shape for f in history}
    if len(shapes) != 1 or history[0].kind not in ("conv", "conv1d"):
        raise ShapeMismatchError(f"need conv weights of one shape across epochs, got {shapes}")
    if max_epochs < 1:
        raise UsageError(f"max_epochs must be ≥ 1, got {max_epochs}")
    chosen = filters_to_follow(history, max_filters)
    shown = [history[i] for i in evenly_spaced(len(history), max_epochs)]
    change = reference_change(history[0], history[-1]) if len(history) > 1 else None
    w = np.stack([f.weight[chosen] for f in shown]).astype(np.float64)  # (E, n, in, …)
    n, n_ep = len(chosen), len(shown)
    conv1d = history[0].kind == "conv1d"
    if conv1d:
        cell_w, cell_h, min_w, max_scale = 1.6, 1.0, 1.1, 0.85
    else:
        kh, kw = w.shape[-2:]
        cell_w = n_ep * (kw * UPSAMPLE + 1) - 1
        cell_h, min_w, max_scale = kh * UPSAMPLE, 0.8, 0.24 / UPSAMPLE
    rows, cols, scale = cell_layout(n, cell_w, cell_h, min_cell_w=min_w, max_scale=max_scale)
    cw, ch = cell_w * scale, cell_h * scale
    grid_w = cols * cw + (cols - 1) * _CELL_GAP_W
    grid_h = max(rows * (ch + _CELL_TITLE_H), MIN_GRID_H)
    fig_w = max(_LEFT + grid_w + _RIGHT, MIN_FIG_W)
    fig_h = _TOP + grid_h + _BOTTOM
    x0 = (fig_w - _RIGHT - grid_w + _LEFT) / 2   # the grid centred left of the legend
    fig = plt.figure(figsize=(fig_w, fig_h))
    rects = _place_cells(fig_w, fig_h, x0, cols, cw, ch, n)
    colours = plt.get_cmap("viridis")(np.linspace(0.05, 0.85, n_ep))
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad=(1.0, 1.0, 1.0, 0.0))
    rgb = not conv1d and w.shape[2] == 3
    for k, o in enumerate(chosen):
        ax = fig.add_axes(rects[k], label=f"filter {int(o)}")
        delta = f" · Δ {_pct(float(change[o]))}" if change is not None else ""
        ax.set_title(f"{int(o)}{delta}", fontsize=7, pad=2)
        if conv1d:
            strongest = int(np.argmax(np.sqrt((w[-1, k] ** 2).sum(axis=-1))))
            for e in range(n_ep):
                ax.plot(w[e, k, strongest], color=colours[e], lw=1.1)
            ax.axhline(0.0, color="0.85", lw=0.6, zorder=0)
            ax.set_xticks([])
            ax.tick_params(labelsize=5, length=2, pad=1)
            ax.set_yticks([])
            continue
        bound = float(np.abs(w[:, k]).max()) or 1.0
        normed = 0.5 + 0.5 * w[:, k] / bound                     # (E, in, kh, kw)
        kernels = normed.transpose(0, 2, 3, 1) if rgb else normed.mean(axis=1)
        ax.imshow(kernel_strip(kernels, rgb), cmap=None if rgb else cmap, vmin=0, vmax=1,
                  interpolation="nearest", aspect="equal")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_edgecolor("0.75")  # a frame groups one filter's epochs
    epochs = [f.epoch for f in shown]
    bar_h = min(grid_h, 4.0)
    legend_ax = fig.add_axes(((x0 + grid_w + 0.3) / fig_w, (fig_h - _TOP - bar_h) / fig_h,
                              0.15 / fig_w, bar_h / fig_h), label="legend")
    if conv1d:
        import matplotlib as mpl

        bounds = np.arange(n_ep + 1) - 0.5
        norm = mpl.colors.BoundaryNorm(bounds, n_ep)
        listed = mpl.colors.ListedColormap(colours)
        bar = fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=listed), cax=legend_ax,
                           ticks=evenly_spaced(n_ep, 8))
        bar.ax.set_yticklabels([str(epochs[i]) for i in evenly_spaced(n_ep, 8)], fontsize=7)
        bar.set_label("epoch", fontsize=8)
        what = "one line per epoch (its strongest input channel)"
    elif rgb:
        legend_ax.set_axis_off()
        legend_ax.text(0.0, 0.5, "RGB\ncolour:\nmid-grey\n= 0", fontsize=7, va="center",
                       transform=legend_ax.transAxes)
        what = "epochs left to right, RGB"
    else:
        import matplotlib as mpl

        bar = fig.colorbar(mpl.cm.ScalarMappable(norm=mpl.colors.Normalize(-1, 1), cmap=cmap),
                           cax=legend_ax)
        bar.ax.tick_params(labelsize=7)
        bar.set_label("w / max|w| of the filter", fontsize=8)
        what = "epochs left to right, mean over input channels"
    n_total = history[0].n_out
    which = (f"{n} of {n_total} filters, most changed first" if n < n_total
             else f"all {n} filters")
    when = (f"{n_ep} of {len(history)} epochs ({', '.join(map(str, epochs[:6]))}"
            + (" …" if n_ep > 6 else "") + ")" if n_ep < len(history)
            else f"epochs {', '.join(map(str, epochs[:8]))}" + (" …" if n_ep > 8 else ""))
    delta = (f"; Δ = ‖w − w₀‖/‖w₀‖ from epoch {history[0].epoch} to {history[-1].epoch}"
             if change is not None else "")
    fig.suptitle(title or f"{history[0].layer} filters across epochs\n{which} · {when}\n"
                 f"each cell one filter: {what}{delta}",
                 fontsize=9, y=1.0 - 0.08 / fig_h, va="top")
    return fig
