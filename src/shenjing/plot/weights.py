"""Figures of weights: per-group histograms across epochs (small multiples) and statistics.

Input is a :class:`shenjing.analysis.weights.WeightHistory`. Each parameter group drawn
gets its own axis (labelled with the group name); each epoch is one step line over the
group's shared bins, coloured from dark (early) to light (late).

Scaling (as in :mod:`shenjing.plot.dynamics`, within its ``MAX_INCHES``): histograms are
drawn for the weight groups — bias groups are in the statistics figure and in
weights.json/npz, since a histogram of a few dozen bias values says little and would double
the panels (and the drawing time) — and at most :data:`MAX_PANELS` of them: beyond that, an
evenly spaced choice in model order, first and last always included, named in the title; at
most :data:`MAX_EPOCH_LINES` epochs per histogram, evenly spaced, first and last included.
The statistics figure has one line per group (biases dashed), coloured by depth with a
colour bar past ``MAX_LEGEND`` groups.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from shenjing.analysis.dynamics import Coverage
from shenjing.analysis.maps import grid_shape
from shenjing.analysis.weights import WeightHistory
from shenjing.plot.dynamics import (
    LayerColours,
    bounded,
    epoch_ticks,
    outside_legend,
    plain_linear_axis,
    short_name,
    wrap,
)

_STAT_LABELS = {"norm": "‖w‖ (Frobenius)", "std": "std of w", "mean": "mean of w",
                "abs_max": "max |w|", "frac_near_zero": "fraction |w| ≤ 1% of max|w|"}
#: the most histogram panels one figure holds (6 rows of 4)
MAX_PANELS = 24
#: the most epochs drawn as lines in one histogram
MAX_EPOCH_LINES = 12

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _spread(n: int, k: int) -> list[int]:
    """``k`` indices evenly spaced over ``range(n)``, first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def chosen_panels(history: WeightHistory, limit: int = MAX_PANELS) -> tuple[list[str], str]:
    """The groups a histogram figure shows and the rule it used when not all of them."""
    names = list(history.layers)
    weights = [n for n in names if not history.is_bias(n)] or names
    if len(weights) <= limit:
        if len(weights) == len(names):
            return names, ""
        return weights, (f"{len(names) - len(weights)} bias groups: in the statistics "
                         "figure and weights.json")
    picked = [weights[i] for i in _spread(len(weights), limit)]
    rule = (f"showing {len(picked)} of {len(names)} parameter groups: evenly spaced in model "
            f"order among the {len(weights)} weight groups, first and last included; all of "
            "them are in dynamics/weights.json and weights.npz (`shenjing weights RUN "
            "--layers …` draws others)")
    return picked, rule


def _coverage_note(coverage: Coverage | None) -> str:
    return f"; {coverage.describe()}" if coverage is not None else ""


def plot_weight_histograms(history: WeightHistory, *, log: bool = True,
                           title: str | None = None, coverage: Coverage | None = None) -> Figure:
    """One axis per parameter group, one histogram line per epoch (same bins across epochs).

    Axis label = group name; line label = ``"epoch <e>"``; the y axis is log-scaled by
    default so the tails (where large weights live) stay visible.
    """
    import matplotlib.pyplot as plt

    names, rule = chosen_panels(history)
    n = len(names)
    rows, cols = grid_shape(n, max_aspect=2.0)
    if cols > 4:
        cols = 4
        rows = -(-n // cols)
    epoch_idx = _spread(len(history.epochs), MAX_EPOCH_LINES)
    legend_rows = -(-len(epoch_idx) // 6)
    width, height = bounded(max(3.6 * cols, 6.0), 2.6 * rows + 1.2 + 0.2 * legend_rows
                            + (0.5 if len(rule) > 80 else 0.0))
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False,
                             layout="constrained")
    cmap = plt.get_cmap("viridis")
    colours = [cmap(v) for v in np.linspace(0.0, 0.9, len(history.epochs))]
    for slot, ax in enumerate(axes.ravel()):
        if slot >= n:
            ax.set_visible(False)
            continue
        layer = names[slot]
        ax.set_label(layer)
        edges = history.edges[layer]
        for e in epoch_idx:
            ax.stairs(history.counts[layer][e], edges, color=colours[e],
                      label=f"epoch {history.epochs[e]}", linewidth=1.2)
        if log:
            ax.set_yscale("log")
        norms = history.stats[layer]["norm"]
        ax.set_title(f"{short_name(layer, 26)}  ‖w‖ {norms[0]:.3g}→{norms[-1]:.3g}",
                     fontsize=9)
        ax.set_xlabel("weight value", fontsize=8)
        ax.set_ylabel("count" + (" (log)" if log else ""), fontsize=8)
        ax.tick_params(labelsize=7)
    first = axes.ravel()[0]
    handles = list(first.patches)
    outside_legend(fig, handles, [h.get_label() for h in handles],
                   title=None if len(epoch_idx) == len(history.epochs) else
                   f"{len(epoch_idx)} of {len(history.epochs)} epochs drawn")
    headline = title or (f"weight histograms across epochs {history.epochs[0]}…"
                         f"{history.epochs[-1]} (one line per epoch, dark = early)"
                         + _coverage_note(coverage) + (f"\n{rule}" if rule else ""))
    fig.suptitle(wrap(headline, width - 0.4, 10), fontsize=10)
    return fig


def plot_weight_stats(history: WeightHistory, *, stats: tuple[str, ...] = (
        "norm", "std", "frac_near_zero"), title: str | None = None,
        coverage: Coverage | None = None) -> Figure:
    """Chosen statistics (one axis each, labelled with the stat) against epoch, one line
    per parameter group (line label = group name)."""
    import matplotlib.pyplot as plt

    colours = LayerColours(history.layers, history.is_bias)
    legend_rows = -(-len(history.layers) // 6) if colours.legend else 0
    width, height = bounded(4.0 * len(stats) + (0 if colours.legend else 1.6),
                            3.6 + 0.2 * legend_rows)
    fig, axes = plt.subplots(1, len(stats), figsize=(width, height), squeeze=False,
                             layout="constrained")
    markers = {"marker": "o", "ms": 3} if len(history.epochs) <= 40 \
        and len(history.layers) <= 40 else {}
    for ax, stat in zip(axes[0], stats, strict=True):
        ax.set_label(stat)
        for layer in history.layers:
            ax.plot(history.epochs, history.stats[layer][stat], lw=1.5 if colours.legend
                    else 0.8, **markers, **colours.style(layer))
        plain_linear_axis(ax, np.array([history.stats[n][stat] for n in history.layers]))
        ax.set_xlabel("epoch")
        ax.set_ylabel(_STAT_LABELS.get(stat, stat))
        epoch_ticks(ax, history.epochs)
        ax.tick_params(labelsize=8)
    if colours.legend:
        handles = axes[0, 0].get_lines()
        outside_legend(fig, list(handles), [h.get_label() for h in handles])
    else:
        colours.colourbar(fig, axes)
    headline = title or ("weight statistics per parameter group across epochs"
                         + _coverage_note(coverage))
    fig.suptitle(wrap(headline, width - 0.4, 11), fontsize=11)
    return fig
