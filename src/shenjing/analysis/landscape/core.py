"""Compute a landscape: choose the engine, reuse stored points, fill the grid, record it."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shenjing.analysis.landscape.config import (
    ENGINE_KEYWORDS,
    EngineConfig,
    engine_config,
    validate_config,
)
from shenjing.analysis.landscape.directions import (
    Directions,
    ParamLayout,
    TrajectoryPCA,
    flat_params,
    line_direction,
    random_directions,
)
from shenjing.analysis.landscape.engine import Evaluator, choose_engine, nothing_to_compute
from shenjing.analysis.landscape.grid import (
    Landscape,
    empty_landscape,
    fill_landscape,
    grid_coords,
    load_landscape,
    make_axis,
    merge_previous,
)
from shenjing.analysis.landscape.memory import check_engine, check_grid
from shenjing.analysis.landscape.storage import (
    Weights,
    directions_path,
    save_directions,
    stored_directions_sha256,
    tensor_sha256,
)
from shenjing.backend import Backend, make_backend, ray_session
from shenjing.errors import UsageError
from shenjing.training.losses import loss_task


def model_sha256(model: nn.Module) -> str:
    """sha256 of a model's state dict (parameters and buffers, sorted by name)."""
    state = model.state_dict()
    return tensor_sha256(*[state[k] for k in sorted(state)])


