"""Fill a landscape grid on a Ray cluster: one actor per worker slot, tiles of points as tasks.

Design (docs/scale.md has the picture and the throughput to expect):

- The driver puts the model, the centre, the directions and the samples into Ray's object
  store **once** (``ray.put``); every :class:`GridWorker` actor fetches them from there at
  its first call (and again, by itself, when Ray restarted it after its process died), builds the
  same :class:`~shenjing.analysis.landscape.engine.Evaluator` as the local engine and keeps
  it for every tile.
- How points are evaluated is the local engine's measured choice, made **on a worker**
  (:meth:`GridWorker.choose`), so that GPU workers behind a CPU-only driver time their own
  device; every worker then runs that one config. A CPU worker runs with as many torch
  threads as CPUs it holds (one by default), so workers never oversubscribe the cores.
- The points still to do, in grid order, are cut into tiles of whole engine chunks (the
  chunks are the ones the local engine evaluates, so a tile's numbers are the local ones
  bit for bit on the same kind of device). Each worker has up to two tiles in flight; the
  driver collects them with ``ray.wait`` as they finish and writes each into the landscape
  file with its done-mask, atomically (a temporary file renamed into place).
- Resume is the done-mask: a killed driver, rerun, computes only the points not in the
  file. A killed worker process is restarted by Ray (``max_restarts``) and its unfinished
  tiles are retried (``max_task_retries``); a retried tile gives the same numbers.
- The landscape records the backend, the cluster's resources, each worker's throughput and
  every tile's timings in ``meta['backend']``.

A tile's size: big enough that the per-tile cost (Ray's call, moving the coefficients and
results, the driver's bookkeeping) stays under :data:`MAX_OVERHEAD` of its compute, small
enough that every worker gets several tiles (load balance, and little lost to a kill).
"""

from __future__ import annotations

import copy
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shenjing.analysis.landscape.config import EngineConfig
from shenjing.analysis.landscape.grid import Landscape, grid_coords
from shenjing.backend import Backend, ClusterInfo, worker_count

TILE_TARGET_S = 1.0
"""Compute seconds a tile is sized for when ``--tile`` is not given."""

MAX_OVERHEAD = 0.05
"""The per-tile overhead a tile's size keeps below, as a share of its compute."""

TILES_PER_WORKER = 4
"""At least this many tiles per worker when the grid allows (balance, and kill losses)."""

IN_FLIGHT = 2
"""Tiles queued on each worker at once: the next one starts while the driver saves."""

MAX_RETRIES = 3
"""Restarts of a worker whose process died, and retries of its unfinished tiles."""


