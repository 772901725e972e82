"""Figures of training dynamics from a run's metrics: curves, per-layer ratios, status.

Inputs are :class:`shenjing.analysis.dynamics.Dynamics` and ``LayerStatus``. Every axis
is labelled (``ax.get_label()``) with the metric it shows, and every line with its layer
or split, so tests and readers can find what is drawn. Values that are null (e.g. the
update ratio of epoch 0) are NaN and leave a gap.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shenjing.analysis.dynamics import Dynamics, LayerStatus

LAYER_PANELS: tuple[tuple[str, str, bool], ...] = (
    ("weight_norm", "weight norm ‖w‖", False),
    ("update_ratio", "relative update ‖Δw‖/‖w‖ per epoch", True),
    ("grad_norm", "gradient norm (mean over steps)", True),
    ("dist_from_init", "distance from init ‖w−w₀‖/‖w₀‖", False),
    ("cos_to_init", "cosine to init", False),
)
STATUS_COLOURS = {"moving": "#2ca02c", "settled": "#7f7f7f", "unknown": "#bcbd22"}


def _positive(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    return finite.size > 0 and bool((finite > 0).all())


def plot_training_curves(dyn: Dynamics, *, title: str | None = None) -> Any:
    """Loss (log y) and accuracy against epoch, train and test; axes labelled ``"loss"`` and
    ``"accuracy"``; lines labelled ``"train"``/``"test"``."""
    import matplotlib.pyplot as plt

    has_acc = dyn.has("train_accuracy") or dyn.has("test_accuracy")
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(9 if has_acc else 5, 3.4),
                             squeeze=False, layout="constrained")
    ax = axes[0, 0]
    ax.set_label("loss")
    for split in ("train", "test"):
        vals = dyn.scalars[f"{split}_loss"]
        if np.isfinite(vals).any():
            ax.plot(dyn.epochs, vals, marker="o", ms=3, label=split)
    if _positive(np.concatenate([dyn.scalars["train_loss"], dyn.scalars["test_loss"]])):
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss" + (" (log)" if ax.get_yscale() == "log" else ""))
    ax.legend(fontsize=8)
    if has_acc:
        ax = axes[0, 1]
        ax.set_label("accuracy")
        for split in ("train", "test"):
            vals = dyn.scalars[f"{split}_accuracy"]
            if np.isfinite(vals).any():
                ax.plot(dyn.epochs, vals, marker="o", ms=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=8)
    for a in axes.ravel():
        a.set_xticks(dyn.epochs)
    fig.suptitle(title or "loss and accuracy (epoch 0 = untrained)", fontsize=11)
    return fig


def plot_layer_dynamics(dyn: Dynamics, *, title: str | None = None) -> Any:
    """Small multiples of the per-layer metrics against epoch (one line per layer), plus
    the dead-unit fraction per activation; ratios and gradient norms on log scales."""
    import matplotlib.pyplot as plt

    panels = [p for p in LAYER_PANELS if dyn.has(p[0])]
    n = len(panels) + (1 if dyn.dead_units else 0)
    cols = 3 if n > 4 else max(n, 1)
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.1 * rows + 0.6),
                             squeeze=False, layout="constrained")
    flat = axes.ravel()
    for ax, (key, label, log) in zip(flat, panels, strict=False):
        ax.set_label(key)
        values = dyn.layer_metric(key)
        for i, layer in enumerate(dyn.layers):
            ax.plot(dyn.epochs, values[i], marker="o", ms=3, label=layer)
        if log and _positive(values):
            ax.set_yscale("log")
        ax.set_title(label + (" (log)" if ax.get_yscale() == "log" else ""), fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_xticks(dyn.epochs)
    if dyn.dead_units:
        ax = flat[len(panels)]
        ax.set_label("dead_units")
        for name, frac in dyn.dead_units.items():
            ax.plot(dyn.epochs, frac, marker="o", ms=3, label=name)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title("dead units (fraction zero for every test input)", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_xticks(dyn.epochs)
        ax.legend(fontsize=7)
    for ax in flat[n:]:
        ax.set_visible(False)
    if panels:
        flat[0].legend(fontsize=7)
    fig.suptitle(title or "how each layer's weights move during training", fontsize=11)
    return fig


def plot_layer_status(dyn: Dynamics, status: LayerStatus, *, title: str | None = None) -> Any:
    """Which layers still move: a layers × epochs heat map of log10 ‖Δw‖/‖w‖ (the image
    array is exactly that, NaN for epoch 0), each layer's status on the right, and the
    warnings listed under the figure."""
    import matplotlib.pyplot as plt

    ratio = dyn.layer_metrics.get("update_ratio",
                                  np.full((len(dyn.layers), len(dyn.epochs)), np.nan))
    with np.errstate(divide="ignore", invalid="ignore"):
        logr = np.where(ratio > 0, np.log10(np.where(ratio > 0, ratio, 1.0)), np.nan)
    height = 0.45 * max(len(dyn.layers), 1) + 2.2 + 0.22 * min(len(status.warnings), 12)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(dyn.epochs) + 4.0), height),
                           layout="constrained")
    ax.set_label("update_ratio_log10")
    finite = logr[np.isfinite(logr)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (-3.0, 0.0)
    if vmin == vmax:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    image = ax.imshow(logr, aspect="auto", cmap="magma", vmin=vmin, vmax=vmax,
                      interpolation="nearest")
    ax.set_xticks(range(len(dyn.epochs)), [str(e) for e in dyn.epochs])
    ax.set_yticks(range(len(dyn.layers)),
                  [f"{name}  [{status.status.get(name, 'unknown')}]" for name in dyn.layers])
    for tick, name in zip(ax.get_yticklabels(), dyn.layers, strict=True):
        tick.set_color(STATUS_COLOURS.get(status.status.get(name, "unknown"), "black"))
    for i in range(len(dyn.layers)):
        for j in range(len(dyn.epochs)):
            if np.isfinite(ratio[i, j]):
                ax.text(j, i, f"{ratio[i, j]:.2g}", ha="center", va="center", fontsize=7,
                        color="white" if logr[i, j] < (vmin + vmax) / 2 else "black")
    ax.set_xlabel("epoch")
    ax.set_ylabel("layer [status at the last epoch]")
    fig.colorbar(image, ax=ax, label="log10 ‖Δw‖/‖w‖")
    th = status.thresholds
    moving = ", ".join(status.moving) or "none"
    settled = ", ".join(status.settled) or "none"
    ax.set_title(title or f"which layers still move (epoch {status.epoch}): moving: {moving}; "
                 f"settled: {settled}\nsettled = last ratio < {th['settled_below']:g} or < "
                 f"{th['settled_fraction']:g}× its peak", fontsize=9)
    if status.warnings:
        shown = [w.message for w in status.warnings[:12]]
        if len(status.warnings) > 12:
            shown.append(f"… and {len(status.warnings) - 12} more (see the JSON)")
        fig.supxlabel("warnings:\n" + "\n".join(shown), fontsize=7, color="#d62728",
                      ha="left", x=0.01)
    else:
        fig.supxlabel("no warnings: no vanishing/exploding layer, no layer with many dead "
                      "units", fontsize=8, color="#2ca02c")
    return fig
