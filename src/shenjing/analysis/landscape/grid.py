"""Grids of points, the :class:`Landscape` result, and its resumable ``.npz`` storage.

A landscape file holds (keys of the ``.npz``):

``axis_0`` [, ``axis_1``]
    grid coordinates (float64). A plane's axes contain 0 (θ*) exactly; a line's contain
    0 (start) and 1 (end) exactly.
``origin``
    ``(k,)`` coordinate of the centre: the point evaluated is
    ``center + Σ (coord − origin)ₖ · directionₖ`` (0 for planes, 1 for an init→final line).
``loss``, ``accuracy``
    grids shaped ``(len(axis_0)[, len(axis_1)])``; NaN where not computed yet (and
    accuracy NaN for regression). A computed loss may itself be NaN/Inf: ``done`` says which.
``done``
    boolean grid: True where the point has been evaluated.
``extra_coords``, ``extra_loss``, ``extra_accuracy``
    points computed earlier that are not on the current grid (kept so a wider or finer
    grid reuses them).
``sample_indices``
    the evaluated samples' indices in their source files.
``trajectory``, ``trajectory_epochs``
    (trajectory planes only) each checkpoint's coordinates on the PCA plane.
``meta``
    JSON: kind, directions (seed, normalization, 1-D policy, sha256, file), loss, engine
    path and measurements, BN policy, provenance (model/data hashes, versions).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from shenjing import _io
from shenjing.errors import UsageError

# two coordinates closer than this (relative to the axis span) are the same point
_MATCH_TOL = 1e-9


def make_axis(lo: float, hi: float, steps: int, anchors: tuple[float, ...] = (0.0,)
              ) -> np.ndarray:
    """``steps`` evenly spaced values in [lo, hi] that contain every anchor inside exactly.

    A value within 1e-9 of the span from an anchor is snapped to it; an anchor not on the
    even grid is inserted, so a plane's axis always holds 0 (θ*) and a line's holds 0 and 1.

    >>> make_axis(-1, 1, 5).tolist()
    [-1.0, -0.5, 0.0, 0.5, 1.0]
    >>> make_axis(0.5, 2, 4, anchors=(0.0, 1.0)).tolist()
    [0.5, 1.0, 1.5, 2.0]
    >>> make_axis(-1, 2, 3, anchors=(0.0, 1.0)).tolist()
    [-1.0, 0.0, 0.5, 1.0, 2.0]
    """
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise UsageError(f"range {lo}:{hi} must be finite")
    if not lo < hi:
        raise UsageError(f"range {lo}:{hi} has min ≥ max; use MIN:MAX with MIN < MAX, "
                         "e.g. -1:1")
    steps = int(steps)
    if steps < 2:
        raise UsageError(f"steps must be at least 2 (got {steps}); e.g. --steps 51")
    axis = np.linspace(lo, hi, steps)
    span = hi - lo
    for a in anchors:
        if not lo <= a <= hi:
            continue
        near = np.abs(axis - a) <= _MATCH_TOL * span
        if near.any():
            axis[np.argmax(near)] = a
        else:
            axis = np.sort(np.append(axis, a))
    return axis


def grid_coords(axes: tuple[np.ndarray, ...]) -> np.ndarray:
    """All grid points as ``(n_points, k)`` coordinates in C order of the grid."""
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1)


@dataclass(frozen=True, repr=False)
class Landscape:
    """Loss (and accuracy) over a grid of points around a centre; see module docs for keys.

    ``loss``/``accuracy``/``done`` are shaped like the grid: ``(n,)`` for a line,
    ``(n0, n1)`` for a plane (``[i, j]`` ↔ ``(axes[0][i], axes[1][j])``).
    """

    kind: str
    axes: tuple[np.ndarray, ...]
    loss: np.ndarray
    accuracy: np.ndarray
    done: np.ndarray
    origin: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    trajectory: np.ndarray | None = None
    trajectory_epochs: np.ndarray | None = None
    sample_indices: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    path: Path | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(a) for a in self.axes)

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    @property
    def n_done(self) -> int:
        return int(self.done.sum())

    @property
    def n_nonfinite(self) -> int:
        """Computed points whose loss is NaN or ±Inf."""
        return int((self.done & ~np.isfinite(self.loss)).sum())

    @property
    def center_index(self) -> tuple[int, ...]:
        """Grid index of the origin (θ* for planes, θ_end for lines)."""
        return tuple(int(np.argmin(np.abs(a - o)))
                     for a, o in zip(self.axes, self.origin, strict=True))

    def minimum(self) -> tuple[tuple[float, ...], float]:
        """Coordinates and value of the smallest finite computed loss."""
        masked = np.where(self.done & np.isfinite(self.loss), self.loss, np.inf)
        idx = np.unravel_index(int(np.argmin(masked)), masked.shape)
        return tuple(float(a[i]) for a, i in zip(self.axes, idx, strict=True)), float(masked[idx])

    def __repr__(self) -> str:
        shape = "×".join(map(str, self.shape))
        return (f"Landscape(kind={self.kind}, grid={shape}, done={self.n_done}/"
                f"{self.done.size}, path={self.meta.get('engine', {}).get('path')})")

    # ---- storage --------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the landscape atomically as ``.npz`` (see module docs for keys)."""
        arrays: dict[str, Any] = {f"axis_{i}": a for i, a in enumerate(self.axes)}
        arrays.update(loss=self.loss, accuracy=self.accuracy, done=self.done,
                      origin=self.origin, meta=self.meta)
        if self.trajectory is not None:
            arrays["trajectory"] = self.trajectory
            arrays["trajectory_epochs"] = self.trajectory_epochs
        if self.sample_indices is not None:
            arrays["sample_indices"] = self.sample_indices
        k = len(self.axes)
        arrays["extra_coords"] = self.extra.get("coords", np.zeros((0, k)))
        arrays["extra_loss"] = self.extra.get("loss", np.zeros(0))
        arrays["extra_accuracy"] = self.extra.get("accuracy", np.zeros(0))
        return _io.save_npz(path, **arrays)


