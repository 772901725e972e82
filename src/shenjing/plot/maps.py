"""Figures of feature maps: channel grids (epochs side by side), vector strips, heat maps of
sequences, tokens and 1-D signals with traces of their most changed units, epoch strips.

Each function takes :class:`shenjing.analysis.maps.FeatureMaps` results and returns a
matplotlib ``Figure``; nothing is computed here beyond choosing what to draw. Every channel
axis carries a label ``"<panel title> channel <c>"`` and its image is the normalised map
(``normalise_maps``) drawn with ``vmin=0, vmax=1``, so tests and users can find what is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from shenjing._labels import epoch0_words
from shenjing.analysis.maps import (
    FeatureMaps,
    MapChange,
    Order,
    Scale,
    evenly_spaced,
    grid_shape,
    normalise_maps,
    require_spatial,
    select_channels,
    stack_values,
)
from shenjing.errors import ShapeMismatchError, UsageError
from shenjing.plot._images import input_image

DEAD_COLOR = "#d62728"
_SCALE_TEXT = {
    "shared": "one colour scale per panel, shared by its channels",
    "channel": "each channel scaled to its own range",
    "global": "one colour scale for all panels (magnitudes comparable)",
}

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _as_list(maps: FeatureMaps | Sequence[FeatureMaps]) -> list[FeatureMaps]:
    out = [maps] if isinstance(maps, FeatureMaps) else list(maps)
    if not out:
        raise UsageError("no feature maps to draw")
    layers = {m.layer for m in out}
    if len(layers) != 1:
        raise UsageError(f"one figure shows one layer; got {sorted(layers)}")
    return out


def panel_title(fm: FeatureMaps) -> str:
    """``'epoch 5'`` (or ``'input #3'`` for maps without an epoch)."""
    if fm.epoch is not None:
        return f"epoch {fm.epoch}" + (f" ({epoch0_words()})" if fm.epoch == 0 else "")
    return f"input #{fm.index}" if fm.index is not None else "maps"


def _describe_input(fm: FeatureMaps) -> str:
    parts = []
    if fm.index is not None:
        parts.append(f"input #{fm.index}")
    if fm.label is not None:
        parts.append(f"label {fm.label}")
    return ", ".join(parts) or "input"


def plot_feature_maps(maps: FeatureMaps | Sequence[FeatureMaps], *, scale: Scale = "shared",
                      order: Order = "layer", top_k: int | None = None,
                      change: MapChange | None = None, show_input: bool = True,
                      dead_atol: float = 0.0, cmap: str | None = None,
                      title: str | None = None, panel_width: float = 4.0,
                      channels: Sequence[int] | None = None,
                      limits: tuple[float, float] | None = None,
                      panels_per_row: int = 3, max_panels: int = 6) -> Figure:
    """Channel grids of one layer for one input, one panel per epoch, side by side.

    ``maps`` are ``(channels, height, width)`` maps of the same layer and input (e.g.
    epoch 0 and the final epoch). The channels shown — all of them in ``order``, or the
    ``top_k`` most active — are chosen on the **last** panel and kept for every panel, so
    the same grid cell is the same channel throughout; each cell is titled with its
    channel index. Dead channels (no positive value for the input) get a red frame and
    an "off" tag. With ``change`` the mean absolute change is written under the figure.

    More than ``panels_per_row`` panels wrap onto further rows; more than ``max_panels``
    epochs are thinned evenly (first and last kept, stated in the title).
    ``channels`` fixes which channels are shown (overrides ``order``/``top_k``) and
    ``limits=(lo, hi)`` fixes the colour range (overrides ``scale``): both keep the frames
    of an animation across epochs comparable.
    """
    import matplotlib.pyplot as plt

    panels = _as_list(maps)
    for fm in panels:
        require_spatial(fm)
    n_given = len(panels)
    if n_given > max_panels:
        panels = [panels[i] for i in evenly_spaced(n_given, max_panels)]
    stack = stack_values(panels)
    last = panels[-1].values
    if channels is not None:
        chosen = np.asarray(channels, dtype=np.int64)
        if chosen.size == 0 or chosen.min() < 0 or chosen.max() >= last.shape[0]:
            raise UsageError(f"channels {list(channels)} out of range: layer "
                             f"{panels[-1].layer!r} has channels 0…{last.shape[0] - 1}")
    else:
        chosen = select_channels(last, order=order, top_k=top_k)
    if limits is not None:
        normed, lo, hi = _fixed_limits(stack[:, chosen], limits)
    else:
        normed, lo, hi = normalise_maps(stack[:, chosen], scale)
    signed = bool((lo < 0).any())
    cmap = cmap or ("RdBu_r" if signed else "viridis")
    rows, cols = grid_shape(len(chosen))
    with_input = show_input and panels[0].input is not None and panels[0].input.ndim >= 2

    per_row = min(len(panels), max(1, panels_per_row))
    n_rows = -(-len(panels) // per_row)
    height = panel_width * rows / cols + 1.0
    fig = plt.figure(figsize=(panel_width * per_row + (1.8 if with_input else 0),
                              height * n_rows + 0.6), layout="constrained")
    ratios = ([0.6 * cols / max(rows, 1)] if with_input else []) + [float(cols)] * per_row
    made = fig.subfigures(n_rows, len(ratios), width_ratios=ratios, wspace=0.02,
                          squeeze=False)
    grid = np.asarray(made)
    if with_input:
        img, icmap = input_image(panels[0].input)  # type: ignore[arg-type]
        ax = grid[0, 0].add_subplot(1, 1, 1, label="input")
        ax.imshow(img, cmap=icmap, vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(_describe_input(panels[0]).replace(", ", "\n"), fontsize=9)
        grid = grid[:, 1:]
    subs = list(grid.ravel())[: len(panels)]
    for p, (sub, fm) in enumerate(zip(subs, panels, strict=True)):
        ptitle = panel_title(fm)
        dead = fm.dead(dead_atol)[chosen] & fm.counts_off
        axes = np.atleast_1d(sub.subplots(rows, cols, squeeze=False)).ravel()
        for slot, ax in enumerate(axes):
            ax.set_xticks([])
            ax.set_yticks([])
            if slot >= len(chosen):
                ax.set_visible(False)
                continue
            ch = int(chosen[slot])
            ax.set_label(f"{ptitle} channel {ch}")
            ax.imshow(normed[p, slot], cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"{ch} off" if dead[slot] else str(ch), fontsize=7, pad=1,
                         color=DEAD_COLOR if dead[slot] else "black")
            if dead[slot]:
                for spine in ax.spines.values():
                    spine.set_edgecolor(DEAD_COLOR)
                    spine.set_linewidth(2)
        rng = ("" if scale == "channel" and limits is None
               else f" · colour {lo[p].min():.3g} … {hi[p].max():.3g}")
        sub.suptitle(f"{ptitle}{rng}\n{_off_text(fm, dead_atol)}", fontsize=10)
    by = order if order != "layer" else "mean"
    shown = (f"{len(chosen)} chosen of {panels[-1].n_channels} channels"
             if channels is not None
             else f"top {len(chosen)} of {panels[-1].n_channels} channels by {by} activation"
             if top_k is not None and top_k < panels[-1].n_channels
             else f"{len(chosen)} channels" + (f", sorted by {order} activation"
                                              if order != "layer" else " in layer order"))
    head = title or f"{panels[-1].layer} feature maps · {_describe_input(panels[0])}"
    scale_text = (f"fixed colour scale {lo.min():.3g} … {hi.max():.3g} for every epoch"
                  if limits is not None else _SCALE_TEXT[scale])
    thinned = (f"; {len(panels)} of {n_given} epochs shown, evenly spaced"
               if len(panels) < n_given else "")
    fig.suptitle(f"{head}\n{shown}; {scale_text}"
                 + (" (0 at the middle colour)" if signed else "") + thinned, fontsize=11)
    if change is not None:
        a, b = change.epochs
        fig.supxlabel(
            f"mean |Δ activation| epoch {a}→{b} = {change.mean_abs_change:.4g} "
            f"({change.relative_text()}); "
            f"most changed channels: {', '.join(map(str, change.top[:8]))}", fontsize=9)
    return fig


def _off_text(fm: FeatureMaps, atol: float = 0.0) -> str:
    """``'3 of 32 channels off for this input'``, or why "off" is not counted here."""
    if not fm.counts_off:
        what = f"{fm.module_type} outputs" if fm.module_type else "outputs not after a ReLU"
        return f"'off' not counted for {what}"
    return f"{int(fm.dead(atol).sum())} of {fm.n_channels} {fm.unit_name}s off for this input"


def _fixed_limits(stack: np.ndarray, limits: tuple[float, float]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lo, hi = float(limits[0]), float(limits[1])
    if not hi > lo:
        raise UsageError(f"colour limits must have lo < hi, got {limits}")
    if lo < 0:
        bound = max(abs(lo), abs(hi))
        lo, hi = -bound, bound
    normed = np.clip((stack.astype(np.float64) - lo) / (hi - lo), 0.0, 1.0)
    shape = stack.shape[:2]
    return normed, np.full(shape, lo), np.full(shape, hi)


def plot_feature_vector(maps: FeatureMaps | Sequence[FeatureMaps], *, order: Order = "layer",
                        top_k: int | None = None, scale: Scale = "global",
                        change: MapChange | None = None, dead_atol: float = 0.0,
                        title: str | None = None) -> Figure:
    """A vector layer's output ``(features,)`` as a heat strip and bars, one row per panel.

    Vectors are never reshaped into images. The heat strip of panel ``p`` (axis labelled
    ``"<panel title> strip"``) draws the normalised values of the shown units as a
    ``(1, units)`` image; the bar axis (``"<panel title> bars"``) draws the raw values, with
    dead units (≤ 0) marked in red.
    """
    import matplotlib.pyplot as plt

    panels = _as_list(maps)
    for fm in panels:
        if fm.view != "vector":
            use = "plot_feature_maps" if fm.spatial else "plot_feature_heatmap"
            raise ShapeMismatchError(f"layer {fm.layer!r} gives a {fm.view} "
                                     f"{fm.values.shape}; use {use} for it, or as_vector(fm) "
                                     "to draw it flattened")
    stack = stack_values(panels)
    chosen = select_channels(panels[-1].values, order=order, top_k=top_k)
    sub = stack[:, chosen]
    normed, lo, hi = normalise_maps(sub[:, None, :], "global" if scale == "global" else
                                    "shared")
    signed = bool((lo < 0).any())
    cmap = "RdBu_r" if signed else "viridis"
    n = len(panels)
    fig = plt.figure(figsize=(min(14.0, 3 + 0.12 * len(chosen)), 2.4 * n + 1.0),
                     layout="constrained")
    gs = fig.add_gridspec(2 * n, 1, height_ratios=[1, 4] * n)
    x = np.arange(len(chosen))
    ymin, ymax = float(min(sub.min(), 0)), float(max(sub.max(), 0))
    pad = 0.05 * (ymax - ymin or 1.0)
    for p, fm in enumerate(panels):
        ptitle = panel_title(fm)
        strip = fig.add_subplot(gs[2 * p], label=f"{ptitle} strip")
        strip.imshow(normed[p, 0][None, :], aspect="auto", cmap=cmap, vmin=0, vmax=1,
                     interpolation="nearest")
        strip.set_yticks([])
        strip.set_xticks([])
        strip.set_title(f"{ptitle} · colour {lo[p, 0]:.3g} … {hi[p, 0]:.3g}", fontsize=9)
        bars = fig.add_subplot(gs[2 * p + 1], label=f"{ptitle} bars")
        vals = sub[p]
        dead = (vals <= dead_atol) & fm.counts_off
        bars.bar(x, vals, color=np.where(dead, DEAD_COLOR, "#1f77b4"), width=0.85)
        if dead.any():
            bars.plot(x[dead], np.zeros(int(dead.sum())), "x", color=DEAD_COLOR, ms=5,
                      label="off (exactly 0)")
        bars.set_ylim(ymin - pad, ymax + pad)
        bars.set_xlim(-0.5, len(chosen) - 0.5)
        bars.set_ylabel("activation")
        if len(chosen) <= 40:
            bars.set_xticks(x, [str(int(c)) for c in chosen], fontsize=7,
                            rotation=90 if len(chosen) > 20 else 0)
        bars.set_xlabel(f"unit ({int(dead.sum())} of {len(chosen)} shown are off: red)"
                        if fm.counts_off else f"unit · {_off_text(fm)}")
    what = (f"top {len(chosen)} of {panels[-1].n_channels} units" if len(chosen) <
            panels[-1].n_channels else f"{len(chosen)} units")
    sort = " sorted by activation" if order != "layer" or top_k else " in layer order"
    head = title or f"{panels[-1].layer} activations (a vector) · {_describe_input(panels[0])}"
    flat = panels[-1].flattened_from
    what += f" (flattened from {'×'.join(map(str, flat))})" if flat else ""
    fig.suptitle(f"{head}\n{what}{sort}", fontsize=11)
    if change is not None:
        a, b = change.epochs
        fig.supxlabel(f"mean |Δ activation| epoch {a}→{b} = {change.mean_abs_change:.4g}",
                      fontsize=9)
    return fig


def plot_feature_map_strip(maps: Sequence[FeatureMaps], channels: Sequence[int], *,
                           cmap: str | None = None, title: str | None = None,
                           max_epochs: int = 12) -> Figure:
    """Chosen channels (rows) across epochs (columns) for one input.

    Each row has one colour scale over all its epochs, so a channel's growth is visible.
    Axis ``(row r, col e)`` is labelled ``"channel <c> epoch <e>"``. More than
    ``max_epochs`` epochs are thinned evenly (first and last kept, stated in the title).
    """
    import matplotlib.pyplot as plt

    panels = _as_list(maps)
    n_given = len(panels)
    if n_given > max_epochs:
        panels = [panels[i] for i in evenly_spaced(n_given, max_epochs)]
    for fm in panels:
        require_spatial(fm)
    if not channels:
        raise UsageError("choose at least one channel for the strip")
    stack = stack_values(panels)
    n_ch = stack.shape[1]
    bad = [c for c in channels if not 0 <= c < n_ch]
    if bad:
        raise UsageError(f"channels {bad} out of range: layer {panels[0].layer!r} has "
                         f"channels 0…{n_ch - 1}")
    per_channel = stack[:, list(channels)].transpose(1, 0, 2, 3)  # (rows, epochs, H, W)
    normed, lo, _ = normalise_maps(per_channel, "shared")
    signed = bool((lo < 0).any())
    cmap = cmap or ("RdBu_r" if signed else "viridis")
    rows, cols = len(channels), len(panels)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols + 1.2, 1.3 * rows + 1.0),
                             squeeze=False, layout="constrained")
    for r, ch in enumerate(channels):
        for e, fm in enumerate(panels):
            ax = axes[r, e]
            ax.set_label(f"channel {ch} epoch {fm.epoch}")
            ax.imshow(normed[r, e], cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"epoch {fm.epoch}", fontsize=8)
            if e == 0:
                ax.set_ylabel(f"ch {ch}", fontsize=8)
    head = title or f"{panels[0].layer}: channels across epochs · {_describe_input(panels[0])}"
    thinned = (f"; {len(panels)} of {n_given} epochs, evenly spaced"
               if len(panels) < n_given else "")
    fig.suptitle(f"{head}\none colour scale per channel (row) over all epochs{thinned}",
                 fontsize=10)
    return fig


MAX_HEATMAP_UNITS = 256   # rows of a heat map; more are capped to the most active (stated)
MAX_HEATMAP_PANELS = 6    # epochs side by side; more are thinned evenly (stated)
_HEAT_VIEWS = ("sequence", "tokens", "signal")


def heatmap_units(fm: FeatureMaps, change: MapChange | None = None,
                  max_units: int = MAX_HEATMAP_UNITS) -> np.ndarray:
    """The channels/units a heat map shows, in index order: all of them, or the
    ``max_units`` that changed most (with ``change``) or are most active (mean |value|)."""
    n = fm.n_channels
    if n <= max_units:
        return np.arange(n)
    score = change.per_channel if change is not None else np.abs(fm.by_unit()).mean(axis=1)
    return np.sort(np.argsort(-score, kind="stable")[:max_units])


def trace_units(fm: FeatureMaps, change: MapChange | None, n: int) -> list[int]:
    """The ``n`` channels whose traces are drawn: the most changed, else the most active."""
    if n <= 0:
        return []
    if change is not None:
        return [int(c) for c in change.top[:n]]
    score = np.abs(fm.by_unit()).mean(axis=1)
    return [int(c) for c in np.argsort(-score, kind="stable")[:n]]


def plot_feature_heatmap(maps: FeatureMaps | Sequence[FeatureMaps], *,
                         change: MapChange | None = None, traces: int | None = None,
                         max_units: int = MAX_HEATMAP_UNITS,
                         max_panels: int = MAX_HEATMAP_PANELS, dead_atol: float = 0.0,
                         title: str | None = None) -> Figure:
    """A sequence, token or 1-D signal output as heat maps, one per epoch, axes kept.

    For a ``(time, hidden)``, ``(tokens, features)`` or ``(channels, length)`` output the
    x axis is the position (time step, token, position along the signal) and the y axis the
    channel/unit, so the same row is the same unit in every panel. All epoch panels share one
    colour scale (symmetric, diverging, when values are signed); with ``change`` a last
    panel draws ``last − first`` on its own symmetric scale. Below, ``traces`` line plots
    (default 4 for sequences and signals, none for tokens) follow the most changed units
    along the position axis, one line per epoch, legend outside the plots.

    Axes are labelled ``"<panel title> heatmap"``, ``"change heatmap"`` and
    ``"<unit> <u> trace"``; each heat map draws ``values[units]`` along the unit axis as
    ``(units, positions)``. More than ``max_units`` units: the most changed (or most active)
    are shown, in index order; more than ``max_panels`` epochs: evenly thinned. Both stated
    in the title.
    """
    import matplotlib.pyplot as plt

    panels = _as_list(maps)
    for fm in panels:
        if fm.view not in _HEAT_VIEWS:
            use = "plot_feature_maps" if fm.spatial else "plot_feature_vector"
            raise ShapeMismatchError(f"layer {fm.layer!r} gives a {fm.view} "
                                     f"{fm.values.shape}; a heat map is for sequences, tokens "
                                     f"and 1-D signals: use {use}")
    stack_values(panels)
    if max_units < 1 or max_panels < 1:
        raise UsageError(f"max_units and max_panels must be ≥ 1, got {max_units}, "
                         f"{max_panels}")
    all_panels = panels
    if len(panels) > max_panels:
        panels = [panels[i] for i in evenly_spaced(len(panels), max_panels)]
    last = panels[-1]
    unit, pos = last.unit_name, last.position_name
    units = heatmap_units(last, change, max_units)
    n_traces = (4 if last.view != "tokens" else 0) if traces is None else max(0, traces)
    chosen_traces = trace_units(last, change, min(n_traces, last.n_channels))
    images = np.stack([m.by_unit()[units] for m in panels])      # (panels, units, positions)
    bound = float(np.abs(images).max())
    signed = bool(images.min() < 0)
    if signed:
        vmin, vmax, cmap = -(bound or 1.0), bound or 1.0, "RdBu_r"
    else:
        vmin, vmax, cmap = 0.0, float(images.max()) or 1.0, "viridis"
    with_delta = change is not None and len(all_panels) > 1
    n_cols = len(panels) + (1 if with_delta else 0)
    width = min(16.0, 1.6 + 3.4 * n_cols)
    heat_h = min(4.2, 1.4 + 0.03 * len(units) + 1.2)
    height = heat_h + (2.3 if chosen_traces else 0.0) + 1.0
    fig = plt.figure(figsize=(width, min(height, 12.0)), layout="constrained")
    top: Any = fig
    bottom: Any = None
    if chosen_traces:
        top, bottom = np.asarray(fig.subfigures(2, 1, height_ratios=[heat_h, 2.3])).ravel()
    axes = np.atleast_1d(top.subplots(1, n_cols, squeeze=False)).ravel()
    image = None
    for p, fm in enumerate(panels):
        ax = axes[p]
        ptitle = panel_title(fm)
        ax.set_label(f"{ptitle} heatmap")
        image = ax.imshow(images[p], aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax,
                          interpolation="nearest", origin="lower")
        ax.set_title(f"{ptitle}\n{_off_text(fm, dead_atol)}" if fm.counts_off else ptitle,
                     fontsize=9)
        ax.set_xlabel(str(pos))
        if p == 0:
            ax.set_ylabel(unit)
        _unit_ticks(ax, units)
    top.colorbar(image, ax=list(axes[: len(panels)]), shrink=0.9,
                 label="activation" + (" (0 = white)" if signed else ""))
    if with_delta and change is not None:
        first = all_panels[0].by_unit()[units]
        delta = all_panels[-1].by_unit()[units] - first
        dbound = float(np.abs(delta).max()) or 1.0
        ax = axes[-1]
        ax.set_label("change heatmap")
        dimg = ax.imshow(delta, aspect="auto", cmap="PuOr_r", vmin=-dbound, vmax=dbound,
                         interpolation="nearest", origin="lower")
        a, b = change.epochs
        ax.set_title(f"change: epoch {b} − epoch {a}\nmean |Δ| {change.mean_abs_change:.3g}",
                     fontsize=9)
        ax.set_xlabel(str(pos))
        _unit_ticks(ax, units)
        top.colorbar(dimg, ax=ax, shrink=0.9, label="Δ activation")
    if bottom is not None:
        _draw_traces(bottom, panels, chosen_traces)
    shown = (f"{len(units)} of {last.n_channels} {unit}s ("
             + ("most changed" if change is not None else "largest mean |activation|")
             + ", in index order)" if len(units) < last.n_channels
             else f"all {last.n_channels} {unit}s")
    thinned = (f"; {len(panels)} of {len(all_panels)} epochs shown, evenly spaced"
               if len(panels) < len(all_panels) else "")
    head = title or (f"{last.layer}: {last.view} ({' × '.join(last.axes)}) · "
                     f"{_describe_input(panels[0])}")
    off = "" if last.counts_off else f"; {_off_text(last)}"
    fig.suptitle(f"{head}\n{shown}{thinned}; one colour scale for every epoch"
                 + (" (0 at the middle colour)" if signed else "") + off, fontsize=11)
    if change is not None:
        a, b = change.epochs
        where = (f"; most changed {pos}s: {', '.join(map(str, change.top_positions[:6]))}"
                 if change.top_positions else "")
        fig.supxlabel(
            f"mean |Δ activation| epoch {a}→{b} = {change.mean_abs_change:.4g} "
            f"({change.relative_text()}); most changed "
            f"{unit}s: {', '.join(map(str, change.top[:6]))}{where}", fontsize=9)
    return fig


def _unit_ticks(ax: Any, units: np.ndarray) -> None:
    """Label rows with their unit index (a few ticks; rows may skip indices when capped),
    and positions with whole numbers."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    n = len(units)
    rows = evenly_spaced(n, 8) if n > 8 else list(range(n))
    ax.set_yticks(rows, [str(int(units[r])) for r in rows], fontsize=7)