class GridWorker:
    """A Ray actor's state: the evaluation inputs, taken from the object store once, and one
    :class:`~shenjing.analysis.landscape.engine.Evaluator` built on first use.

    Plain class: :func:`fill_landscape_ray` wraps it with ``ray.remote``, so this module
    imports without Ray.
    """

    def __init__(self, threads: int | None) -> None:
        if threads:
            torch.set_num_threads(int(threads))
        self.threads = threads
        self._inputs: dict[str, Any] | None = None
        self._evaluator: Any = None
        self._config: dict[str, Any] | None = None

    def _load(self, inputs: list[Any]) -> dict[str, Any]:
        """The evaluation inputs, fetched from the object store on first use (also after
        a restart). They come as a reference inside a list, so Ray does not resolve them
        per call: only this fetch moves them, once per worker process."""
        import ray

        if self._inputs is None:
            self._inputs = ray.get(inputs[0])
        return self._inputs

    def info(self) -> dict[str, Any]:
        """Where this worker runs: process id, node, host, torch threads, CUDA devices."""
        import socket

        import ray

        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(),
                "host": socket.gethostname(), "threads": torch.get_num_threads(),
                "gpus": [str(g) for g in ray.get_gpu_ids()],
                "device": "cuda" if torch.cuda.is_available() else "cpu"}

    def choose(self, inputs_ref: list[Any], engine: dict[str, Any], n_points: int
               ) -> dict[str, Any]:
        """The local engine's choice for this worker's device (or ``engine`` as stored,
        when its path is set: a resumed grid), and the seconds per point of one warm chunk."""
        from shenjing.analysis.landscape.engine import choose_engine

        inputs = self._load(inputs_ref)
        config = EngineConfig.from_json(engine)
        if config.path == "auto" or config.chunk is None:
            config = choose_engine(inputs["model"], inputs["center"], inputs["directions"],
                                   inputs["x"], inputs["y"], loss=inputs["loss"],
                                   classification=inputs["classification"], config=config,
                                   n_points=n_points, bn_data=inputs["bn_data"])
        evaluator = self._evaluator_for(inputs, config.to_json())
        k = int(inputs["directions"].shape[0])
        chunk = max(1, int(evaluator.config.chunk or 1))
        probe = np.zeros((chunk, k))
        evaluator.evaluate(probe)  # warm-up (caches, first-call allocations)
        t0 = time.perf_counter()
        evaluator.evaluate(probe)
        return {"engine": config.to_json(),
                "s_per_point": (time.perf_counter() - t0) / chunk}

    def evaluate(self, inputs_ref: list[Any], engine: dict[str, Any], tile: int,
                 coeffs: np.ndarray) -> dict[str, Any]:
        """Loss and accuracy at a tile's points, evaluated chunk by chunk as the local
        engine does, with the compute time and this process's id."""
        evaluator = self._evaluator_for(self._load(inputs_ref), engine)
        chunk = max(1, int(evaluator.config.chunk or 1))
        t0 = time.perf_counter()
        losses, accs = [], []
        for start in range(0, len(coeffs), chunk):
            lo, ac = evaluator.evaluate(coeffs[start:start + chunk])
            losses.append(lo)
            accs.append(ac)
        return {"tile": tile, "loss": np.concatenate(losses), "accuracy": np.concatenate(accs),
                "compute_s": time.perf_counter() - t0, "pid": os.getpid()}

    def _evaluator_for(self, inputs: dict[str, Any], engine: dict[str, Any]) -> Any:
        from shenjing.analysis.landscape.engine import Evaluator

        if self._evaluator is None or self._config != engine:
            self._evaluator = Evaluator(
                inputs["model"], inputs["center"], inputs["directions"], inputs["x"],
                inputs["y"], loss=inputs["loss"], classification=inputs["classification"],
                config=EngineConfig.from_json(engine), bn_data=inputs["bn_data"])
            self._config = engine
        return self._evaluator


@dataclass(frozen=True)
class Tiles:
    """The points still to do (flat grid indices, in grid order) cut into tiles."""

    todo: np.ndarray
    size: int

    @property
    def count(self) -> int:
        return math.ceil(len(self.todo) / self.size) if len(self.todo) else 0

    def indices(self, tile: int) -> np.ndarray:
        return self.todo[tile * self.size:(tile + 1) * self.size]


def tile_size(n_todo: int, workers: int, chunk: int, s_per_point: float, *,
              given: int | None = None, target_s: float = TILE_TARGET_S) -> int:
    """Points per tile: ``given`` (rounded up to whole chunks), else about ``target_s`` of
    compute, at most a share of the grid that leaves every worker
    :data:`TILES_PER_WORKER` tiles; always a whole number of engine chunks (so that a tile
    evaluates the chunks the local engine does) and at least one.

    >>> tile_size(961, 2, 1, 0.004)   # 250 points ≈ 1 s, but 961 / 8 leaves 121 each
    121
    >>> tile_size(961, 2, 8, 0.004, given=20)
    24
    """
    chunk = max(1, int(chunk))
    if given is not None:
        points = int(given)
    else:
        by_time = math.ceil(target_s / max(s_per_point, 1e-9))
        by_balance = math.ceil(n_todo / max(1, workers * TILES_PER_WORKER))
        points = min(by_time, by_balance)
    return max(chunk, math.ceil(max(1, points) / chunk) * chunk)


def _register_user_code(model: nn.Module) -> None:
    """Let Ray's pickler carry the model's class by value when its module cannot be
    imported by name on a worker (a model class from a user's ``file.py:Factory``)."""
    import importlib.util
    import sys

    import cloudpickle

    for cls in type(model).__mro__ + tuple(type(m) for m in model.modules()):
        name = cls.__module__
        module = sys.modules.get(name)
        if module is None or name in ("builtins", "__main__"):
            continue
        try:
            importable = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            importable = False
        if not importable:
            cloudpickle.register_pickle_by_value(module)


