"""Numbers that put several runs' loss surfaces side by side: a minimum's width and depth.

A 2-D plane (``Landscape`` of kind ``plane``) holds the loss on a grid of coordinates
``(α, β)`` along two filter-normalized random directions around θ* (α = β = 0). Two numbers
summarise the minimum it shows, both in the plane's own coordinates, so that planes with the
same axes, directions seed and samples compare:

- **width**: the area of the region around θ* whose loss stays at or below a level (the
  connected region that contains θ*, not every low patch of the plane). The grid is refined
  by bilinear interpolation before the area is measured, so the area does not move in steps
  of whole grid cells.
- **depth**: the mean loss on the plane's border minus the loss at θ*.

The level is the caller's choice; :func:`basin_summary` measures it both ways that are
comparable across runs: ``loss(θ*) + delta`` (the same rise for every run, "ε-flatness"), and
one common absolute level (the same loss value for every run).

>>> import numpy as np
>>> a = np.linspace(-1, 1, 81)
>>> loss = a[:, None] ** 2 + a[None, :] ** 2        # a bowl: loss ≤ L is a disc of area πL
>>> abs(area_below_level(loss, (a, a), 0.25) - np.pi * 0.25) < 0.01
True
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from shenjing.errors import UsageError

#: each grid cell is split into this many sub-cells per axis before the area is counted
DEFAULT_REFINE = 8


def _check_plane(loss: Any, axes: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    grid = np.asarray(loss, dtype=np.float64)
    if grid.ndim != 2 or len(axes) != 2:
        raise UsageError(f"a plane's loss must be 2-D with two axes, got shape {grid.shape} "
                         f"and {len(axes)} axes")
    a0, a1 = (np.asarray(a, dtype=np.float64) for a in axes)
    if grid.shape != (len(a0), len(a1)):
        raise UsageError(f"the loss grid {grid.shape} does not match the axes "
                         f"({len(a0)}, {len(a1)})")
    if len(a0) < 2 or len(a1) < 2 or np.any(np.diff(a0) <= 0) or np.any(np.diff(a1) <= 0):
        raise UsageError("each axis needs at least 2 increasing coordinates")
    return grid, a0, a1


def _refined(grid: np.ndarray, a0: np.ndarray, a1: np.ndarray, refine: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The grid bilinearly interpolated onto ``refine`` sub-steps per cell; a sub-point
    next to a non-finite corner stays non-finite (above every level)."""
    f0 = np.concatenate([np.linspace(a0[i], a0[i + 1], refine, endpoint=False)
                         for i in range(len(a0) - 1)] + [a0[-1:]])
    f1 = np.concatenate([np.linspace(a1[i], a1[i + 1], refine, endpoint=False)
                         for i in range(len(a1) - 1)] + [a1[-1:]])
    bad = ~np.isfinite(grid)
    clean = np.where(bad, 0.0, grid)

    def interp(values: np.ndarray) -> np.ndarray:
        rows = np.stack([np.interp(f0, a0, values[:, j]) for j in range(values.shape[1])], 1)
        return np.stack([np.interp(f1, a1, rows[i]) for i in range(rows.shape[0])], 0)

    fine = interp(clean)
    fine_bad = interp(bad.astype(np.float64)) > 0
    return np.where(fine_bad, np.inf, fine), f0, f1


def _trapezoid_weights(axis: np.ndarray) -> np.ndarray:
    """The length each point of ``axis`` stands for (half cells at both ends)."""
    d = np.diff(axis)
    w = np.zeros_like(axis)
    w[:-1] += d / 2
    w[1:] += d / 2
    return w


def _connected(mask: np.ndarray, start: tuple[int, int]) -> np.ndarray:
    """The 4-connected component of ``mask`` that contains ``start`` (empty if start is out)."""
    out = np.zeros_like(mask)
    if not mask[start]:
        return out
    todo = deque([start])
    out[start] = True
    n0, n1 = mask.shape
    while todo:
        i, j = todo.popleft()
        for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            a, b = i + di, j + dj
            if 0 <= a < n0 and 0 <= b < n1 and mask[a, b] and not out[a, b]:
                out[a, b] = True
                todo.append((a, b))
    return out


def area_below_level(loss: Any, axes: Sequence[Any], level: float, *,
                     center: tuple[float, float] = (0.0, 0.0), connected: bool = True,
                     refine: int = DEFAULT_REFINE) -> float:
    """Area of the plane where the loss is ≤ ``level``, in units of the axes' coordinates.

    ``loss`` (n0, n1) over ``axes`` (a0 (n0,), a1 (n1,)). With ``connected`` (default) only
    the region connected to the grid point nearest ``center`` counts: the basin of θ*, not a
    second valley elsewhere on the plane. Non-finite or not computed (NaN) points count as
    above every level. The grid is refined ``refine`` times per cell by bilinear
    interpolation first; the area is a trapezoid-rule sum over the refined points.
    """
    grid, a0, a1 = _check_plane(loss, axes)
    if not np.isfinite(level):
        raise UsageError(f"the level must be a finite loss value, got {level}")
    if int(refine) < 1:
        raise UsageError(f"refine must be ≥ 1, got {refine}")
    fine, f0, f1 = _refined(grid, a0, a1, int(refine))
    mask = fine <= level
    if connected:
        start = (int(np.argmin(np.abs(f0 - center[0]))), int(np.argmin(np.abs(f1 - center[1]))))
        mask = _connected(mask, start)
    weights = np.outer(_trapezoid_weights(f0), _trapezoid_weights(f1))
    return float((weights * mask).sum())