def evaluate_landscape(model: nn.Module, directions: Directions, axes: tuple[np.ndarray, ...],
                       x: torch.Tensor, y: torch.Tensor, *, loss: str, kind: str = "plane",
                       center: torch.Tensor | None = None, origin: tuple[float, ...] | None = None,
                       path: str | os.PathLike[str] | None = None,
                       engine: EngineConfig | None = None,
                       bn_data: torch.Tensor | None = None,
                       sample_indices: np.ndarray | None = None,
                       provenance: Mapping[str, Any] | None = None,
                       extra_arrays: Mapping[str, np.ndarray] | None = None,
                       line_start: Weights | None = None,
                       progress: Callable[[int, int], None] | None = None,
                       save_every: float = 2.0,
                       backend: Backend | str | None = None) -> Landscape:
    """Loss/accuracy of ``model`` at ``center + Σ (coordₖ − originₖ)·dₖ`` over a grid.

    ``center`` defaults to the model's own parameters; ``axes`` are 1 or 2 coordinate
    arrays (build them with :func:`make_axis`). ``engine`` says how points are evaluated
    (path, device, dtype, BN policy, precision…; by default all measured, see
    :class:`EngineConfig`). With ``path``, points are written there as
    they are computed and points already there (same weights, directions, samples, loss,
    BN policy and dtype) are reused, also from a coarser or narrower earlier grid.

    Resume is exact: the engine settings that computed the stored points (path, batch size,
    thread count, memory layout, ``torch.compile``, chunk, device; ``meta['engine']``) are
    reused for the rest, so a grid killed and resumed equals an uninterrupted one with those
    settings bit for bit. Settings left at ``auto``/None take the stored ones; one given
    explicitly that differs is refused (:class:`UsageError`, nothing written), since mixing
    two ways of computing would agree only up to rounding.
    ``engine.precision='bf16'``/``'tf32'`` trade exactness for speed; the error that causes is
    measured against exact evaluation at a few computed points and recorded in
    ``meta['precision']``. The directions go beside ``path`` (:mod:`.storage`): random ones
    as their seed, a line's (give ``line_start``, its θ₀) as its end points, others as
    float32 vectors.

    ``backend='ray'`` (or a :class:`~shenjing.backend.Backend`) evaluates the points on a
    Ray cluster (:mod:`.ray_grid`): the same engine on every worker, the file written tile
    by tile with its done-mask, the same numbers as here on the same kind of device; the
    cluster, the workers' throughput and the tiles' timings go to ``meta['backend']``.
    """
    engine = EngineConfig() if engine is None else engine
    backend = make_backend(backend)
    bn, dtype, precision = engine.bn, engine.dtype, engine.precision
    classification = loss_task(loss) == "classification"
    dev_model = next(model.parameters()).device
    center_t = flat_params(model) if center is None else center.to(dev_model)
    dirs = directions.vectors.to(dev_model)
    k = dirs.shape[0]
    if len(axes) != k:
        raise UsageError(f"{len(axes)} axes given for {k} directions; pass one axis per "
                         "direction")
    origin_arr = np.zeros(k) if origin is None else np.asarray(origin, dtype=np.float64)
    # before the grid's arrays or the engine's weight copies exist (see .memory)
    check_grid(tuple(len(a) for a in axes), option="steps",
               kind="line" if k == 1 else "trajectory plane" if kind == "trajectory" else "plane")
    check_engine(center_t.numel(), k, itemsize=8 if dtype == "float64" else 4,
                 data_bytes=x.numel() * (8 if dtype == "float64" else 4),
                 device=str(dev_model))
    key = hashlib.sha256(json.dumps({
        "center": tensor_sha256(center_t.float()),
        "buffers": tensor_sha256(*[b for _, b in sorted(model.named_buffers())]),
        "directions": directions.sha256(), "data": tensor_sha256(x, y), "loss": loss,
        "bn": bn, "dtype": dtype, "origin": origin_arr.tolist(), "kind": kind,
        # reduced-precision points never mix with exact ones (absent: exact, as before)
        **({"precision": precision} if precision != "exact" else {}),
    }, sort_keys=True).encode()).hexdigest()
    meta: dict[str, Any] = {
        "kind": kind, "key": key, "loss_name": loss,
        "task": "classification" if classification else "regression",
        "directions": dict(directions.info, sha256=directions.sha256()),
        "bn_policy": ("eval-mode running statistics (stored at θ*)" if bn == "eval" else
                      "BatchNorm statistics re-estimated on training samples at each point"),
        "dropout": "off (eval mode)", "n_samples": int(x.shape[0]),
        "data_sha256": tensor_sha256(x, y),
        "center_sha256": tensor_sha256(center_t.float()),
        "provenance": dict(provenance or {}),
    }
    fresh = empty_landscape(kind, axes, origin_arr, meta)
    if sample_indices is not None:
        fresh = replace(fresh, sample_indices=np.asarray(sample_indices))
    if extra_arrays:
        fresh = replace(fresh, **dict(extra_arrays))  # type: ignore[arg-type]
    previous_engine: dict[str, Any] | None = None
    if path is not None:
        path = Path(path)
        if path.exists():
            try:
                old = load_landscape(path)
            except Exception:  # an unreadable file is recomputed, not trusted
                old = None
            if old is not None and old.meta.get("key") == key:
                fresh = merge_previous(fresh, old)
                previous_engine = old.meta.get("engine")
            elif old is not None:
                fresh.meta["replaced_stale_file"] = ("an earlier file with different weights, "
                                                     "directions, samples or settings was "
                                                     "replaced")
    n_todo = int((~fresh.done).sum())
    fresh.meta["n_computed_now"] = n_todo
    if previous_engine and n_todo:
        fresh.meta["resumed_with"] = int(fresh.n_done)
    if previous_engine and n_todo:
        # the settings that computed the stored points: a resumed surface is bit-identical
        _refuse_other_settings(previous_engine, path, fresh, engine)
    if backend.is_ray and n_todo:
        return _on_ray(fresh, backend, model, center_t, dirs, x, y, loss=loss,
                       classification=classification, engine=engine,
                       previous_engine=previous_engine, bn_data=bn_data, path=path,
                       line_start=line_start, directions=directions, progress=progress)
    if previous_engine:
        cfg = EngineConfig.from_json(previous_engine)
    elif n_todo == 0:
        cfg = nothing_to_compute(str(dev_model), bn)
    else:
        cfg = choose_engine(model, center_t, dirs, x, y, loss=loss,
                            classification=classification, config=engine, n_points=n_todo,
                            bn_data=bn_data)
    fresh.meta["engine"] = cfg.to_json()
    # the evaluator checks the settings: bad input raises here and leaves no file
    evaluator = Evaluator(model, center_t, dirs, x, y, loss=loss,
                          classification=classification, config=cfg,
                          bn_data=bn_data) if n_todo else None
    _save_directions(fresh, path, directions, center_t, line_start)
    if evaluator is None:
        return replace(fresh, path=path)
    t0 = time.perf_counter()
    result = fill_landscape(fresh, evaluator.evaluate, path=path,
                            chunk=max(1, evaluator.config.chunk or 1),
                            save_every=save_every, progress=progress)
    return _finish(result, time.perf_counter() - t0, n_todo, model, center_t, dirs, x, y,
                   loss=loss, classification=classification, config=cfg, bn_data=bn_data,
                   path=path)


