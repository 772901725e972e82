"""Figures of the function-fitting study (seed 001): fit vs polynomials, units, regions, epochs.

Every function takes arrays computed by :mod:`shenjing.analysis.fit` (or read back from
a run's ``fit/*.npz``), draws, and returns the matplotlib ``Figure``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

_NET = "#1f77b4"
_TRUE = "black"
_POLY_COLOURS = ("#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure(ax: Any, figsize: tuple[float, float]) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize)
    return fig, ax


def _shade_outside(ax: Any, x: np.ndarray, train_range: tuple[float, float]) -> None:
    lo, hi = train_range
    if x.min() < lo:
        ax.axvspan(x.min(), lo, color="0.92", zorder=0, lw=0)
    if x.max() > hi:
        ax.axvspan(hi, x.max(), color="0.92", zorder=0, lw=0,
                   label="outside the training range")


def _ylim_from(y: np.ndarray, margin: float = 0.25) -> tuple[float, float]:
    lo, hi = float(np.min(y)), float(np.max(y))
    pad = margin * max(hi - lo, 1e-9)
    return lo - pad, hi + pad


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "inf"
    return f"{v:.3g}"


def plot_fit(x: np.ndarray, y_true: np.ndarray, y_net: np.ndarray, *,
             polynomials: Mapping[str, np.ndarray] | None = None,
             x_train: np.ndarray | None = None, y_train: np.ndarray | None = None,
             train_range: tuple[float, float] = (-5.0, 5.0),
             errors: Mapping[str, Mapping[str, Any]] | None = None,
             title: str = "The net's fit vs polynomial interpolation", ax: Any = None) -> Figure:
    """The true function, the net and each polynomial over ``x`` (in and beyond the range).

    ``polynomials`` maps a label (``'Lagrange (degree 99)'``) to its values at ``x``;
    ``errors`` maps the same labels (and ``'net'``) to ``{'rmse_in', 'rmse_out'}``, shown in
    the legend. The y axis is fixed to the true function's span (+25%): polynomials that
    leave it are clipped, and the title says so.
    """
    fig, ax = _figure(ax, (9, 5))
    x = np.asarray(x, dtype=float)
    errors = errors or {}
    _shade_outside(ax, x, train_range)

    def label(name: str, text: str) -> str:
        e = errors.get(name)
        if not e:
            return text
        return f"{text}: RMSE in {_fmt(e.get('rmse_in'))}, out {_fmt(e.get('rmse_out'))}"

    ax.plot(x, y_true, color=_TRUE, lw=2, ls="--", label="true function")
    ax.plot(x, y_net, color=_NET, lw=2.2, zorder=4, label=label("net", "net"))
    clipped = False
    ylim = _ylim_from(np.asarray(y_true))
    for (name, y), colour in zip((polynomials or {}).items(), _POLY_COLOURS, strict=False):
        y = np.asarray(y, dtype=float)
        with np.errstate(invalid="ignore"):
            clipped |= bool(np.any(~np.isfinite(y)) or np.any(y < ylim[0]) or np.any(y > ylim[1]))
        ax.plot(x, np.clip(y, ylim[0] - 1e3 * (ylim[1] - ylim[0]),
                           ylim[1] + 1e3 * (ylim[1] - ylim[0])),
                color=colour, lw=1.2, alpha=0.85, label=label(name, name))
    if x_train is not None and y_train is not None:
        ax.scatter(x_train, y_train, s=9, color="0.3", zorder=3, label="training points")
    ax.set_ylim(*ylim)
    ax.set_xlim(float(x.min()), float(x.max()))
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(title + (" (polynomials clipped to the plot)" if clipped else ""))
    ax.legend(fontsize=8, loc="best")
    return fig


def plot_fit_errors(x: np.ndarray, abs_errors: Mapping[str, np.ndarray], *,
                    train_range: tuple[float, float] = (-5.0, 5.0), ax: Any = None) -> Figure:
    """|prediction − true| along x on a log scale, one line per approximation."""
    fig, ax = _figure(ax, (9, 3.5))
    x = np.asarray(x, dtype=float)
    _shade_outside(ax, x, train_range)
    colours = (_NET, *_POLY_COLOURS)
    for (name, err), colour in zip(abs_errors.items(), colours, strict=False):
        err = np.asarray(err, dtype=float)
        ax.semilogy(x, np.maximum(np.where(np.isfinite(err), err, np.nan), 1e-12), color=colour,
                    lw=1.2, label=name)
    ax.set_xlim(float(x.min()), float(x.max()))
    ax.set_xlabel("x")
    ax.set_ylabel("|prediction − true| (log)")
    ax.set_title("Error along x: inside the training range and beyond it")
    ax.legend(fontsize=8)
    return fig


def plot_decomposition(x: np.ndarray, pieces: np.ndarray, kinks: np.ndarray,
                       partial_sums: np.ndarray, *, y_net: np.ndarray | None = None,
                       y_true: np.ndarray | None = None,
                       train_range: tuple[float, float] | None = None,
                       max_units: int = 64) -> Figure:
    """A 1-hidden-layer ReLU net as a sum of its units.

    Top: each unit's piece ``v_i·relu(w_i·x + b_i)`` ``pieces`` ``(n, hidden)`` with its kink
    (``kinks`` ``(hidden,)``) marked. Bottom: ``partial_sums`` ``(hidden + 1, n)`` — the
    output bias, then adding the units one by one in kink order (light to dark), ending at
    the net's output.
    """
    import matplotlib.pyplot as plt

    x = np.asarray(x, dtype=float)
    pieces = np.asarray(pieces, dtype=float)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 8), sharex=True)
    n_units = pieces.shape[1]
    active = np.flatnonzero(np.any(pieces != 0, axis=0))[:max_units]
    cmap = plt.get_cmap("viridis")
    k = np.asarray(kinks, dtype=float)
    for j, i in enumerate(active):
        colour = cmap(j / max(len(active) - 1, 1))
        top.plot(x, pieces[:, i], color=colour, lw=0.9)
        if np.isfinite(k[i]) and x.min() <= k[i] <= x.max():
            top.plot([k[i]], [0.0], marker="|", ms=10, color=colour)
    in_view = np.isfinite(k) & (k >= x.min()) & (k <= x.max())
    top.axhline(0, color="0.5", lw=0.6)
    top.set_ylabel("v_i · relu(w_i x + b_i)")
    top.set_title(f"{len(active)} of {n_units} units contribute on this range; "
                  f"{int(in_view.sum())} kinks (−b_i/w_i, ticks) inside it")
    sums = np.asarray(partial_sums, dtype=float)
    steps = sums.shape[0]
    for s in range(steps):
        bottom.plot(x, sums[s], color=plt.get_cmap("Greys")(0.15 + 0.75 * s / max(steps - 1, 1)),
                    lw=0.7)
    if y_net is not None:
        bottom.plot(x, y_net, color=_NET, lw=2, label="net output")
    if y_true is not None:
        bottom.plot(x, y_true, color=_TRUE, lw=1.5, ls="--", label="true function")
    if train_range is not None:
        for t in (top, bottom):
            _shade_outside(t, x, train_range)
    bottom.set_ylim(*_ylim_from(sums[-1] if y_true is None else np.asarray(y_true)))
    bottom.set_xlabel("x")
    bottom.set_ylabel("b + Σ of the first k units")
    bottom.set_title("Adding the units in kink order builds the fit (light → dark)")
    bottom.legend(fontsize=8)
    return fig


def plot_linear_regions(x: np.ndarray, y_net: np.ndarray, boundaries: np.ndarray,
                        slopes: np.ndarray, edges: np.ndarray, *,
                        y_true: np.ndarray | None = None,
                        train_range: tuple[float, float] | None = None) -> Figure:
    """The net's output with its linear regions (alternating bands), and the slope per region."""
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True,
                                      gridspec_kw={"height_ratios": [2, 1]})
    edges = np.asarray(edges, dtype=float)
    for i in range(len(edges) - 1):
        if i % 2:
            top.axvspan(edges[i], edges[i + 1], color="#dde8f5", lw=0, zorder=0)
    top.plot(x, y_net, color=_NET, lw=1.8, label="net output")
    if y_true is not None:
        top.plot(x, y_true, color=_TRUE, lw=1.2, ls="--", label="true function")
        top.set_ylim(*_ylim_from(np.asarray(y_true)))
    if train_range is not None:
        for t in train_range:
            top.axvline(t, color="0.3", lw=1, ls=":")
    top.set_ylabel("y")
    top.set_title(f"{len(slopes)} linear regions on [{edges[0]:.3g}, {edges[-1]:.3g}] "
                  f"({len(boundaries)} activation-pattern changes)")
    top.legend(fontsize=8)
    bottom.stairs(np.asarray(slopes, dtype=float), edges, color=_NET, lw=1.5, baseline=None)
    bottom.set_xlabel("x")
    bottom.set_ylabel("slope dy/dx")
    return fig