def border_mean(loss: Any) -> float:
    """Mean of the finite losses on the outermost ring of a 2-D grid (NaN if none)."""
    grid = np.asarray(loss, dtype=np.float64)
    ring = np.concatenate([grid[0, :], grid[-1, :], grid[1:-1, 0], grid[1:-1, -1]])
    ring = ring[np.isfinite(ring)]
    return float(ring.mean()) if ring.size else float("nan")


@dataclass(frozen=True)
class Basin:
    """The minimum one plane shows: its loss, the levels, and its width and depth.

    ``area`` is the area at or below ``level`` = ``center_loss + delta`` connected to θ*;
    ``area_common`` the same at ``common_level`` (one absolute loss for every run);
    ``fraction`` is ``area`` over the whole plane's area; ``depth`` = mean border loss −
    ``center_loss``. Areas are in squared plane coordinates (filter-normalized units).
    """

    center_loss: float
    min_loss: float
    delta: float
    level: float
    area: float
    fraction: float
    common_level: float
    area_common: float
    border_loss: float
    depth: float
    plane_area: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def basin_summary(loss: Any, axes: Sequence[Any], *, delta: float, common_level: float,
                  refine: int = DEFAULT_REFINE) -> Basin:
    """Width and depth of the minimum at the centre of one plane (see :class:`Basin`).

    The centre is the grid point nearest (0, 0), θ* itself for a plane from
    :func:`shenjing.analysis.landscape.plane`.
    """
    grid, a0, a1 = _check_plane(loss, axes)
    if not (np.isfinite(delta) and delta > 0):
        raise UsageError(f"delta must be a finite loss rise > 0, got {delta}")
    i, j = int(np.argmin(np.abs(a0))), int(np.argmin(np.abs(a1)))
    center = float(grid[i, j])
    if not np.isfinite(center):
        raise UsageError("the plane's loss at θ* (0, 0) is not computed or not finite; "
                         "finish the plane first")
    finite = grid[np.isfinite(grid)]
    level = center + float(delta)
    border = border_mean(grid)
    total = float((a0[-1] - a0[0]) * (a1[-1] - a1[0]))
    area = area_below_level(grid, (a0, a1), level, refine=refine)
    area_common = area_below_level(grid, (a0, a1), common_level, refine=refine) \
        if np.isfinite(common_level) else float("nan")
    return Basin(center_loss=center, min_loss=float(finite.min()), delta=float(delta),
                 level=level, area=area, fraction=area / total if total > 0 else float("nan"),
                 common_level=float(common_level), area_common=area_common,
                 border_loss=border, depth=border - center, plane_area=total)


def common_level(center_losses: Sequence[float], delta: float) -> float:
    """One absolute loss level for every run: the highest loss at θ* among them + ``delta``
    (so that every run's θ* lies inside its region and the level is the same number)."""
    values = [float(v) for v in center_losses if np.isfinite(v)]
    if not values:
        return float("nan")
    return max(values) + float(delta)


def common_color_range(grids: Sequence[Any]) -> tuple[float, float]:
    """(min, max) of the finite positive losses of all grids: one colour scale for all."""
    values = np.concatenate([np.asarray(g, dtype=np.float64).ravel() for g in grids])
    values = values[np.isfinite(values) & (values > 0)]
    if not values.size:
        return (float("nan"), float("nan"))
    return (float(values.min()), float(values.max()))


def line_barrier(alpha: Any, loss: Any) -> dict[str, float]:
    """The loss along θ₀→θ* at both ends and the highest bump between them.

    ``barrier`` = max loss over α ∈ [0, 1] − max(loss(θ₀), loss(θ*)) (0 when the loss
    falls monotonically); NaN points are ignored.
    """
    a = np.asarray(alpha, dtype=np.float64)
    v = np.asarray(loss, dtype=np.float64)
    i0, i1 = int(np.argmin(np.abs(a))), int(np.argmin(np.abs(a - 1)))
    inside = (a >= 0) & (a <= 1) & np.isfinite(v)
    top = float(v[inside].max()) if inside.any() else float("nan")
    start, end = float(v[i0]), float(v[i1])
    return {"loss_start": start, "loss_end": end,
            "barrier": max(0.0, top - max(start, end)) if np.isfinite(top) else float("nan")}


__all__ = ["DEFAULT_REFINE", "Basin", "area_below_level", "basin_summary", "border_mean",
           "common_color_range", "common_level", "line_barrier"]
