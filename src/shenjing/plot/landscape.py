"""Figures of loss landscapes and sharpness: each function draws results, returns a Figure.

Points not computed, or whose loss is NaN/Inf, are masked (left blank), never drawn as a
number. Captions state what was evaluated: eval mode (dropout off, BatchNorm running
statistics), the samples and the normalization of the directions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from shenjing.analysis.landscape.grid import Landscape

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _masked(ls: Landscape, values: np.ndarray | None = None) -> np.ma.MaskedArray:
    vals = ls.loss if values is None else values
    return np.ma.masked_where(~ls.done | ~np.isfinite(vals), vals)


def caption(ls: Landscape) -> str:
    """One line saying what a landscape shows (mode, samples, directions, engine path)."""
    d = ls.meta.get("directions", {})
    split = ls.meta.get("provenance", {}).get("split")
    parts = [f"loss {ls.meta.get('loss_name', '?')} on {ls.meta.get('n_samples', '?')} "
             f"{split + ' ' if split else ''}samples",
             "eval mode: dropout off, BatchNorm running statistics"
             if str(ls.meta.get("bn_policy", "eval")).startswith("eval") else
             "BatchNorm statistics re-estimated per point"]
    if d.get("kind") == "random":
        parts.append(f"{d.get('norm')}-normalized Gaussian directions, seed {d.get('seed')}, "
                     f"1-D tensors {'fixed' if d.get('ignore') == 'biasbn' else 'perturbed'}")
    elif d.get("kind") == "pca":
        ev = d.get("explained_variance_ratio", [])
        parts.append("PCA directions of the trajectory"
                     + (f" ({ev[0]:.0%} + {ev[1]:.0%} of variance)" if len(ev) == 2 else ""))
    prec = ls.meta.get("precision")
    if prec:
        parts.append(f"{prec['mode']} arithmetic: loss within "
                     f"{prec['max_rel_loss_error']:.1e} of exact at "
                     f"{len(prec['checked_coords'])} checked points")
    if ls.n_nonfinite:
        parts.append(f"{ls.n_nonfinite} points with NaN/Inf loss masked")
    if not ls.complete:
        parts.append(f"{ls.n_done}/{ls.done.size} points computed")
    return "; ".join(parts)


def plot_line(ls: Landscape, *, ax: Any = None, log: bool = False,
              labels: tuple[str, str] = ("θ₀", "θ*"), title: str | None = None) -> Figure:
    """Loss (left axis) and accuracy (right axis) along a line; α = 0 and 1 marked."""
    import matplotlib.pyplot as plt

    if len(ls.axes) != 1:
        raise ValueError(f"plot_line needs a 1-D landscape, got {len(ls.axes)} axes")
    fig, ax = (plt.subplots(figsize=(6.4, 4.2)) if ax is None else (ax.figure, ax))
    alpha = ls.axes[0]
    loss = _masked(ls)
    ax.plot(alpha, loss, color="C0", lw=2, label="loss")
    ax.set_xlabel("α   (θ = (1−α)·θ₀ + α·θ*)")
    ax.set_ylabel("loss", color="C0")
    if log:
        ax.set_yscale("log")
    for a, lab in zip((0.0, 1.0), labels, strict=True):
        if alpha.min() <= a <= alpha.max():
            ax.axvline(a, color="0.5", ls=":", lw=1)
            i = int(np.argmin(np.abs(alpha - a)))
            if not np.ma.is_masked(loss[i]):
                ax.plot([a], [loss[i]], "o", color="C0")
            ax.annotate(lab, (a, 1.0), xycoords=("data", "axes fraction"),
                        xytext=(0, 3), textcoords="offset points", ha="center", va="bottom")
    if np.isfinite(ls.accuracy).any():
        ax2 = ax.twinx()
        ax2.plot(alpha, _masked(ls, ls.accuracy), color="C1", lw=1.5, ls="--",
                 label="accuracy")
        ax2.set_ylabel("accuracy", color="C1")
        ax2.set_ylim(0, 1.02)
    ax.set_title(title or "loss along the line θ₀ → θ*", pad=20)
    fig.text(0.01, -0.02, caption(ls), fontsize=7, ha="left", va="top", wrap=True)
    return fig


def _levels(z: np.ma.MaskedArray, n: int, log: bool) -> np.ndarray:
    lo, hi = float(z.min()), float(z.max())
    if hi <= lo:
        hi = lo + 1e-12
    if log and lo > 0:
        return np.geomspace(lo, hi, n)
    return np.linspace(lo, hi, n)


def plot_contour(ls: Landscape, *, ax: Any = None, filled: bool = False, levels: int = 30,
                 log: bool = False, title: str | None = None,
                 trajectory: bool = True) -> Figure:
    """Contour (or filled contour) of a 2-D landscape with θ* and the minimum marked.

    ``log=True`` spaces the levels geometrically (losses span decades away from θ*).
    Trajectory landscapes also get the projected checkpoints, labelled by epoch.
    """
    import matplotlib.pyplot as plt

    if len(ls.axes) != 2:
        raise ValueError(f"plot_contour needs a 2-D landscape, got {len(ls.axes)} axes")
    if ax is None:
        # equal units on both axes (same parameter-space scale); size the figure to fit
        ratio = float(np.ptp(ls.axes[1]) / max(np.ptp(ls.axes[0]), 1e-12))
        width = 5.6 if ratio <= 1 else max(3.5, 5.0 / ratio)
        fig, ax = plt.subplots(figsize=(width, max(2.8, min(5.0, width * ratio + 0.6))))
    else:
        fig = ax.figure
    X, Y = np.meshgrid(ls.axes[0], ls.axes[1], indexing="ij")
    z = _masked(ls)
    lv = _levels(z, levels, log)
    if filled:
        cs = ax.contourf(X, Y, z, levels=lv, cmap="viridis")
        fig.colorbar(cs, ax=ax, label="loss")
    else:
        cs = ax.contour(X, Y, z, levels=lv, cmap="viridis", linewidths=1)
        ax.clabel(cs, cs.levels[::max(1, len(cs.levels) // 6)], fontsize=7, fmt="%.3g")
    ax.plot([ls.origin[0]], [ls.origin[1]], marker="*", ms=12, color="red", ls="",
            label="θ*")
    (mx, my), mval = ls.minimum()
    ax.plot([mx], [my], marker="x", ms=9, color="black", ls="", label=f"min {mval:.3g}")
    if trajectory and ls.trajectory is not None:
        epochs = None if ls.trajectory_epochs is None else [int(e) for e in ls.trajectory_epochs]
        plot_trajectory_points(ax, ls.trajectory, epochs)
    ax.set_xlabel("direction 1")
    ax.set_ylabel("direction 2")
    ax.set_aspect("equal", adjustable="box")
    ax.legend(loc="upper right", fontsize=8)
    kind = "filled contour" if filled else "contour"
    ax.set_title(title or f"loss {kind} around θ*")
    fig.text(0.01, -0.02, caption(ls), fontsize=7, ha="left", va="top", wrap=True)
    return fig


def plot_trajectory_points(ax: Any, coords: np.ndarray, epochs: Sequence[int] | None) -> None:
    """Draw a projected training trajectory on ``ax`` with each point labelled by epoch."""
    coords = np.asarray(coords)
    ax.plot(coords[:, 0], coords[:, 1], "-o", color="tab:red", ms=4, lw=1.5,
            label="trajectory")
    labels = epochs if epochs is not None else range(len(coords))
    for (cx, cy), ep in zip(coords, labels, strict=True):
        ax.annotate(str(int(ep)), (cx, cy), xytext=(3, 3), textcoords="offset points",
                    fontsize=8, color="tab:red")


def plot_trajectory(ls: Landscape, *, ax: Any = None, levels: int = 25,
                    log: bool = True) -> Figure:
    """The training trajectory on its PCA plane, over the loss contours of that plane."""
    if ls.trajectory is None:
        raise ValueError("this landscape has no trajectory; compute it with "
                         "`shenjing landscape trajectory RUN`")
    return plot_contour(ls, ax=ax, levels=levels, log=log, filled=False,
                        title="training trajectory on its PCA plane")


def plot_surface(ls: Landscape, *, ax: Any = None, log: bool = False,
                 title: str | None = None) -> Figure:
    """Static 3-D surface of a 2-D landscape (matplotlib)."""
    import matplotlib.pyplot as plt

    if len(ls.axes) != 2:
        raise ValueError(f"plot_surface needs a 2-D landscape, got {len(ls.axes)} axes")
    if ax is None:
        fig = plt.figure(figsize=(6.4, 5))
        ax = fig.add_subplot(projection="3d")
    else:
        fig = ax.figure
    X, Y = np.meshgrid(ls.axes[0], ls.axes[1], indexing="ij")
    z = np.where(ls.done & np.isfinite(ls.loss), ls.loss, np.nan)
    if log:
        z = np.log10(np.where(z > 0, z, np.nan))
    ax.plot_surface(X, Y, z, cmap="viridis", linewidth=0, antialiased=True)
    ax.set_xlabel("direction 1")
    ax.set_ylabel("direction 2")
    ax.set_zlabel("log10 loss" if log else "loss")
    ax.set_title(title or "loss surface around θ*")
    return fig


def surface_plotly(ls: Landscape, *, log: bool = False, title: str | None = None) -> Any:
    """Interactive 3-D surface (a plotly ``go.Figure``) for the HTML report."""
    import plotly.graph_objects as go

    if len(ls.axes) != 2:
        raise ValueError(f"surface_plotly needs a 2-D landscape, got {len(ls.axes)} axes")
    z = np.where(ls.done & np.isfinite(ls.loss), ls.loss, np.nan)
    if log:
        z = np.log10(np.where(z > 0, z, np.nan))
    # plotly's surface takes z[row=y, col=x]
    fig = go.Figure(go.Surface(x=ls.axes[0], y=ls.axes[1], z=z.T, colorscale="Viridis",
                               colorbar={"title": "log10 loss" if log else "loss"}))
    if ls.trajectory is not None:
        traj = np.asarray(ls.trajectory)
        fig.add_trace(go.Scatter3d(
            x=traj[:, 0], y=traj[:, 1], z=_surface_at(ls, traj, log), mode="lines+markers",
            text=[f"epoch {int(e)}" for e in np.asarray(ls.trajectory_epochs)],
            name="trajectory"))
    drawn = [z] + ([np.asarray(fig.data[1].z, dtype=float)] if len(fig.data) > 1 else [])
    fig.update_layout(title=title or "loss surface around θ*",
                      scene=surface_scene(ls.axes[0], ls.axes[1], drawn,
                                          "log10 loss" if log else "loss"),
                      margin={"l": 0, "r": 0, "t": 40, "b": 0})
    return fig


SURFACE_HEIGHT = 0.6
"""Height of the 3-D box relative to its longer side: low enough that the bowl reads as a
landscape, high enough that its walls are not flattened."""
_EYE_DIRECTION = np.array([1.0, 1.0, 0.8])  # from the (+x, +y) corner, ~30° above the floor
_FILL = 0.85  # the box's bounding sphere fills at most 85 % of the view cone


def surface_scene(x: np.ndarray, y: np.ndarray, z: Sequence[np.ndarray], z_title: str
                  ) -> dict[str, Any]:
    """A plotly ``scene`` that shows the whole surface whatever the grid: explicit ranges,
    a fixed box shape and a camera far enough away to see all of it.

    Why: with plotly's defaults (``aspectmode='auto'``, eye (1.25, 1.25, 1.25)) the box of a
    steep surface (dropout_cnn's) reached past the view and its corners were cut off.
    Plotly draws the box as ±aspectratio/2 around the camera centre and sees it through a
    45° vertical field of view, so the eye is put at the distance where the box's bounding
    sphere fills :data:`_FILL` of that cone. The z-range holds every finite value drawn
    (``z``: the surface and any trajectory), with 5 % to spare.
    """
    import math

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    span_x, span_y = float(np.ptp(x)) or 1.0, float(np.ptp(y)) or 1.0
    # equal units on both axes where that stays readable; never thinner than 1:2
    ratio = float(np.clip(span_y / span_x, 0.5, 2.0))
    aspect = np.array([1.0 / max(1.0, ratio), min(1.0, ratio), SURFACE_HEIGHT])
    finite = np.concatenate([np.asarray(v, dtype=float).reshape(-1) for v in z]) \
        if len(z) else np.zeros(0)
    finite = finite[np.isfinite(finite)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    pad = 0.05 * (hi - lo) if hi > lo else max(0.5 * abs(hi), 0.5)
    radius = 0.5 * float(np.linalg.norm(aspect))
    distance = radius / (_FILL * math.sin(math.radians(45 / 2)))
    eye = _EYE_DIRECTION / np.linalg.norm(_EYE_DIRECTION) * distance
    return {
        "xaxis": {"title": {"text": "direction 1"}, "range": [float(x[0]), float(x[-1])]},
        "yaxis": {"title": {"text": "direction 2"}, "range": [float(y[0]), float(y[-1])]},
        "zaxis": {"title": {"text": z_title}, "range": [lo - pad, hi + pad]},
        "aspectmode": "manual",
        "aspectratio": {"x": float(aspect[0]), "y": float(aspect[1]), "z": float(aspect[2])},
        "camera": {"eye": {"x": float(eye[0]), "y": float(eye[1]), "z": float(eye[2])},
                   "center": {"x": 0, "y": 0, "z": 0}, "up": {"x": 0, "y": 0, "z": 1},
                   "projection": {"type": "perspective"}},
    }


def _surface_at(ls: Landscape, pts: np.ndarray, log: bool) -> np.ndarray:
    out = []
    for px, py in pts:
        i = int(np.argmin(np.abs(ls.axes[0] - px)))
        j = int(np.argmin(np.abs(ls.axes[1] - py)))
        v = ls.loss[i, j]
        out.append(np.log10(v) if log and v > 0 else v)
    return np.asarray(out)
