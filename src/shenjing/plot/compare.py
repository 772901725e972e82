"""Figures that put several runs side by side (``shenjing compare``): one colour per run.

Every function takes the numbers already computed (by :mod:`shenjing.analysis.compare` and
the views' own analyses) keyed by run label, draws them on common axes, and returns the
Figure; none computes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _color(i: int) -> str:
    return f"C{i % 10}"


def plot_compared_curves(curves: Mapping[str, Mapping[str, Sequence[Any]]]) -> Figure:
    """Training curves of every run overlaid: loss (train dashed, test solid) and test
    accuracy against epoch. ``curves[label]`` holds ``epoch``, ``train_loss``,
    ``test_loss`` and, for classifiers, ``test_accuracy`` (None where not recorded)."""
    import matplotlib.pyplot as plt

    has_acc = any(any(v is not None for v in c.get("test_accuracy", ())) for c in
                  curves.values())
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(10 if has_acc else 5.4, 3.8),
                             squeeze=False)
    ax_loss = axes[0, 0]
    for i, (label, c) in enumerate(curves.items()):
        ep = np.asarray(c["epoch"], dtype=float)
        for key, style in (("train_loss", "--"), ("test_loss", "-")):
            y = np.asarray([np.nan if v is None else v for v in c.get(key, [None] * len(ep))],
                           dtype=float)
            ax_loss.plot(ep, y, style, marker="o", ms=3, color=_color(i),
                         label=f"{label} {key.replace('_', ' ')}")
        if has_acc:
            acc = np.asarray([np.nan if v is None else v for v in
                              c.get("test_accuracy", [None] * len(ep))], dtype=float)
            axes[0, 1].plot(ep, acc, "-o", ms=3, color=_color(i), label=label)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.set_yscale("log")
    ax_loss.set_title("loss (train dashed, test solid)")
    ax_loss.legend(fontsize=7)
    if has_acc:
        axes[0, 1].set_xlabel("epoch")
        axes[0, 1].set_ylabel("test accuracy")
        axes[0, 1].set_title("test accuracy")
        axes[0, 1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_compared_dynamics(dynamics: Mapping[str, Mapping[str, Mapping[str, Sequence[Any]]]],
                           layers: Sequence[str],
                           metrics: Sequence[str] = ("update_ratio", "grad_norm")) -> Figure:
    """Per-layer training dynamics of every run overlaid: one column per layer, one row
    per metric (‖Δw‖/‖w‖ and gradient norm by default, log scale).

    ``dynamics[label][layer]`` holds ``epoch`` and each metric (None where not recorded).
    """
    import matplotlib.pyplot as plt

    cols = max(1, len(layers))
    fig, axes = plt.subplots(len(metrics), cols, figsize=(2.8 * cols + 1, 2.4 * len(metrics)),
                             squeeze=False)
    names = {"update_ratio": "update ratio ‖Δw‖/‖w‖", "grad_norm": "gradient norm",
             "dist_from_init": "‖w − w₀‖/‖w₀‖", "weight_norm": "‖w‖"}
    for r, metric in enumerate(metrics):
        for c, layer in enumerate(layers):
            ax = axes[r, c]
            for i, (label, per_layer) in enumerate(dynamics.items()):
                d = per_layer.get(layer)
                if not d:
                    continue
                y = np.asarray([np.nan if v is None else v for v in d.get(metric, ())],
                               dtype=float)
                if y.size and np.isfinite(y).any():
                    ax.plot(np.asarray(d["epoch"], dtype=float), y, "-o", ms=3,
                            color=_color(i), label=label)
            if ax.lines and all(np.nanmin(ln.get_ydata()) > 0 for ln in ax.lines):
                ax.set_yscale("log")
            if r == 0:
                ax.set_title(layer, fontsize=9)
            if c == 0:
                ax.set_ylabel(names.get(metric, metric), fontsize=8)
            if r == len(metrics) - 1:
                ax.set_xlabel("epoch")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_compared_lines(lines: Mapping[str, tuple[Sequence[float], Sequence[float]]], *,
                        ax: Any = None, log: bool = True) -> Figure:
    """Loss along θ(α) = (1−α)·θ₀ + α·θ* of every run on one axis (α = 0: the untrained
    net, α = 1: the trained one). ``lines[label] = (alpha, loss)``."""
    import matplotlib.pyplot as plt

    fig, ax = (plt.subplots(figsize=(6.4, 4)) if ax is None else (ax.figure, ax))
    for i, (label, (alpha, loss)) in enumerate(lines.items()):
        ax.plot(np.asarray(alpha, dtype=float), np.asarray(loss, dtype=float), "-",
                color=_color(i), label=label)
    for x in (0.0, 1.0):
        ax.axvline(x, color="0.6", lw=0.8, ls=":")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("α  (0 = θ₀ at init, 1 = θ* trained)")
    ax.set_ylabel("loss")
    ax.set_title("loss along the straight line θ₀ → θ*")
    ax.legend(fontsize=8)
    return fig


def plot_compared_planes(planes: Mapping[str, Mapping[str, Any]], *,
                         vmin: float, vmax: float, log: bool = True) -> Figure:
    """Filter-normalized loss planes side by side on one colour scale and the same axes.

    ``planes[label]`` holds ``axes`` (a0, a1), ``loss`` (n0, n1) and ``level`` (the loss
    level whose region is the minimum's width: drawn as a white contour). Every panel uses
    the same ``vmin``/``vmax`` (log colour scale by default) and the same axis limits; one
    colour bar serves them all.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm, Normalize

    n = max(1, len(planes))
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n + 1.2, 3.6), squeeze=False,
                             sharex=True, sharey=True)
    norm = LogNorm(vmin=vmin, vmax=vmax) if log and vmin > 0 else Normalize(vmin, vmax)
    image = None
    lo0 = min(float(np.min(p["axes"][0])) for p in planes.values())
    hi0 = max(float(np.max(p["axes"][0])) for p in planes.values())
    lo1 = min(float(np.min(p["axes"][1])) for p in planes.values())
    hi1 = max(float(np.max(p["axes"][1])) for p in planes.values())
    for k, (label, p) in enumerate(planes.items()):
        ax = axes[0, k]
        a0, a1 = (np.asarray(a, dtype=float) for a in p["axes"])
        z = np.ma.masked_invalid(np.asarray(p["loss"], dtype=float))
        # loss[i, j] is at (a0[i], a1[j]): rows are the first direction, drawn as x
        image = ax.pcolormesh(a0, a1, z.T, norm=norm, cmap="viridis", shading="nearest")
        level = p.get("level")
        if level is not None and np.isfinite(level) and z.count() > 3:
            ax.contour(a0, a1, z.T, levels=[float(level)], colors="white", linewidths=1.2)
        ax.plot([0], [0], marker="*", color="red", ms=9)
        ax.set_xlim(lo0, hi0)
        ax.set_ylim(lo1, hi1)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("direction 1 (filter-normalized)")
        if k == 0:
            ax.set_ylabel("direction 2 (filter-normalized)")
        ax.set_aspect("equal")
    if image is not None:
        fig.colorbar(image, ax=list(axes[0]), label="loss (one scale for all runs)",
                     shrink=0.9)
    return fig