def _save_directions(fresh: Landscape, path: Path | None, directions: Directions,
                     center: torch.Tensor, line_start: Weights | None) -> None:
    """The directions beside the landscape file (once: kept when the same are there)."""
    if path is None:
        return
    dpath = directions_path(path)
    if stored_directions_sha256(dpath) != directions.sha256():
        save_directions(dpath, directions, center, start=line_start)
    fresh.meta["directions"]["file"] = dpath.name


def _finish(result: Landscape, seconds: float, n_todo: int, model: nn.Module,
            center: torch.Tensor, dirs: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *,
            loss: str, classification: bool, config: EngineConfig,
            bn_data: torch.Tensor | None, path: Path | None) -> Landscape:
    """The filled landscape with its timing (and a reduced precision's measured error),
    saved once more with them."""
    meta = dict(result.meta)
    meta["seconds"] = round(seconds, 3)
    meta["ms_per_point"] = round(1e3 * seconds / max(n_todo, 1), 3)
    if config.precision != "exact":
        meta["precision"] = precision_error(result, model, center, dirs, x, y, loss=loss,
                                            classification=classification, config=config,
                                            bn_data=bn_data)
    result = replace(result, meta=meta)
    if path is not None:
        result.save(path)
    return result


def _on_ray(fresh: Landscape, backend: Backend, model: nn.Module, center: torch.Tensor,
            dirs: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *, loss: str,
            classification: bool, engine: EngineConfig,
            previous_engine: dict[str, Any] | None, bn_data: torch.Tensor | None,
            path: Path | None, line_start: Weights | None, directions: Directions,
            progress: Callable[[int, int], None] | None) -> Landscape:
    """:func:`evaluate_landscape`'s points computed on a Ray cluster (:mod:`.ray_grid`)."""
    from shenjing.analysis.landscape.ray_grid import fill_landscape_ray

    # the settings are checked here, on the driver, before anything is written (the device
    # is the workers' own: a GPU worker's "cuda" need not exist on this machine)
    validate_config(engine if backend.num_gpus == 0 else replace(engine, device="auto"))
    if engine.bn == "recompute" and bn_data is None:
        raise UsageError("bn='recompute' needs bn_data: training inputs to re-estimate "
                         "BatchNorm statistics from")
    with ray_session(backend) as cluster:
        _save_directions(fresh, path, directions, center, line_start)
        t0 = time.perf_counter()
        stored = EngineConfig.from_json(previous_engine) if previous_engine else None
        result = fill_landscape_ray(fresh, model=model, center=center, directions=dirs, x=x,
                                    y=y, loss=loss, classification=classification,
                                    engine=stored or engine, resumed_engine=stored is not None,
                                    backend=backend, cluster=cluster, bn_data=bn_data,
                                    path=path, progress=progress)
        seconds = time.perf_counter() - t0
    config = EngineConfig.from_json(result.meta["engine"])
    return _finish(result, seconds, int(result.meta["n_computed_now"]), model, center, dirs,
                   x, y, loss=loss, classification=classification, config=config,
                   bn_data=bn_data, path=path)