def load_landscape(path: str | os.PathLike[str]) -> Landscape:
    """Read a landscape ``.npz`` written by :meth:`Landscape.save`."""
    import json

    path = Path(path)
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        axes = tuple(z[f"axis_{i}"] for i in range(2) if f"axis_{i}" in keys)
        meta = json.loads(str(z["meta"]))
        return Landscape(
            kind=str(meta.get("kind", "plane")), axes=axes, loss=z["loss"],
            accuracy=z["accuracy"], done=z["done"].astype(bool), origin=z["origin"],
            meta=meta,
            trajectory=z["trajectory"] if "trajectory" in keys else None,
            trajectory_epochs=z["trajectory_epochs"] if "trajectory_epochs" in keys else None,
            sample_indices=z["sample_indices"] if "sample_indices" in keys else None,
            extra={"coords": z["extra_coords"], "loss": z["extra_loss"],
                   "accuracy": z["extra_accuracy"]} if "extra_coords" in keys else {},
            path=path)


def _known_points(old: Landscape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    coords = grid_coords(old.axes)
    done = old.done.reshape(-1)
    pts = [coords[done]]
    loss = [old.loss.reshape(-1)[done]]
    acc = [old.accuracy.reshape(-1)[done]]
    if old.extra and len(old.extra.get("coords", ())):
        pts.append(old.extra["coords"].reshape(-1, len(old.axes)))
        loss.append(old.extra["loss"])
        acc.append(old.extra["accuracy"])
    return np.concatenate(pts), np.concatenate(loss), np.concatenate(acc)


def merge_previous(new: Landscape, old: Landscape) -> Landscape:
    """Fill ``new``'s grid from every point ``old`` computed; keep old points off the grid.

    Points match when every coordinate agrees within 1e-9 of the axis span (a finer or
    wider grid built with :func:`make_axis` shares the old grid's values).
    """
    if len(old.axes) != len(new.axes) or not np.allclose(old.origin, new.origin):
        return new
    pts, loss, acc = _known_points(old)
    coords = grid_coords(new.axes)
    spans = np.array([max(float(np.ptp(a)), 1e-12) for a in new.axes])
    new_loss = new.loss.reshape(-1).copy()
    new_acc = new.accuracy.reshape(-1).copy()
    new_done = new.done.reshape(-1).copy()
    used: np.ndarray = np.zeros(len(pts), dtype=bool)
    if len(pts):
        # match per axis: index of an equal coordinate on each axis, or -1
        idx_per_axis = []
        for d, axis in enumerate(new.axes):
            pos = np.searchsorted(axis, pts[:, d]).clip(0, len(axis) - 1)
            lower = (pos - 1).clip(0, len(axis) - 1)
            best = np.where(np.abs(axis[pos] - pts[:, d]) <= np.abs(axis[lower] - pts[:, d]),
                            pos, lower)
            ok = np.abs(axis[best] - pts[:, d]) <= _MATCH_TOL * spans[d]
            idx_per_axis.append(np.where(ok, best, -1))
        idx = np.stack(idx_per_axis, axis=1)
        on_grid = (idx >= 0).all(axis=1)
        flat = np.ravel_multi_index(tuple(idx[on_grid].T), new.shape) if on_grid.any() \
            else np.zeros(0, dtype=int)
        new_loss[flat] = loss[on_grid]
        new_acc[flat] = acc[on_grid]
        new_done[flat] = True
        used = np.asarray(on_grid, dtype=bool)
    extra = {"coords": pts[~used], "loss": loss[~used], "accuracy": acc[~used]}
    del coords
    return replace(new, loss=new_loss.reshape(new.shape), accuracy=new_acc.reshape(new.shape),
                   done=new_done.reshape(new.shape), extra=extra)


def empty_landscape(kind: str, axes: tuple[np.ndarray, ...], origin: np.ndarray,
                    meta: Mapping[str, Any]) -> Landscape:
    """A landscape with nothing computed: NaN grids and an all-False done-mask."""
    shape = tuple(len(a) for a in axes)
    return Landscape(kind=kind, axes=tuple(np.asarray(a, dtype=np.float64) for a in axes),
                     loss=np.full(shape, np.nan), accuracy=np.full(shape, np.nan),
                     done=np.zeros(shape, dtype=bool), origin=np.asarray(origin, np.float64),
                     meta=dict(meta))


def fill_landscape(landscape: Landscape,
                   evaluate: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], *,
                   path: str | os.PathLike[str] | None = None, chunk: int = 16,
                   save_every: float = 2.0,
                   progress: Callable[[int, int], None] | None = None) -> Landscape:
    """Evaluate every point not yet done, in grid order, saving to ``path`` as it goes.

    ``evaluate(coeffs)`` takes ``(m, k)`` coefficients (coordinates minus origin) and
    returns ``(loss, accuracy)``. The file is rewritten atomically at most every
    ``save_every`` seconds and at the end, so a killed job loses at most that much work.
    ``progress(n_done, n_total)`` is called after each chunk.
    """
    coords = grid_coords(landscape.axes)
    loss = landscape.loss.reshape(-1).copy()
    acc = landscape.accuracy.reshape(-1).copy()
    done = landscape.done.reshape(-1).copy()
    todo = np.flatnonzero(~done)
    total = done.size
    t_start = time.perf_counter()
    last_save = t_start
    current = landscape

    def snapshot() -> Landscape:
        meta = dict(current.meta)
        finite = np.isfinite(loss) | ~done
        meta["n_done"] = int(done.sum())
        meta["n_points"] = int(total)
        meta["n_nonfinite"] = int((~finite).sum())
        return replace(current, loss=loss.reshape(current.shape),
                       accuracy=acc.reshape(current.shape), done=done.reshape(current.shape),
                       meta=meta)

    if progress:
        progress(int(done.sum()), total)
    for start in range(0, len(todo), max(1, chunk)):
        idx = todo[start:start + chunk]
        lo, ac = evaluate(coords[idx] - landscape.origin[None, :])
        loss[idx] = lo
        acc[idx] = ac
        done[idx] = True
        now = time.perf_counter()
        if path is not None and now - last_save >= save_every:
            snapshot().save(path)
            last_save = now
        if progress:
            progress(int(done.sum()), total)
    result = snapshot()
    if path is not None:
        result.save(path)
        result = replace(result, path=Path(path))
    return result