def fill_landscape_ray(landscape: Landscape, *, model: nn.Module, center: torch.Tensor,
                       directions: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                       loss: str, classification: bool, engine: EngineConfig,
                       resumed_engine: bool, backend: Backend, cluster: ClusterInfo,
                       bn_data: torch.Tensor | None = None,
                       path: str | os.PathLike[str] | None = None,
                       progress: Callable[[int, int], None] | None = None) -> Landscape:
    """Evaluate every point of ``landscape`` not yet done on the cluster (module docs).

    ``engine`` is the config to use as it is when ``resumed_engine`` (the stored points'
    settings), else the user's settings, completed by one worker's measurement. The file at
    ``path`` is rewritten after every tile, with the engine config, so that a rerun after a
    kill resumes with it. The workers are named Ray actors (``shenjing-grid-<id>-<i>``,
    found with ``ray.util.list_named_actors``). Returns the landscape with
    ``meta['engine']`` and ``meta['backend']`` set.
    """
    import ray

    coords = grid_coords(landscape.axes)
    loss_flat = landscape.loss.reshape(-1).copy()
    acc_flat = landscape.accuracy.reshape(-1).copy()
    done = landscape.done.reshape(-1).copy()
    todo = np.flatnonzero(~done)
    n_workers = worker_count(backend, cluster)
    cpu_threads = None if backend.num_gpus > 0 else max(1, int(backend.num_cpus))
    if cpu_threads and engine.threads is None and not resumed_engine:
        engine = replace(engine, threads=cpu_threads)  # one torch thread per CPU held
    _register_user_code(model)
    cpu = torch.device("cpu")
    on_cpu = all(p.device == cpu for p in model.parameters())
    inputs = {"model": model if on_cpu else copy.deepcopy(model).to(cpu),
              "center": center.detach().to(cpu), "directions": directions.detach().to(cpu),
              "x": x.detach().to(cpu), "y": y.detach().to(cpu), "loss": loss,
              "classification": classification,
              "bn_data": None if bn_data is None else bn_data.detach().to(cpu)}
    inputs_ref = ray.put(inputs)  # once: every worker (and every restart) reads it from there
    actor_type: Any = ray.remote(GridWorker)
    run_id = uuid.uuid4().hex[:8]
    names = [f"shenjing-grid-{run_id}-{i}" for i in range(n_workers)]
    actors: list[Any] = [actor_type.options(
        name=name, num_cpus=backend.num_cpus, num_gpus=backend.num_gpus,
        max_restarts=MAX_RETRIES, max_task_retries=MAX_RETRIES,
        scheduling_strategy="SPREAD").remote(cpu_threads) for name in names]
    try:
        infos: list[dict[str, Any]] = ray.get([a.info.remote() for a in actors])
        chosen: dict[str, Any] = ray.get(actors[0].choose.remote([inputs_ref], engine.to_json(),
                                                                 len(todo)))
        engine_json = chosen["engine"]
        chunk = max(1, int(engine_json.get("chunk") or 1))
        tiles = Tiles(todo, tile_size(len(todo), n_workers, chunk, chosen["s_per_point"],
                                      given=backend.tile))
        # every save carries the engine that computes the points: a rerun resumes with it
        landscape = replace(landscape, meta=dict(landscape.meta, engine=engine_json))
        records = _run_tiles(actors, [inputs_ref], tiles, engine_json,
                             coords - landscape.origin[None, :],
                             loss_flat, acc_flat, done, landscape=landscape, path=path,
                             progress=progress)
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
    meta = dict(landscape.meta)
    meta["backend"] = _backend_record(backend, cluster, names, infos, records, tiles,
                                      chosen["s_per_point"])
    return _snapshot(landscape, loss_flat, acc_flat, done, meta, path)