def _refuse_other_settings(stored: Mapping[str, Any], path: Path | None, grid: Landscape,
                           engine: EngineConfig) -> None:
    """Refuse explicit engine settings that differ from those of the stored points."""
    batch_size, channels_last = engine.batch_size, engine.channels_last
    compile, threads, device = engine.compile, engine.threads, engine.device
    given = []
    if engine.path != "auto" and engine.path != stored.get("path"):
        given.append(f"--engine {engine.path}")
    if batch_size is not None and int(batch_size) != stored.get("batch_size"):
        given.append(f"--batch-size {batch_size}")
    if channels_last is not None and bool(channels_last) != bool(stored.get("channels_last")):
        given.append(f"channels_last={bool(channels_last)}")
    if compile is not None and bool(compile) != bool(stored.get("compile")):
        given.append("--compile" if compile else "--no-compile")
    if threads is not None and int(threads) != stored.get("threads"):
        given.append(f"threads {threads}")
    if str(device) != "auto" and _device_key(device) != _device_key(stored.get("device", "cpu")):
        given.append(f"--device {device}")
    if not given:
        return
    name = path.name if path is not None else "the stored landscape"
    how = (f"engine {stored.get('path')} (batch {stored.get('batch_size')}, "
           f"{stored.get('threads') or 'all'} thread(s), "
           f"{'channels_last' if stored.get('channels_last') else 'NCHW'}, "
           f"{'torch.compile' if stored.get('compile') else 'eager'})")
    raise UsageError(
        f"{name} holds {grid.n_done} of {grid.done.size} points computed with {how}; "
        f"resuming with {', '.join(given)} would mix two ways of computing them (equal only "
        f"up to float rounding): leave {' and '.join(g.split()[0] for g in given)} out to "
        f"resume exactly with the stored settings, or delete {name} to start over")


def _device_key(device: Any) -> tuple[str, int]:
    dev = torch.device(str(device))
    return dev.type, dev.index or 0


def precision_error(landscape: Landscape, model: nn.Module, center: torch.Tensor,
                    directions: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *, loss: str,
                    classification: bool, config: EngineConfig,
                    bn_data: torch.Tensor | None = None, n_check: int = 5) -> dict[str, Any]:
    """How far a reduced-precision surface is from exact evaluation.

    Re-evaluates the centre and up to ``n_check − 1`` computed points spread over the grid
    with the exact loop path (same device, dtype, samples) and returns the mode, the
    checked coordinates and the largest relative loss / absolute accuracy differences.
    """
    coords = grid_coords(landscape.axes)
    done = np.flatnonzero(landscape.done.reshape(-1))
    centre = int(np.argmin(np.abs(coords - landscape.origin).sum(axis=1)))
    picked = np.unique(np.concatenate([
        [centre] if landscape.done.reshape(-1)[centre] else [],
        done[np.linspace(0, len(done) - 1, max(1, n_check - 1)).round().astype(int)],
    ]).astype(int))
    exact = replace(config, precision="exact", path="loop", compile=False, measurements={},
                    reason="precision check")
    evaluator = Evaluator(model, center, directions, x, y, loss=loss,
                          classification=classification, config=exact, bn_data=bn_data)
    ref_loss, ref_acc = evaluator.evaluate(coords[picked] - landscape.origin)
    got_loss = landscape.loss.reshape(-1)[picked]
    got_acc = landscape.accuracy.reshape(-1)[picked]
    rel = np.abs(got_loss - ref_loss) / np.maximum(np.abs(ref_loss), 1e-12)
    acc_err = np.abs(got_acc - ref_acc) if classification else np.array([np.nan])
    return {"mode": config.precision, "checked_coords": coords[picked].tolist(),
            "max_rel_loss_error": float(np.nanmax(rel)),
            "max_abs_accuracy_error": float(np.nanmax(acc_err)) if classification else None}


def _engine_of(engine: EngineConfig | str, kwargs: dict[str, Any]) -> EngineConfig:
    """The config of a public function's ``engine`` and its engine keywords (taken out of
    ``kwargs``; the rest go to :func:`evaluate_landscape`)."""
    settings = {name: kwargs.pop(name) for name in ENGINE_KEYWORDS if name in kwargs}
    return engine_config(engine, **settings)


