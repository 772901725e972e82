"""The per-(layer, epoch) maps of ``embed`` and the per-(epoch, method) maps of
``attribute`` as jobs, run here or as Ray tasks.

One job function per piece of work, called by the local loop *and* by a Ray worker, so the
two backends run the same code on the same inputs:

- :func:`map_job`: one 2-D map of one layer at one epoch (``embed_after``) with its numbers
  (``map_quality``, ``separability``). With alignment the map of epoch e starts from the
  map of epoch e−1: on Ray that job is submitted with the previous job's result reference
  as its ``previous`` argument, so Ray runs a layer's epochs in order while different
  layers (and, without alignment, all jobs) run side by side.
- :func:`attribution_job`, :func:`randomization_job`, :func:`faithfulness_job`: one
  method's maps at one epoch, and the last epoch's checks of one method; each rebuilds the
  epoch's model from the model skeleton and the epoch's state dict (both from the object
  store).

:class:`RayJobs` submits jobs (the inputs ``ray.put`` once by the caller), keeps at most
as many in flight as the cluster holds workers, and yields the results in the order they
finish (``ray.wait``), so the driver writes each file as soon as its job is done: a killed
driver's rerun reuses every map already written. A job whose worker process died is
retried (``max_retries``); an error raised by the job itself is raised in the driver as it
was raised in the worker.

Ray is imported only when a :class:`RayJobs` is made: ``import shenjing`` never imports it.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from shenjing.backend import Backend

MAX_RETRIES = 3
"""Retries of a job whose worker process died (a job's own error is not retried)."""


@contextlib.contextmanager
def _limit_threads(threads: int | None) -> Iterator[None]:
    """torch and the BLAS / OpenMP pools at ``threads`` for the block, restored after (Ray
    sets ``OMP_NUM_THREADS`` for a worker, but a pool already started ignores it). The
    local loop and a Ray worker both run a job inside it, with the same ``threads``, so
    the same job gives the same bits on either side (t-SNE amplifies a last-bit difference
    of its PCA step into a different map). ``None``: the caller's settings, unchanged."""
    if not threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # scikit-learn brings it; without it OMP_NUM_THREADS holds
            yield
            return
        with threadpool_limits(int(threads)):
            yield
    finally:
        torch.set_num_threads(before)


def job_threads(n_jobs: int) -> int:
    """The threads of a local job for ``n_jobs`` (-1 or 0: every core), as a Ray task of
    that many CPUs runs."""
    return (os.cpu_count() or 1) if n_jobs in (-1, 0) else max(1, int(n_jobs))


# ---- embed ---------------------------------------------------------------------------------

def map_job(x: np.ndarray, previous: Any, *, method: str, align: bool,
            pca_dims: int | None, seed: int, perplexity: float, n_jobs: int,
            n_neighbors: int, k: int, max_features: int | None,
            labels: np.ndarray | None, indices: np.ndarray,
            train_x: np.ndarray | None = None, train_y: np.ndarray | None = None,
            threads: int | None = None) -> dict[str, Any]:
    """One map of features ``x`` and its numbers, exactly as the embed stage makes it.

    ``previous``: the map this one is aligned to — None, its coordinates, or the result
    dict of the previous epoch's job (what a Ray task receives for a result reference).
    Returns ``coords``, the embedding's ``params``, ``metrics`` (map quality, and with
    ``train_x`` the probe / kNN numbers too), ``separability`` (those numbers alone, or
    None), the ``seconds`` it took and the ``pid`` of the process that ran it.
    """
    from shenjing.analysis.embed import embed_after
    from shenjing.analysis.separability import map_quality, separability

    t0 = time.perf_counter()
    prev = previous["coords"] if isinstance(previous, Mapping) else previous
    with _limit_threads(threads):
        emb = embed_after(x, method, prev, align=align, pca_dims=pca_dims, random_state=seed,
                          perplexity=perplexity, n_jobs=n_jobs, labels=labels,
                          indices=indices)
        metrics = map_quality(x, emb.coords, labels, n_neighbors=n_neighbors, k=k,
                              max_features=max_features, random_state=seed)
        sep: dict[str, Any] | None = None
        if train_x is not None:
            sep = separability(train_x, train_y, x, labels, k=k, max_features=max_features,
                               random_state=seed).to_dict()
            metrics.update(sep)
    return {"coords": emb.coords, "params": dict(emb.params), "metrics": metrics,
            "separability": sep, "seconds": time.perf_counter() - t0, "pid": os.getpid()}


# ---- attribute -----------------------------------------------------------------------------

def _epoch_model(skeleton: torch.nn.Module, state: Mapping[str, torch.Tensor],
                 device: str) -> torch.nn.Module:
    net = copy.deepcopy(skeleton)
    net.load_state_dict(state)
    return net.to(device).eval()


def attribution_job(skeleton: torch.nn.Module, state: Mapping[str, torch.Tensor],
                    x: torch.Tensor, *, method: str, options: dict[str, Any], device: str,
                    threads: int | None = None) -> dict[str, Any]:
    """``attribute(model, x, method=method, **options)`` with the epoch's weights loaded:
    ``{"maps": AttributionMaps, "seconds", "pid"}``."""
    from shenjing.analysis.attribute import attribute

    t0 = time.perf_counter()
    with _limit_threads(threads):
        maps = attribute(_epoch_model(skeleton, state, device), x, method=method,
                         **{**options, "device": device})
    return {"maps": maps, "seconds": time.perf_counter() - t0, "pid": os.getpid()}


def randomization_job(skeleton: torch.nn.Module, state: Mapping[str, torch.Tensor],
                      x: torch.Tensor, trained: Any, *, method: str, seed: int,
                      options: dict[str, Any], device: str,
                      threads: int | None = None) -> dict[str, Any]:
    """The cascading randomization test of ``method`` on the final epoch's model, for the
    targets of its trained maps (``trained``: the maps, or the result dict of their job)."""
    from shenjing.analysis.attribute import randomization_test

    maps = trained["maps"] if isinstance(trained, Mapping) else trained
    t0 = time.perf_counter()
    with _limit_threads(threads):
        test = randomization_test(_epoch_model(skeleton, state, device), x, method=method,
                                  targets=torch.as_tensor(maps.targets), seed=seed,
                                  **{**options, "device": device})
    return {"test": test, "seconds": time.perf_counter() - t0, "pid": os.getpid()}


def faithfulness_job(skeleton: torch.nn.Module, state: Mapping[str, torch.Tensor],
                     xf: torch.Tensor, yf: torch.Tensor, *, method: str, seed: int,
                     baseline: str, data_mean: Any, options: dict[str, Any], device: str,
                     threads: int | None = None) -> dict[str, Any]:
    """The deletion / insertion curves of ``method``'s maps of ``xf`` on the final epoch's
    model: ``{"curves": DeletionInsertion, "seconds", "pid"}``."""
    from shenjing.analysis.attribute import attribute, deletion_insertion

    t0 = time.perf_counter()
    with _limit_threads(threads):
        model = _epoch_model(skeleton, state, device)
        fm = attribute(model, xf, method=method, **{**options, "labels": yf,
                                                    "device": device})
        curves = deletion_insertion(model, xf, fm.maps, targets=torch.as_tensor(fm.targets),
                                    baseline=baseline, data_mean=data_mean, seed=seed)
    return {"curves": curves, "seconds": time.perf_counter() - t0, "pid": os.getpid()}


# ---- submitting ----------------------------------------------------------------------------

@dataclass
class _Job:
    name: Any
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    after: Any = None  # the name of the job whose result is passed as args[after_at]
    after_at: int = 1


@dataclass
class RayJobs:
    """Jobs on the Ray cluster of ``backend`` (connected by the caller), at most as many in
    flight as the cluster holds workers of ``backend.num_cpus`` / ``num_gpus`` each (or
    ``backend.workers``). Names are the caller's (e.g. ``(key, epoch)``); a job may take
    another job's result as one argument (:meth:`submit` ``after``), which Ray hands over
    through the object store when that job is done."""

    backend: Backend
    limit: int = 0
    queue: list[_Job] = field(default_factory=list)
    refs: dict[Any, Any] = field(default_factory=dict)
    pending: dict[Any, Any] = field(default_factory=dict)  # ref → name
    timings: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        import ray

        from shenjing.backend import ClusterInfo, worker_count

        self._ray = ray
        info = ClusterInfo(address=str(self.backend.address or "local"),
                           nodes=sum(1 for n in ray.nodes() if n.get("Alive")),
                           resources={k: float(v) for k, v in ray.cluster_resources().items()})
        self.limit = worker_count(self.backend, info)

    @property
    def device(self) -> str:
        """Where a job computes: ``cuda`` when each worker has a GPU share, else ``cpu``."""
        return "cuda" if self.backend.num_gpus > 0 else "cpu"

    @property
    def threads(self) -> int | None:
        """torch / BLAS threads of a CPU job: its CPUs (None: a GPU job keeps the default)."""
        return None if self.backend.num_gpus > 0 else max(1, int(self.backend.num_cpus))

    def put(self, value: Any) -> Any:
        """``value`` into the object store once; pass the reference to many jobs."""
        return self._ray.put(value)

    def submit(self, name: Any, fn: Callable[..., Any], *args: Any, after: Any = None,
               after_at: int = 1, **kwargs: Any) -> None:
        """Queue ``fn(*args, **kwargs)`` as job ``name``; with ``after``, the result of that
        earlier job replaces ``args[after_at]``. Submitted as soon as a worker is free."""
        self.queue.append(_Job(name, fn, args, kwargs, after, after_at))
        self._fill()

    def _fill(self) -> None:
        remote: Any = self._ray.remote
        while self.queue and len(self.pending) < self.limit:
            job = self.queue.pop(0)
            args = list(job.args)
            if job.after is not None:
                args[job.after_at] = self.refs[job.after]
            task = remote(job.fn).options(num_cpus=self.backend.num_cpus,
                                          num_gpus=self.backend.num_gpus,
                                          max_retries=MAX_RETRIES)
            ref = task.remote(*args, **job.kwargs)
            self.refs[job.name] = ref
            self.pending[ref] = job.name

    def results(self, wait: bool = True) -> Iterator[tuple[Any, Any]]:
        """``(name, result)`` of every job, in the order they finish (``wait=False``: only
        of those finished already, without waiting); a job's own error is raised here as
        the worker raised it."""
        while self.pending or self.queue:
            self._fill()
            ready, _ = self._ray.wait(list(self.pending), num_returns=1,
                                      timeout=None if wait else 0)
            if not ready:
                return
            name = self.pending.pop(ready[0])
            try:
                out = self._ray.get(ready[0])
            except self._ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, Exception):
                    raise cause from None
                raise
            self._fill()
            if isinstance(out, dict) and "seconds" in out:
                self.timings.append({"job": _jsonable(name),
                                     "seconds": round(float(out["seconds"]), 4),
                                     "pid": out.get("pid")})
            yield name, out

    def record(self) -> dict[str, Any]:
        """What the stage records: workers in flight at most, and each job's seconds."""
        return {"workers": self.limit, "num_cpus": self.backend.num_cpus,
                "num_gpus": self.backend.num_gpus, "tasks": list(self.timings)}


def _jsonable(name: Any) -> Any:
    return [_jsonable(n) for n in name] if isinstance(name, tuple) else \
        (name if isinstance(name, (int, float, str)) or name is None else str(name))


__all__ = ["MAX_RETRIES", "RayJobs", "attribution_job", "faithfulness_job", "job_threads",
           "map_job", "randomization_job"]