def _run_tiles(actors: list[Any], inputs: list[Any], tiles: Tiles, engine: dict[str, Any],
               coeffs: np.ndarray,
               loss_flat: np.ndarray, acc_flat: np.ndarray, done: np.ndarray, *,
               landscape: Landscape, path: str | os.PathLike[str] | None,
               progress: Callable[[int, int], None] | None) -> list[dict[str, Any]]:
    """Keep :data:`IN_FLIGHT` tiles on each worker; write each result as it comes."""
    import ray

    total = int(done.size)
    next_tile = 0
    pending: dict[Any, tuple[int, int, float]] = {}  # ref → (tile, worker, submitted at)
    records: list[dict[str, Any]] = []
    t_start = time.perf_counter()

    def submit(worker: int) -> None:
        nonlocal next_tile
        if next_tile >= tiles.count:
            return
        idx = tiles.indices(next_tile)
        ref = actors[worker].evaluate.remote(inputs, engine, next_tile, coeffs[idx])
        pending[ref] = (next_tile, worker, time.perf_counter())
        next_tile += 1

    if progress:
        progress(int(done.sum()), total)
    for _ in range(IN_FLIGHT):
        for worker in range(len(actors)):
            submit(worker)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        ref = ready[0]
        tile, worker, submitted = pending.pop(ref)
        result = ray.get(ref)
        idx = tiles.indices(tile)
        loss_flat[idx] = result["loss"]
        acc_flat[idx] = result["accuracy"]
        done[idx] = True
        submit(worker)  # before saving: the worker has its next tile while the driver writes
        t_save = time.perf_counter()
        if path is not None:
            _snapshot(landscape, loss_flat, acc_flat, done, dict(landscape.meta), path)
        now = time.perf_counter()
        records.append({"tile": tile, "worker": worker, "pid": result["pid"],
                        "points": len(idx), "compute_s": round(result["compute_s"], 6),
                        "round_trip_s": round(t_save - submitted, 6),
                        "save_s": round(now - t_save, 6),
                        "finished_at_s": round(now - t_start, 6)})
        if progress:
            progress(int(done.sum()), total)
    return records


def _snapshot(landscape: Landscape, loss_flat: np.ndarray, acc_flat: np.ndarray,
              done: np.ndarray, meta: dict[str, Any],
              path: str | os.PathLike[str] | None) -> Landscape:
    """The landscape with these values (saved atomically to ``path`` when given)."""
    shape = landscape.shape
    finite = np.isfinite(loss_flat) | ~done
    meta = dict(meta, n_done=int(done.sum()), n_points=int(done.size),
                n_nonfinite=int((~finite).sum()))
    result = replace(landscape, loss=loss_flat.reshape(shape).copy(),
                     accuracy=acc_flat.reshape(shape).copy(), done=done.reshape(shape).copy(),
                     meta=meta)
    if path is not None:
        result.save(path)
        result = replace(result, path=Path(path))
    return result


def _backend_record(backend: Backend, cluster: ClusterInfo, names: list[str],
                    infos: list[dict[str, Any]], records: list[dict[str, Any]], tiles: Tiles,
                    s_per_point: float) -> dict[str, Any]:
    """``meta['backend']``: the cluster, each worker's throughput, every tile's timings."""
    wall = max((r["finished_at_s"] for r in records), default=0.0)
    workers = []
    for i, (name, info) in enumerate(zip(names, infos, strict=True)):
        mine = [r for r in records if r["worker"] == i]
        compute = sum(r["compute_s"] for r in mine)
        points = sum(r["points"] for r in mine)
        workers.append({"name": name, "node_id": info["node_id"], "host": info["host"],
                        "device": info["device"], "threads": info["threads"],
                        "gpus": info["gpus"],
                        "pids": sorted({info["pid"], *(r["pid"] for r in mine)}),
                        "tiles": len(mine), "points": points,
                        "compute_s": round(compute, 4),
                        "points_per_s": round(points / compute, 2) if compute else None})
    compute_total = sum(r["compute_s"] for r in records)
    n_tiles = len(records)
    # the time workers were not computing, per tile: Ray's calls, transfers, waiting for
    # the driver (the tail of the grid, when some workers have no tile left, counts too)
    idle = max(0.0, wall * len(names) - compute_total)
    return {"name": "ray", "options": backend.to_json(), "cluster": cluster.to_json(),
            "workers": workers, "tile_points": tiles.size, "n_tiles": n_tiles,
            "s_per_point_measured": s_per_point, "wall_s": round(wall, 4),
            "compute_s": round(compute_total, 4),
            "overhead_per_tile_s": round(idle / n_tiles, 6) if n_tiles else None,
            "overhead_share": round(idle / compute_total, 4) if compute_total else None,
            "tiles": records}


__all__ = ["GridWorker", "Tiles", "fill_landscape_ray", "tile_size"]