def plane(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss: str,
          steps: int = 21, range_: tuple[float, float] = (-1.0, 1.0), seed: int = 0,
          norm: str = "filter", ignore_1d: bool = True,
          directions: Directions | None = None, engine: EngineConfig | str = "auto",
          **kwargs: Any) -> Landscape:
    """2-D surface around the model's weights θ* along two random directions.

    Filter-normalized Gaussian directions by default (Li et al. 2018); the grid is
    ``steps × steps`` over ``range_`` on both axes and always contains θ* (0, 0).
    ``engine`` is an :class:`EngineConfig` or a path name; engine keywords (``device``,
    ``dtype``, ``batch_size``, ``bn``, ``precision``…) refine it. Other keyword arguments go
    to :func:`evaluate_landscape` (``path`` to store and resume, ``progress``,
    ``provenance``…).
    """
    config = _engine_of(engine, kwargs)
    lo, hi = range_
    axis = make_axis(lo, hi, steps, anchors=(0.0,))
    dirs = directions if directions is not None else random_directions(
        model, 2, seed=seed, norm=norm, ignore_1d=ignore_1d)  # type: ignore[arg-type]
    return evaluate_landscape(model, dirs, (axis, axis.copy()), x, y, loss=loss,
                              kind="plane", engine=config, **kwargs)


def line(start: nn.Module | Mapping[str, torch.Tensor], end: nn.Module, x: torch.Tensor,
         y: torch.Tensor, *, loss: str, steps: int = 51,
         range_: tuple[float, float] = (-0.5, 1.5), engine: EngineConfig | str = "auto",
         **kwargs: Any) -> Landscape:
    """1-D loss along θ(α) = (1−α)·start + α·end; α = 0 and 1 are always on the axis.

    ``end`` is the model evaluated (its buffers, e.g. BatchNorm statistics, are used at
    every α); ``start`` a model or state dict of the same architecture. ``engine`` and the
    other keywords as for :func:`plane`.
    """
    config = _engine_of(engine, kwargs)
    lo, hi = range_
    axis = make_axis(lo, hi, steps, anchors=(0.0, 1.0))
    if not isinstance(start, nn.Module):
        layout = ParamLayout.of(end)
        start = {n: t for n, t in start.items()}
        center, dirs = line_direction(start, dict(end.named_parameters()), layout=layout)
    else:
        center, dirs = line_direction(start, end)
    return evaluate_landscape(end, dirs, (axis,), x, y, loss=loss, kind="line",
                              center=center, origin=(1.0,), line_start=start, engine=config,
                              **kwargs)


def trajectory_plane(model: nn.Module, pca: TrajectoryPCA, x: torch.Tensor, y: torch.Tensor,
                     *, loss: str, steps: int = 21, margin: float = 0.25,
                     engine: EngineConfig | str = "auto", **kwargs: Any) -> Landscape:
    """Loss on the plane of a training trajectory's two main PCA directions (Li et al. §7).

    ``model`` is θ* (the trajectory's last checkpoint), ``pca`` from :func:`trajectory_pca`.
    The grid covers every projected checkpoint with ``margin`` to spare on each side and
    contains θ* (0, 0); the projected trajectory is stored with the landscape
    (``trajectory``, ``trajectory_epochs``). ``engine`` and the other keywords as for
    :func:`plane`.
    """
    config = _engine_of(engine, kwargs)
    axes = []
    for d in range(2):
        r = float(np.abs(pca.coords[:, d]).max()) * (1 + margin) or 1.0
        axes.append(make_axis(-r, r, steps, anchors=(0.0,)))
    return evaluate_landscape(model, pca.directions, tuple(axes), x, y, loss=loss,
                              kind="trajectory", engine=config,
                              extra_arrays={"trajectory": pca.coords,
                                            "trajectory_epochs": np.asarray(pca.epochs)},
                              **kwargs)