def export_vtk(landscape: Landscape, path: str | os.PathLike[str]) -> Path:
    """Write a 2-D landscape as a legacy-VTK rectilinear grid for ParaView.

    Point data ``loss`` and ``accuracy`` (NaN where not computed or not finite); in
    ParaView, "Warp By Scalar" on ``loss`` turns the grid into the 3-D surface.
    """
    if len(landscape.axes) != 2:
        raise UsageError(f"VTK export needs a 2-D landscape, got {len(landscape.axes)} axes")
    ax0, ax1 = landscape.axes
    ok = landscape.done & np.isfinite(landscape.loss)

    def values(arr: np.ndarray) -> str:
        # VTK varies x fastest: transpose the [i, j] grid
        grid = np.where(ok, arr, np.nan).T.reshape(-1)
        return "\n".join(" ".join(f"{v:.9g}" for v in grid[i:i + 9])
                         for i in range(0, len(grid), 9))

    lines = ["# vtk DataFile Version 3.0",
             f"shenjing {landscape.kind} landscape",
             "ASCII", "DATASET RECTILINEAR_GRID",
             f"DIMENSIONS {len(ax0)} {len(ax1)} 1",
             f"X_COORDINATES {len(ax0)} double", " ".join(f"{v:.12g}" for v in ax0),
             f"Y_COORDINATES {len(ax1)} double", " ".join(f"{v:.12g}" for v in ax1),
             "Z_COORDINATES 1 double", "0",
             f"POINT_DATA {len(ax0) * len(ax1)}",
             "SCALARS loss double 1", "LOOKUP_TABLE default", values(landscape.loss),
             "SCALARS accuracy double 1", "LOOKUP_TABLE default", values(landscape.accuracy)]
    return _io.write_text(path, "\n".join(lines) + "\n")