def plot_fit_frame(x: np.ndarray, y_true: np.ndarray, y_net: np.ndarray, *, epoch: int,
                   train_range: tuple[float, float], loss: float | None = None,
                   ylim: tuple[float, float] | None = None, ax: Any = None) -> Figure:
    """One epoch's fit (a frame of the animation / a small multiple)."""
    fig, ax = _figure(ax, (5, 3.5))
    x = np.asarray(x, dtype=float)
    _shade_outside(ax, x, train_range)
    ax.plot(x, y_true, color=_TRUE, lw=1.2, ls="--")
    ax.plot(x, y_net, color=_NET, lw=1.6)
    ax.set_ylim(*(ylim or _ylim_from(np.asarray(y_true))))
    ax.set_xlim(float(x.min()), float(x.max()))
    ax.set_title(f"epoch {epoch}" + (f" · train MSE {loss:.3g}" if loss is not None else ""),
                 fontsize=9)
    return fig


def plot_fit_epochs(x: np.ndarray, y_true: np.ndarray, y_epochs: np.ndarray,
                    epochs: Sequence[int], *, train_range: tuple[float, float],
                    losses: Sequence[float | None] | None = None, ncols: int = 4) -> Figure:
    """Small multiples: the net's fit (``y_epochs`` ``(epochs, n)``) at each recorded epoch."""
    import matplotlib.pyplot as plt

    n = len(epochs)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.4 * nrows), sharex=True,
                             sharey=True, squeeze=False)
    ylim = _ylim_from(np.asarray(y_true))
    for i, ax in enumerate(axes.ravel()):
        if i >= n:
            ax.set_visible(False)
            continue
        plot_fit_frame(x, y_true, y_epochs[i], epoch=int(epochs[i]), train_range=train_range,
                       loss=None if losses is None else losses[i], ylim=ylim, ax=ax)
    fig.suptitle("How the fit evolves over epochs (dashed: true function; grey: outside the "
                 "training range)")
    fig.tight_layout()
    return fig
