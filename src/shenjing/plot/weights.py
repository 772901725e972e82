"""Figures of weights: per-layer histograms across epochs (small multiples) and statistics.

Input is a :class:`shenjing.analysis.weights.WeightHistory`. Each layer gets its own axis
(labelled with the layer name); each epoch is one step line over the layer's shared bins,
coloured from dark (early) to light (late).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shenjing.analysis.featuremaps import grid_shape
from shenjing.analysis.weights import WeightHistory

_STAT_LABELS = {"norm": "‖w‖ (Frobenius)", "std": "std of w", "mean": "mean of w",
                "abs_max": "max |w|", "frac_near_zero": "fraction |w| ≤ 1% of max|w|"}


def plot_weight_histograms(history: WeightHistory, *, log: bool = True,
                           title: str | None = None) -> Any:
    """One axis per layer, one histogram line per epoch (same bins across epochs).

    Axis label = layer name; line label = ``"epoch <e>"``; the y axis is log-scaled by
    default so the tails (where large weights live) stay visible.
    """
    import matplotlib.pyplot as plt

    n = len(history.layers)
    rows, cols = grid_shape(n, max_aspect=2.0)
    if cols > 4:
        cols = 4
        rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows + 0.8),
                             squeeze=False, layout="constrained")
    cmap = plt.get_cmap("viridis")
    colours = [cmap(v) for v in np.linspace(0.0, 0.9, len(history.epochs))]
    for slot, ax in enumerate(axes.ravel()):
        if slot >= n:
            ax.set_visible(False)
            continue
        layer = history.layers[slot]
        ax.set_label(layer)
        edges = history.edges[layer]
        for e, epoch in enumerate(history.epochs):
            ax.stairs(history.counts[layer][e], edges, color=colours[e],
                      label=f"epoch {epoch}", linewidth=1.2)
        if log:
            ax.set_yscale("log")
        norms = history.stats[layer]["norm"]
        ax.set_title(f"{layer}  ‖w‖ {norms[0]:.3g}→{norms[-1]:.3g}", fontsize=9)
        ax.set_xlabel("weight value", fontsize=8)
        ax.set_ylabel("count" + (" (log)" if log else ""), fontsize=8)
        ax.tick_params(labelsize=7)
    axes.ravel()[0].legend(fontsize=7)
    fig.suptitle(title or f"weight histograms across epochs {history.epochs[0]}…"
                 f"{history.epochs[-1]} (one line per epoch, dark = early)", fontsize=11)
    return fig


def plot_weight_stats(history: WeightHistory, *, stats: tuple[str, ...] = (
        "norm", "std", "frac_near_zero"), title: str | None = None) -> Any:
    """Chosen statistics (one axis each, labelled with the stat) against epoch, one line
    per layer (line label = layer name)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(stats), figsize=(4.0 * len(stats), 3.4),
                             squeeze=False, layout="constrained")
    for ax, stat in zip(axes[0], stats, strict=True):
        ax.set_label(stat)
        for layer in history.layers:
            ax.plot(history.epochs, history.stats[layer][stat], marker="o", ms=3, label=layer)
        ax.set_xlabel("epoch")
        ax.set_ylabel(_STAT_LABELS.get(stat, stat))
        ax.set_xticks(history.epochs)
    axes[0, -1].legend(fontsize=7)
    fig.suptitle(title or "weight statistics per layer across epochs", fontsize=11)
    return fig
