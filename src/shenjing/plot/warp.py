"""Figures of the space-warping study: the grid and the data at every layer, probes, boundary.

They draw a :class:`shenjing.analysis.warp.Warp` / :class:`DecisionMap` (or the same arrays
read back from a run's ``warp/*.npz``) and return the matplotlib ``Figure``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

_CLASS_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")
_KIND_TEXT = {"input": "input", "linear": "pre-activation", "activation": "post-activation",
              "output": "output (logits)", "other": "output"}

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plot_warp_layer(data_2d: np.ndarray, grid_2d: np.ndarray, labels: np.ndarray, *,
                    title: str = "", ax: Any = None, max_points: int = 1000,
                    equal_aspect: bool = False) -> Figure:
    """One layer: the warped grid ``(2, lines, points, 2)`` and the points ``(N, 2)`` by class.

    ``equal_aspect`` keeps the true geometry (for real 2-D layers); PCA views are drawn
    filling the panel, since their second axis may hold far less variance.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(4, 4))
    else:
        fig = ax.figure
    grid_2d = np.asarray(grid_2d, dtype=float)
    for family, colour in zip(grid_2d, ("0.55", "0.75"), strict=True):
        for line in family:
            ax.plot(line[:, 0], line[:, 1], color=colour, lw=0.5, zorder=1)
    labels = np.asarray(labels)
    step = max(1, len(labels) // max_points)
    for c in np.unique(labels):
        pick = np.flatnonzero(labels == c)[::step]
        ax.scatter(data_2d[pick, 0], data_2d[pick, 1], s=5,
                   color=_CLASS_COLOURS[int(c) % len(_CLASS_COLOURS)], zorder=2,
                   label=f"class {c}")
    if equal_aspect:
        ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def layer_title(name: str, kind: str, projection: str, probe: float | None) -> str:
    """``'relu1 (post-activation)\\nPCA, 91% of variance · probe 0.96'``."""
    head = name if kind == "input" else f"{name} ({_KIND_TEXT.get(kind, kind)})"
    tail = projection + ("" if probe is None else f" · probe {probe:.2f}")
    return f"{head}\n{tail}"


def plot_warp(warp: Any, *, ncols: int = 4) -> Figure:
    """Small multiples: the grid and data as every layer of ``warp`` sees them.

    Each panel title names the layer, whether it is pre- or post-activation, how it was
    brought to 2-D (itself, or PCA with the share of variance shown) and the linear-probe
    test accuracy at that layer (measured in the full layer space).
    """
    import matplotlib.pyplot as plt

    layers = list(warp.layers)
    n = len(layers)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 3.5 * nrows), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        if i >= n:
            ax.set_visible(False)
            continue
        w = layers[i]
        plot_warp_layer(w.data_2d, w.grid_2d, warp.labels, ax=ax,
                        equal_aspect=w.projection.method == "identity",
                        title=layer_title(w.name, w.kind, w.projection.label,
                                          w.probe_test_accuracy))
    axes.ravel()[0].legend(fontsize=7, loc="lower right", markerscale=2)
    fig.suptitle("Each layer moves the grid and the data: linear layers rotate, stretch and "
                 "shift; activations bend")
    fig.tight_layout()
    return fig


def plot_probe_accuracy(names: Sequence[str], test_accuracy: Sequence[float], *,
                        train_accuracy: Sequence[float] | None = None,
                        kinds: Sequence[str] | None = None, chance: float | None = None,
                        ax: Any = None) -> Figure:
    """Linear-probe accuracy per layer (how linearly separable the classes are there)."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(names) + 2), 3.8))
    else:
        fig = ax.figure
    pos = np.arange(len(names))
    ax.plot(pos, test_accuracy, marker="o", color="#1f77b4", label="probe, test points")
    if train_accuracy is not None:
        ax.plot(pos, train_accuracy, marker=".", ls=":", color="0.4",
                label="probe, train points")
    if chance is not None:
        ax.axhline(chance, color="#d62728", lw=1, ls="--", label=f"chance ({chance:.2f})")
    labels = list(names) if kinds is None else [
        f"{n}\n{_KIND_TEXT.get(k, k).split(' ')[0]}"
        for n, k in zip(names, kinds, strict=True)]
    ax.set_xticks(pos, labels, fontsize=8)
    ax.set_ylim(0.0, 1.02)
    ax.set_ylabel("linear-probe accuracy")
    ax.set_title("Linear separability of the classes at each layer")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_decision_boundary(xs: np.ndarray, ys: np.ndarray, proba: np.ndarray,
                           points: np.ndarray, labels: np.ndarray, *, ax: Any = None,
                           title: str = "Decision boundary in input space") -> Figure:
    """P(class 1) on the mesh (``proba`` ``(ny, nx, classes)``), the 0.5 contour, the points."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 5))
    else:
        fig = ax.figure
    proba = np.asarray(proba, dtype=float)
    if proba.shape[-1] == 2:
        field = proba[..., 1]
        mesh = ax.contourf(xs, ys, field, levels=np.linspace(0, 1, 21), cmap="RdBu_r",
                           alpha=0.6)
        ax.contour(xs, ys, field, levels=[0.5], colors="k", linewidths=1.5)
        fig.colorbar(mesh, ax=ax, label="P(class 1)")
    else:
        ax.contourf(xs, ys, proba.argmax(-1), levels=np.arange(proba.shape[-1] + 1) - 0.5,
                    cmap="tab10", alpha=0.4)
    labels = np.asarray(labels)
    for c in np.unique(labels):
        pick = labels == c
        ax.scatter(points[pick, 0], points[pick, 1], s=5, edgecolors="none",
                   color=_CLASS_COLOURS[int(c) % len(_CLASS_COLOURS)], label=f"class {c}")
    ax.set_xlabel("x₁")
    ax.set_ylabel("x₂")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right", markerscale=2)
    return fig
