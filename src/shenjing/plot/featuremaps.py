"""Figures of feature maps: channel grids (epochs side by side), vector strips, epoch strips.

Each function takes :class:`shenjing.analysis.featuremaps.FeatureMaps` results and returns a
matplotlib ``Figure``; nothing is computed here beyond choosing what to draw. Every channel
axis carries a label ``"<panel title> channel <c>"`` and its image is the normalised map
(``normalise_maps``) drawn with ``vmin=0, vmax=1``, so tests and users can find what is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from shenjing.analysis.featuremaps import (
    FeatureMaps,
    MapChange,
    Order,
    Scale,
    grid_shape,
    normalise_maps,
    require_spatial,
    select_channels,
    stack_values,
)
from shenjing.errors import ShapeMismatchError, UsageError

DEAD_COLOR = "#d62728"
_SCALE_TEXT = {
    "shared": "one colour scale per panel, shared by its channels",
    "channel": "each channel scaled to its own range",
    "global": "one colour scale for all panels (magnitudes comparable)",
}


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
        return f"epoch {fm.epoch}" + (" (untrained)" if fm.epoch == 0 else "")
    return f"input #{fm.index}" if fm.index is not None else "maps"


def _input_image(x: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An input sample ``(C, H, W)`` as something imshow draws: grey or RGB in [0, 1]."""
    img = np.asarray(x, dtype=np.float64)
    if img.ndim == 3 and img.shape[0] == 3:
        img = img.transpose(1, 2, 0)
    elif img.ndim == 3:
        img = img.mean(axis=0)
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return img, (None if img.ndim == 3 else "gray")


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
                      panels_per_row: int = 3) -> Any:
    """Channel grids of one layer for one input, one panel per epoch, side by side.

    ``maps`` are ``(channels, height, width)`` maps of the same layer and input (e.g.
    epoch 0 and the final epoch). The channels shown — all of them in ``order``, or the
    ``top_k`` most active — are chosen on the **last** panel and kept for every panel, so
    the same grid cell is the same channel throughout; each cell is titled with its
    channel index. Dead channels (no positive value for the input) get a red frame and
    an "off" tag. With ``change`` the mean absolute change is written under the figure.

    More than ``panels_per_row`` panels wrap onto further rows.
    ``channels`` fixes which channels are shown (overrides ``order``/``top_k``) and
    ``limits=(lo, hi)`` fixes the colour range (overrides ``scale``): both keep the frames
    of an animation across epochs comparable.
    """
    import matplotlib.pyplot as plt

    panels = _as_list(maps)
    for fm in panels:
        require_spatial(fm)
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
        img, icmap = _input_image(panels[0].input)  # type: ignore[arg-type]
        ax = grid[0, 0].add_subplot(1, 1, 1, label="input")
        ax.imshow(img, cmap=icmap, vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(_describe_input(panels[0]).replace(", ", "\n"), fontsize=9)
        grid = grid[:, 1:]
    subs = list(grid.ravel())[: len(panels)]
    for p, (sub, fm) in enumerate(zip(subs, panels, strict=True)):
        ptitle = panel_title(fm)
        dead = fm.dead(dead_atol)[chosen]
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
        n_dead = int(fm.dead(dead_atol).sum())
        sub.suptitle(f"{ptitle}{rng}\n{n_dead} of {fm.n_channels} channels off for this input",
                     fontsize=10)
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
    fig.suptitle(f"{head}\n{shown}; {scale_text}"
                 + (" (0 at the middle colour)" if signed else ""), fontsize=11)
    if change is not None:
        a, b = change.epochs
        fig.supxlabel(
            f"mean |Δ activation| epoch {a}→{b} = {change.mean_abs_change:.4g} "
            f"({change.relative_change:.0%} of mean |activation| at epoch {a}); "
            f"most changed channels: {', '.join(map(str, change.top[:8]))}", fontsize=9)
    return fig


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
                        title: str | None = None) -> Any:
    """A vector layer's output ``(features,)`` as a heat strip and bars, one row per panel.

    Vectors are never reshaped into images. The heat strip of panel ``p`` (axis labelled
    ``"<panel title> strip"``) draws the normalised values of the shown units as a
    ``(1, units)`` image; the bar axis (``"<panel title> bars"``) draws the raw values, with
    dead units (≤ 0) marked in red.
    """
    import matplotlib.pyplot as plt

    panels = _as_list(maps)
    for fm in panels:
        if fm.spatial:
            raise ShapeMismatchError(f"layer {fm.layer!r} gives channel maps "
                                     f"{fm.values.shape}; use plot_feature_maps for them")
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
        dead = vals <= dead_atol
        bars.bar(x, vals, color=np.where(dead, DEAD_COLOR, "#1f77b4"), width=0.85)
        if dead.any():
            bars.plot(x[dead], np.zeros(int(dead.sum())), "x", color=DEAD_COLOR, ms=5,
                      label="dead (≤ 0)")
        bars.set_ylim(ymin - pad, ymax + pad)
        bars.set_xlim(-0.5, len(chosen) - 0.5)
        bars.set_ylabel("activation")
        if len(chosen) <= 40:
            bars.set_xticks(x, [str(int(c)) for c in chosen], fontsize=7,
                            rotation=90 if len(chosen) > 20 else 0)
        bars.set_xlabel(f"unit ({int(dead.sum())} of {len(chosen)} shown are ≤ 0: red)")
    what = (f"top {len(chosen)} of {panels[-1].n_channels} units" if len(chosen) <
            panels[-1].n_channels else f"{len(chosen)} units")
    sort = " sorted by activation" if order != "layer" or top_k else " in layer order"
    head = title or f"{panels[-1].layer} activations (a vector) · {_describe_input(panels[0])}"
    fig.suptitle(f"{head}\n{what}{sort}", fontsize=11)
    if change is not None:
        a, b = change.epochs
        fig.supxlabel(f"mean |Δ activation| epoch {a}→{b} = {change.mean_abs_change:.4g}",
                      fontsize=9)
    return fig


def plot_feature_map_strip(maps: Sequence[FeatureMaps], channels: Sequence[int], *,
                           cmap: str | None = None, title: str | None = None) -> Any:
    """Chosen channels (rows) across epochs (columns) for one input.

    Each row has one colour scale over all its epochs, so a channel's growth is visible.
    Axis ``(row r, col e)`` is labelled ``"channel <c> epoch <e>"``.
    """
    import matplotlib.pyplot as plt

    panels = _as_list(maps)
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
    fig.suptitle(f"{head}\none colour scale per channel (row) over all epochs", fontsize=10)
    return fig