def _plotly_text(text: str) -> str:
    """Text plotly shows as itself: it reads a few HTML tags in titles and hover labels."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def planes_plotly(planes: Mapping[str, Mapping[str, Any]], *, vmin: float,
                  vmax: float) -> Any:
    """The planes of :func:`plot_compared_planes` as interactive heat maps (plotly): one
    shared colour axis over log10(loss) from ``vmin`` to ``vmax``, the same axis ranges."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    labels = list(planes)
    fig = make_subplots(rows=1, cols=max(1, len(labels)),
                        subplot_titles=[_plotly_text(label) for label in labels],
                        shared_yaxes=True, horizontal_spacing=0.04)
    lo0 = min(float(np.min(p["axes"][0])) for p in planes.values())
    hi0 = max(float(np.max(p["axes"][0])) for p in planes.values())
    lo1 = min(float(np.min(p["axes"][1])) for p in planes.values())
    hi1 = max(float(np.max(p["axes"][1])) for p in planes.values())
    for k, label in enumerate(labels):
        p = planes[label]
        loss = np.asarray(p["loss"], dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(np.isfinite(loss) & (loss > 0), np.log10(loss), np.nan)
        fig.add_trace(go.Heatmap(
            x=np.asarray(p["axes"][0], dtype=float).tolist(),
            y=np.asarray(p["axes"][1], dtype=float).tolist(),
            z=[[None if not np.isfinite(v) else float(v) for v in row] for row in z.T],
            coloraxis="coloraxis", name=label,
            hovertemplate="direction 1 %{x:.3f}<br>direction 2 %{y:.3f}<br>"
                          "log10 loss %{z:.4f}<extra>" + _plotly_text(label) +
                          "</extra>"), row=1, col=k + 1)
    fig.update_xaxes(range=[lo0, hi0], title_text="direction 1")
    fig.update_yaxes(range=[lo1, hi1])
    fig.update_yaxes(title_text="direction 2", row=1, col=1)
    fig.update_layout(coloraxis={"cmin": float(np.log10(vmin)), "cmax": float(np.log10(vmax)),
                                 "colorscale": "Viridis",
                                 "colorbar": {"title": {"text": "log10 loss"}}},
                      margin={"l": 50, "r": 20, "t": 40, "b": 40})
    return fig


def plot_compared_sharpness(top: Mapping[str, float],
                            trace: Mapping[str, tuple[float, float]] | None = None,
                            epochs: Mapping[str, tuple[Sequence[int], Sequence[float]]]
                            | None = None) -> Figure:
    """Sharpness side by side: λ_max and the Hessian trace (± 95 % CI) at the compared
    epoch as bars, and λ_max across training per run (where measured)."""
    import matplotlib.pyplot as plt

    panels = 1 + (trace is not None and bool(trace)) + (epochs is not None and bool(epochs))
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.6), squeeze=False)
    labels = list(top)
    ax = axes[0, 0]
    bars = ax.bar(range(len(labels)), [top[k] for k in labels],
                  color=[_color(i) for i in range(len(labels))])
    ax.bar_label(bars, fmt="%.4g", fontsize=8)
    ax.set_xticks(range(len(labels)), labels, fontsize=8, rotation=15)
    ax.set_ylabel("top Hessian eigenvalue λ_max")
    ax.set_title("sharpness at the compared epoch")
    col = 1
    if trace:
        ax = axes[0, col]
        names = [k for k in labels if k in trace]
        means = [trace[k][0] for k in names]
        half = [trace[k][1] for k in names]
        bars = ax.bar(range(len(names)), means, yerr=half, capsize=4,
                      color=[_color(labels.index(k)) for k in names])
        ax.bar_label(bars, fmt="%.4g", fontsize=8)
        ax.set_xticks(range(len(names)), names, fontsize=8, rotation=15)
        ax.set_ylabel("Hessian trace (± 95 % CI)")
        ax.set_title("trace (Hutchinson)")
        col += 1
    if epochs:
        ax = axes[0, col]
        for k, (eps, vals) in epochs.items():
            ax.plot(list(eps), list(vals), "-o", ms=3,
                    color=_color(labels.index(k) if k in labels else 0), label=k)
        ax.set_xlabel("epoch")
        ax.set_ylabel("λ_max")
        ax.set_title("sharpness across training")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_cka_layers(matrix: Any, rows: Sequence[str], cols: Sequence[str], *, ax: Any = None,
                    title: str = "linear CKA", row_title: str = "",
                    col_title: str = "") -> Figure:
    """A (rows × cols) CKA map on the fixed scale 0…1, each cell labelled with its value."""
    import matplotlib.pyplot as plt

    m = np.asarray(matrix, dtype=float)
    fig, ax = (plt.subplots(figsize=(1.0 + 0.7 * len(cols), 1.0 + 0.6 * len(rows)))
               if ax is None else (ax.figure, ax))
    image = ax.imshow(m, vmin=0.0, vmax=1.0, cmap="magma")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if np.isfinite(m[i, j]):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] < 0.6 else "black")
    ax.set_xticks(range(len(cols)), list(cols), rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), list(rows), fontsize=8)
    ax.set_xlabel(col_title)
    ax.set_ylabel(row_title)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="CKA")
    return fig


def plot_compared_probes(probes: Mapping[str, Mapping[str, float]], layers: Sequence[str], *,
                         ax: Any = None, chance: float | None = None) -> Figure:
    """Linear-probe test accuracy by layer, one line per run (layers in model order)."""
    import matplotlib.pyplot as plt

    fig, ax = (plt.subplots(figsize=(6.4, 3.8)) if ax is None else (ax.figure, ax))
    for i, (label, per_layer) in enumerate(probes.items()):
        y = [per_layer.get(layer, np.nan) for layer in layers]
        ax.plot(range(len(layers)), y, "-o", color=_color(i), label=label)
    if chance is not None:
        ax.axhline(chance, color="0.5", ls=":", lw=1, label="chance")
    ax.set_xticks(range(len(layers)), list(layers), fontsize=8)
    ax.set_xlabel("layer")
    ax.set_ylabel("linear-probe test accuracy")
    ax.set_title("what a linear read-out finds in each layer")
    ax.legend(fontsize=8)
    return fig


__all__ = ["planes_plotly", "plot_cka_layers", "plot_compared_curves", "plot_compared_dynamics",
           "plot_compared_lines", "plot_compared_planes", "plot_compared_probes",
           "plot_compared_sharpness"]
