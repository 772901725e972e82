"""Landscape stages: read a run's checkpoints and data, write ``landscapes/``.

Files written into ``<run>/landscapes/`` (the HTML report reads only these):

``line-<start>-<end>.npz``            1-D line (see :mod:`shenjing.analysis.landscape.grid`
                                      for the keys: axis_0, loss, accuracy, done, origin…)
``plane-<norm>-s<seed>-e<NNN>.npz``   2-D plane around epoch NNN (``-bnrecompute``,
                                      ``-with1d`` suffixes for the non-default policies)
``trajectory-e<NNN>.npz``             PCA plane of the trajectory (+ ``trajectory``,
                                      ``trajectory_epochs`` keys)
``<stem>.vtk``                        2-D landscapes as a legacy-VTK rectilinear grid (ParaView)
``<stem>.directions.npz``             the directions: ``meta`` JSON with their recipe (a
                                      plane's seed and normalization, a line's two end
                                      points: < 1 kB, remade bit for bit by
                                      :func:`landscape_directions`) or, for the trajectory's
                                      PCA directions only, ``vectors`` (k, n_params) float32
                                      with the rounding error stated (see
                                      :mod:`shenjing.analysis.landscape.storage`)

Figures go to ``<run>/figures/`` as ``landscape-<stem>[-contour|-filled|-surface]`` (PNG + SVG).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shenjing._device import resolve_device
from shenjing.analysis.landscape import (
    Directions,
    EngineConfig,
    Landscape,
    ParamLayout,
    directions_path,
    export_vtk,
    line,
    line_direction,
    load_directions,
    load_landscape,
    model_sha256,
    plane,
    read_directions_meta,
    trajectory_pca,
    trajectory_plane,
)
from shenjing.analysis.landscape.memory import check_engine, check_trajectory
from shenjing.analysis.landscape.options import (
    validate_line_options,
    validate_plane_options,
    validate_trajectory_options,
)
from shenjing.backend import Backend
from shenjing.errors import CheckpointError, UsageError
from shenjing.runs import Run, open_run, versions
from shenjing.stages._backend import backend_session, stage_backend
from shenjing.stages._inputs import fixed_samples, run_loss
from shenjing.stages._progress import point_progress

__all__ = ["LandscapeResult", "landscape_directions",
           "landscape_line", "landscape_plane", "landscape_trajectory", "run_loss",
           "validate_line_options", "validate_plane_options",
           "validate_trajectory_options"]


@dataclass(frozen=True)
class LandscapeResult:
    """What a landscape stage produced: the landscape, its file and its figures."""

    landscape: Landscape
    path: Path
    figures: list[Path] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"LandscapeResult({self.path.name}, {self.landscape!r})"


def _provenance(run: Run, epochs: dict[str, Any], n: int | None, seed: int, split: str
                ) -> dict[str, Any]:
    return {"run": run.name, "run_path": str(run.path), "model": run.manifest.get("model"),
            "data": run.manifest.get("data"), "split": split,
            "samples": "all" if n is None else int(n), "sample_seed": seed,
            "epochs": epochs, "versions": versions()}


def _figures(run: Run, ls: Landscape, stem: str) -> list[Path]:
    from shenjing.plot.landscape import plot_contour, plot_line, plot_surface, plot_trajectory
    from shenjing.plot.save import save_figure

    folder = run.figures_dir
    paths: list[Path] = []
    if len(ls.axes) == 1:
        paths += save_figure(plot_line(ls), folder, f"landscape-{stem}")
        return paths
    if ls.trajectory is not None:
        paths += save_figure(plot_trajectory(ls), folder, f"landscape-{stem}")
    log = bool(np.nanmin(np.where(ls.done, ls.loss, np.nan)) > 0)
    paths += save_figure(plot_contour(ls, log=log), folder, f"landscape-{stem}-contour")
    paths += save_figure(plot_contour(ls, filled=True, log=log), folder,
                         f"landscape-{stem}-filled")
    paths += save_figure(plot_surface(ls), folder, f"landscape-{stem}-surface")
    return paths


def _check_memory(run: Run, model: torch.nn.Module, k: int, samples: int | None,
                  split: str, dtype: str, device: torch.device) -> None:
    """Refuse a landscape whose weight copies would not fit, before its directions exist
    and before the stage is marked running (see :mod:`~shenjing.analysis.landscape.memory`;
    the grid itself was checked with the options)."""
    whole = getattr(run.data, split)
    n = len(whole) if samples is None else min(int(samples), len(whole))
    per_sample = int(np.prod(whole.x.shape[1:]))
    itemsize = 8 if dtype == "float64" else 4
    check_engine(sum(p.numel() for p in model.parameters()), k, itemsize=itemsize,
                 data_bytes=n * per_sample * itemsize, device=str(device))


def _variant_tag(split: str, precision: str) -> str:
    """File-name suffix, so that a training-split or reduced-precision surface never
    replaces the default one (test split, exact)."""
    return ("" if split == "test" else f"-{split}") + \
        ("" if precision == "exact" else f"-{precision}")


def _finish(run: Run, stage: str, ls: Landscape, path: Path, figures: bool
            ) -> LandscapeResult:
    figs = _figures(run, ls, path.stem) if figures and ls.n_done else []
    if len(ls.axes) == 2:
        export_vtk(ls, path.with_suffix(".vtk"))
    (cx, mval) = ls.minimum() if ls.n_done else ((), float("nan"))
    center_loss = float(ls.loss[ls.center_index]) if ls.n_done else float("nan")
    ran_on = ls.meta.get("backend", {})
    run.update_stage(stage, "done", file=f"landscapes/{path.name}", shape=list(ls.shape),
                     backend=ran_on.get("name", "local"),
                     **({"workers": len(ran_on["workers"]),
                         "cluster": ran_on["cluster"]} if ran_on else {}),
                     n_nonfinite=ls.n_nonfinite, engine=ls.meta.get("engine", {}).get("path"),
                     seconds=ls.meta.get("seconds"), center_loss=center_loss,
                     min_loss=mval, min_at=list(cx),
                     figures=[f"figures/{p.name}" for p in figs if p.suffix == ".png"])
    return LandscapeResult(ls, path, figs)


def _check_start_fits(start: dict[str, torch.Tensor], model: torch.nn.Module, run: Run,
                      start_run: Run | None) -> None:
    """Refuse a line whose start does not fit the model, before the stage is marked running
    (the error names the mismatched parameters and, for another run's start, both runs)."""
    try:
        line_direction(start, dict(model.named_parameters()), layout=ParamLayout.of(model))
    except CheckpointError as exc:
        if start_run is None:
            raise
        raise CheckpointError(f"--start-run {start_run.path}: its weights do not fit the "
                              f"model of {run.path}: {exc}") from None


def landscape_line(run: Run, *, start: int | str = "init", end: int | str = "final",
                   start_run: Run | None = None, steps: int = 51,
                   range_: tuple[float, float] = (-0.5, 1.5), samples: int | None = None,
                   sample_seed: int = 0, split: str = "test",
                   device: str | torch.device = "auto",
                   engine: str = "auto", dtype: str = "float32", precision: str = "exact",
                   batch_size: int | None = None,
                   compile: bool | None = None, figures: bool = True, progress: bool = True,
                   backend: str | Backend = "local", ray_address: str | None = None
                   ) -> LandscapeResult:
    """Loss along θ(α) = (1−α)·θ_start + α·θ_end (Goodfellow et al. 2015), into landscapes/.

    ``start_run`` takes the start point from another run (same architecture required; the
    error names the mismatched parameters). α = 0 and 1 are always on the axis. Every
    option is checked first (:func:`validate_line_options`): bad input writes nothing.
    ``backend='ray'`` computes the points on a Ray cluster (``ray_address``; see
    :mod:`shenjing.backend`, docs/scale.md).
    """
    validate_line_options(steps=steps, range_=range_, samples=samples,
                          sample_seed=sample_seed, split=split, device=device, engine=engine,
                          dtype=dtype, precision=precision, batch_size=batch_size)
    be = stage_backend(backend, ray_address)
    # connected before anything is read or written: a cluster that cannot be
    # reached or lacks the resources asked for is refused with the run untouched
    with backend_session(be):
        config = EngineConfig(path=engine, device=str(device), dtype=dtype, precision=precision,
                              batch_size=batch_size, compile=compile)
        e_end = run.resolve_epoch(end)
        src = start_run or run
        e_start = src.resolve_epoch(start)
        dev = resolve_device(device, option="--device")
        model = run.model(e_end, device=dev)
        _check_memory(run, model, 1, samples, split, dtype, dev)
        start_state = src.state_dict(e_start)
        _check_start_fits(start_state, model, run, start_run)
        x, y, idx = fixed_samples(run, samples, sample_seed, split)
        tag = f"e{e_start:03d}" if start_run is None else f"{start_run.name}-e{e_start:03d}"
        path = run.landscapes_dir / f"line-{tag}-e{e_end:03d}{_variant_tag(split, precision)}.npz"
        prov = _provenance(run, {"start": e_start, "end": e_end,
                                 "start_run": str(start_run.path) if start_run else None},
                           samples, sample_seed, split)
        prov["model_sha256"] = model_sha256(model)
        with run.running_stage("landscape_line", file=f"landscapes/{path.name}"), \
                point_progress(progress, "line") as cb:
            ls = line(start_state, model, x, y, loss=run_loss(run), steps=steps, range_=range_,
                      engine=config, path=path, sample_indices=idx, provenance=prov, progress=cb,
                      backend=be)
            # figures inside the block: a failure while drawing ends the stage as failed
            return _finish(run, "landscape_line", ls, path, figures)


def landscape_plane(run: Run, *, epoch: int | str = "final", steps: int = 21,
                    range_: tuple[float, float] = (-1.0, 1.0), norm: str = "filter",
                    seed: int = 0, include_1d: bool = False, bn: str = "eval",
                    samples: int | None = None, sample_seed: int = 0, split: str = "test",
                    device: str | torch.device = "auto",
                    engine: str = "auto", dtype: str = "float32",
                    precision: str = "exact", batch_size: int | None = None,
                    compile: bool | None = None,
                    figures: bool = True, progress: bool = True,
                    backend: str | Backend = "local", ray_address: str | None = None
                    ) -> LandscapeResult:
    """2-D loss surface around θ* of ``epoch`` along two seeded random directions.

    Filter-normalized by default (Li et al. 2018), 1-D tensors (biases, BN γ/β) fixed unless
    ``include_1d``; ``bn='recompute'`` re-estimates BatchNorm statistics at every point
    from 2,000 training samples. Rerunning resumes; a finer/wider grid reuses points.
    Every option is checked first (:func:`validate_plane_options`): bad input writes nothing.
    ``backend='ray'`` computes the points on a Ray cluster (``ray_address``; see
    :mod:`shenjing.backend`, docs/scale.md): the same surface, tile by tile.
    """
    validate_plane_options(steps=steps, range_=range_, norm=norm, seed=seed, bn=bn,
                           samples=samples, sample_seed=sample_seed, split=split,
                           device=device, engine=engine, dtype=dtype, precision=precision,
                           batch_size=batch_size)
    be = stage_backend(backend, ray_address)
    # connected before anything is read or written: a cluster that cannot be
    # reached or lacks the resources asked for is refused with the run untouched
    with backend_session(be):
        config = EngineConfig(path=engine, device=str(device), dtype=dtype, precision=precision,
                              batch_size=batch_size, compile=compile, bn=bn)
        e = run.resolve_epoch(epoch)
        dev = resolve_device(device, option="--device")
        model = run.model(e, device=dev)
        _check_memory(run, model, 2, samples, split, dtype, dev)
        x, y, idx = fixed_samples(run, samples, sample_seed, split)
        bn_data = run.data.train.subset(2000, seed=sample_seed).x if bn == "recompute" else None
        suffix = ("-bnrecompute" if bn == "recompute" else "") + ("-with1d" if include_1d else "") \
            + _variant_tag(split, precision)
        path = run.landscapes_dir / f"plane-{norm}-s{seed}-e{e:03d}{suffix}.npz"
        prov = _provenance(run, {"center": e}, samples, sample_seed, split)
        prov["model_sha256"] = model_sha256(model)
        with run.running_stage("landscape_plane", file=f"landscapes/{path.name}"), \
                point_progress(progress, "plane") as cb:
            ls = plane(model, x, y, loss=run_loss(run), steps=steps, range_=range_, seed=seed,
                       norm=norm, ignore_1d=not include_1d, engine=config, path=path,
                       bn_data=bn_data, sample_indices=idx, provenance=prov, progress=cb,
                       backend=be)
            # figures inside the block: a failure while drawing ends the stage as failed
            return _finish(run, "landscape_plane", ls, path, figures)


def landscape_trajectory(run: Run, *, steps: int = 21, margin: float = 0.25,
                         samples: int | None = None, sample_seed: int = 0,
                         split: str = "test", device: str | torch.device = "auto",
                         engine: str = "auto",
                         dtype: str = "float32", precision: str = "exact",
                         batch_size: int | None = None,
                         figures: bool = True, progress: bool = True,
                         backend: str | Backend = "local", ray_address: str | None = None
                         ) -> LandscapeResult:
    """Loss on the plane of the trajectory's two main PCA directions, with the trajectory.

    Every epoch checkpoint (0 = init … final) is projected on the plane; the grid covers
    the projected points with ``margin`` to spare on each side and contains θ* (0, 0).
    Every option is checked first (:func:`validate_trajectory_options`). ``backend='ray'``
    computes the points on a Ray cluster (``ray_address``; docs/scale.md).
    """
    validate_trajectory_options(steps=steps, margin=margin, samples=samples,
                                sample_seed=sample_seed, split=split, device=device,
                                engine=engine, dtype=dtype, precision=precision,
                                batch_size=batch_size)
    be = stage_backend(backend, ray_address)
    # connected before anything is read or written: a cluster that cannot be
    # reached or lacks the resources asked for is refused with the run untouched
    with backend_session(be):
        config = EngineConfig(path=engine, device=str(device), dtype=dtype, precision=precision,
                              batch_size=batch_size)
        epochs = run.epochs
        if len(epochs) < 3:
            raise UsageError(f"run {run.name!r} has {len(epochs)} checkpoints; a trajectory "
                             "plane needs at least 3 (train for 2+ epochs)")
        dev = resolve_device(device, option="--device")
        model = run.model("final", device=dev)
        _check_memory(run, model, 2, samples, split, dtype, dev)
        check_trajectory(len(epochs), sum(p.numel() for p in model.parameters()))
        layout = ParamLayout.of(model)
        pca = trajectory_pca([run.state_dict(e) for e in epochs], epochs, layout)
        x, y, idx = fixed_samples(run, samples, sample_seed, split)
        tag = _variant_tag(split, precision)
        path = run.landscapes_dir / f"trajectory-e{epochs[-1]:03d}{tag}.npz"
        prov = _provenance(run, {"center": epochs[-1], "trajectory": epochs}, samples,
                           sample_seed, split)
        prov["model_sha256"] = model_sha256(model)
        prov["pca_residual"] = pca.residual.tolist()
        with run.running_stage("landscape_trajectory", file=f"landscapes/{path.name}"), \
                point_progress(progress, "trajectory") as cb:
            ls = trajectory_plane(model, pca, x, y, loss=run_loss(run), steps=steps,
                                  margin=margin, engine=config, path=path, sample_indices=idx,
                                  provenance=prov, progress=cb, backend=be)
            # figures inside the block: a failure while drawing ends the stage as failed
            return _finish(run, "landscape_trajectory", ls, path, figures)


def landscape_directions(run: Run, landscape: str | Path) -> Directions:
    """The directions a landscape of ``run`` was computed along, remade from the run.

    ``landscape`` is the landscape file (or its name in ``landscapes/``). Random directions
    are regenerated from their seed around the checkpoint the plane is centred on, a line's
    from its two checkpoints, and checked against the hashes stored; PCA directions are
    read from their float32 vectors.
    """
    path = Path(landscape)
    if not path.is_absolute() and not path.exists():
        path = run.path / "landscapes" / path
    ls = load_landscape(path)
    dpath = directions_path(path)
    meta = read_directions_meta(dpath)
    epochs = ls.meta.get("provenance", {}).get("epochs", {})
    if meta["stored_as"] == "seed":
        return load_directions(dpath, center=run.state_dict(int(epochs["center"])))[0]
    if meta["stored_as"] == "end points":
        src = open_run(epochs["start_run"]) if epochs.get("start_run") else run
        return load_directions(dpath, center=run.state_dict(int(epochs["end"])),
                               start=src.state_dict(int(epochs["start"])))[0]
    return load_directions(dpath)[0]