def _draw_traces(sub: Any, panels: Sequence[FeatureMaps], units: Sequence[int]) -> None:
    """One small line plot per unit: its values along the position axis, one line per epoch."""
    import matplotlib as mpl
    from matplotlib.ticker import MaxNLocator

    axes = np.atleast_1d(sub.subplots(1, len(units), squeeze=False, sharey=True)).ravel()
    first = panels[0]
    colours = (["0.55", "C0"] if len(panels) == 2 else
               list(mpl.colormaps["viridis"](np.linspace(0.05, 0.8, len(panels)))))
    for ax, u in zip(axes, units, strict=True):
        ax.set_label(f"{first.unit_name} {u} trace")
        for p, fm in enumerate(panels):
            grey = p == 0 and len(panels) > 1
            ax.plot(fm.by_unit()[u], color="0.55" if grey else colours[p],
                    ls="--" if grey else "-", lw=1.2, label=panel_title(fm))
        ax.set_title(f"{first.unit_name} {u}", fontsize=9)
        ax.set_xlabel(str(first.position_name), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.axhline(0.0, color="0.85", lw=0.8, zorder=0)
    axes[0].set_ylabel("activation", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    sub.legend(handles, labels, loc="outside right upper", fontsize=8, frameon=False)
    sub.suptitle(f"most changed {first.unit_name}s along the {first.position_name} axis",
                 fontsize=9)
