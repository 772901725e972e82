"""Stage ``warp``: how each layer of a net on 2-D points bends a grid, and where the classes
become linearly separable.

``warp(run, data="spirals")`` trains (or reuses) an ``mlp`` run on an ``(N, 2)``
classification set (``moons``, ``spirals``, or the user's points from an ``.npz``/``.csv``
file or arrays), then writes every layer's view of a grid and the data, a linear probe per
layer, and the decision boundary in input space.

Files written (``E`` = the epoch, three digits):

``warp/data.npz`` (user points only)
    ``x_train`` ``(n, 2)``, ``y_train`` ``(n,)``, ``x_test``, ``y_test`` — the run's data
    (``load_from_spec`` cannot rebuild user points; this file does).
``warp/warp-eE.npz``
    ``labels`` ``(N,)``, ``is_test`` ``(N,)`` bool (train points first, then test), ``grid``
    ``(2, lines, points, 2)`` the input grid; per layer ``i`` (0 = input, in order):
    ``data_i`` ``(N, 2)``, ``grid_i`` ``(2, lines, points, 2)`` — coordinates in the 2-D view;
    ``layer_names``, ``layer_kinds`` (``input``/``linear`` = pre-activation/``activation`` =
    post-activation/``output``), ``projections`` (``identity``/``pad``/``pca``),
    ``n_features``, ``probe_train``, ``probe_test`` ``(layers,)``, ``explained_variance``
    ``(layers, 2)`` (nan unless PCA).
``warp/boundary-eE.npz``
    ``xs`` ``(nx,)``, ``ys`` ``(ny,)``, ``proba`` ``(ny, nx, classes)``.
``warp/warp-eE.json``
    ``{"epoch", "data", "chance", "layers": [{"layer", "kind", "features", "projection",
    "explained_variance", "probe_train_accuracy", "probe_test_accuracy"}], "last_hidden",
    "n_lines", "resolution", "layers_asked", "figures"}``. The files of an epoch hold the
    last study of it, with the settings that drew it (``n_lines``, ``resolution``, the
    layers asked for); nothing is reused from them, so a rerun recomputes the study (a few
    seconds). The training of a new run resumes like ``shenjing train --resume``.

Before anything is trained or written, the study's memory is estimated
(:func:`~shenjing.analysis.warp.warp_bytes`) and refused above half the memory available,
naming the ``--lines`` that fit.
``figures/warp-layers-eE``, ``warp-probes-eE``, ``warp-boundary-eE`` (``.png`` + ``.svg``).

``run.json`` gets ``stages.warp`` with the probe accuracy of every layer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shenjing import _io
from shenjing._device import resolve_device
from shenjing.analysis.warp import (
    check_points_2d,
    check_warp_memory,
    data_bounds,
    decision_map,
    layer_widths,
    warp_layers,
)
from shenjing.data import Dataset, Split
from shenjing.errors import DataError, ShapeMismatchError, UsageError
from shenjing.plot.save import save_figure
from shenjing.runs import Run
from shenjing.stages._inputs import layer_names

#: training settings for the warp study's net (the seeds give none for 2-D sets); with
#: hidden (64, 64) they fit the 2.5-turn spirals to 0.99 test accuracy in about 8 s on
#: 2 CPU cores (linear probe: 0.53 at the input, 0.99 at the last hidden layer)
WARP_HIDDEN = (64, 64)
WARP_TRAIN: dict[str, Any] = {"epochs": 150, "lr": 5e-3, "batch_size": 32}


@dataclass(frozen=True, repr=False)
class WarpResult:
    """What :func:`warp` measured: probe accuracy per layer, chance level, files written."""

    run: Run
    epoch: int
    probes: list[dict[str, Any]]
    chance: float
    figures: list[Path] = field(default_factory=list)

    def __repr__(self) -> str:
        rows = ", ".join(f"{p['layer']}={p['probe_test_accuracy']:.3f}" for p in self.probes)
        return f"WarpResult(epoch {self.epoch}, chance {self.chance:.2f}; probes {rows})"


def points_dataset(x: Any, y: Any, *, test_fraction: float = 0.25, seed: int = 0,
                   name: str = "points") -> Dataset:
    """A classification :class:`Dataset` of user points ``x`` ``(N, 2)``, labels ``y`` ``(N,)``
    (integers ``0 … C−1``), split at random into train/test."""
    xs = check_points_2d(x, "the data")
    ys = np.asarray(y).ravel()
    if ys.size != len(xs):
        raise ShapeMismatchError(f"{len(xs)} points but {ys.size} labels; give one label per "
                                 "point")
    if not np.all(np.isfinite(xs)):
        raise DataError("the points contain NaN or infinite coordinates")
    classes, ys = np.unique(ys, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"warp needs at least two classes; all labels are {classes[0]!r}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ys))
    n_test = max(1, round(len(ys) * test_fraction))
    te, tr = np.sort(order[:n_test]), np.sort(order[n_test:])

    def split(idx: np.ndarray) -> Split:
        return Split(torch.tensor(xs[idx], dtype=torch.float32),
                     torch.tensor(ys[idx], dtype=torch.int64), torch.from_numpy(idx))

    return Dataset(name=name, train=split(tr), test=split(te),
                   classes=tuple(str(c) for c in classes),
                   spec={"name": name, "n_samples": len(ys), "seed": seed,
                         "test_fraction": test_fraction})


def _check_new_epoch(epoch: int | str, n_epochs: int) -> None:
    """``--epoch`` of a run about to be trained for ``n_epochs``: refused before training."""
    if epoch in ("final", "last", "init", "untrained", -1):
        return
    try:
        value = int(epoch)
    except (TypeError, ValueError):
        raise UsageError(f"--epoch {epoch!r}: expected a number, init or final, e.g. --epoch "
                         "final") from None
    if not 0 <= value <= n_epochs:
        raise UsageError(f"--epoch {value}: this run will be trained for {n_epochs} epochs; "
                         f"choose 0 … {n_epochs}, or final")


def _read_points_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``x1,x2,label`` of numbers (a header line is skipped); one DataError naming the
    file and the first line that is not three numbers."""
    import warnings

    try:
        with warnings.catch_warnings():  # numpy warns about an empty file: said below instead
            warnings.simplefilter("ignore")
            table = np.atleast_2d(np.genfromtxt(path, delimiter=",", skip_header=0))
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read as CSV ({exc})") from None
    if table.size == 0:
        raise DataError(f"{path} is empty; write rows x1,x2,label of numbers, e.g. 0.5,-1.2,1")
    first = 1 if np.isnan(table[0]).all() else 0  # a header line
    table = table[first:]
    if table.ndim != 2 or table.shape[1] != 3:
        raise ShapeMismatchError(f"{path} must have 3 columns (x1, x2, label); it has shape "
                                 f"{table.shape}")
    bad = np.flatnonzero(~np.isfinite(table).all(axis=1))
    if bad.size:
        raise DataError(f"{path}: line {int(bad[0]) + 1 + first} is not three numbers; write "
                        "every row as x1,x2,label, e.g. 0.5,-1.2,1")
    return table[:, :2], table[:, 2].astype(np.int64)


def load_points(path: str | os.PathLike[str], *, seed: int = 0) -> Dataset:
    """Points from ``.npz`` (arrays ``x`` ``(N, 2)`` and ``y``) or ``.csv`` (columns x1, x2,
    label; a header line is skipped)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no data file {path}; give moons, spirals, or an .npz/.csv of points")
    if path.suffix == ".npz":
        from shenjing.data.custom import read_npz_arrays

        arrays = read_npz_arrays(path, ("x", "y"))  # objects refused: nothing is unpickled
        x, y = arrays["x"], arrays["y"]
    elif path.suffix == ".csv":
        x, y = _read_points_csv(path)
    else:
        raise UsageError(f"data file {path} must be .npz (x, y) or .csv (x1, x2, label)")
    return points_dataset(x, y, seed=seed, name=path.stem)


def _dataset(data: str | os.PathLike[str] | Dataset | tuple[Any, Any], seed: int) -> Dataset:
    if isinstance(data, Dataset):
        ds = data
    elif isinstance(data, tuple):
        ds = points_dataset(*data, seed=seed)
    elif str(data) in ("moons", "spirals") or not Path(str(data)).suffix:
        from shenjing.data import load_dataset

        ds = load_dataset(str(data), seed=seed)
    else:
        ds = load_points(data, seed=seed)
    if ds.input_shape != (2,):
        raise ShapeMismatchError(f"warp needs 2-D points, inputs of shape (N, 2); dataset "
                                 f"{ds.name!r} has inputs of shape (N, "
                                 f"{', '.join(map(str, ds.input_shape))}). Use moons, spirals "
                                 "or your own (N, 2) data")
    if ds.task != "classification":
        raise UsageError(f"warp needs a classification set; {ds.name!r} is {ds.task}")
    return ds


def _run_dataset(run: Run) -> Dataset:
    stored = run.path / "warp" / "data.npz"
    if stored.is_file():
        with np.load(stored, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        classes = tuple(str(c) for c in arrays.get("classes", np.unique(arrays["y_train"])))

        def split(x: np.ndarray, y: np.ndarray) -> Split:
            return Split(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64),
                         torch.arange(len(y)))

        return Dataset(name=str(run.manifest["data"].get("name", "points")),
                       train=split(arrays["x_train"], arrays["y_train"]),
                       test=split(arrays["x_test"], arrays["y_test"]), classes=classes,
                       spec=dict(run.manifest["data"]))
    return run.data


def warp(run: str | os.PathLike[str] | Run = "runs/warp", *,
         data: str | os.PathLike[str] | Dataset | tuple[Any, Any] = "spirals",
         hidden: Sequence[int] | None = None, epochs: int | None = None,
         lr: float | None = None, batch_size: int | None = None, seed: int = 0,
         epoch: int | str = "final", layers: Sequence[str] | str | None = None,
         n_lines: int = 17,
         resolution: int = 200, device: str | torch.device = "auto", retrain: bool = False,
         progress: bool = True, trust_code: bool = False) -> WarpResult:
    """Train (or reuse) an ``mlp`` on 2-D points and write the space-warping study.

    A run folder that already holds a trained run (of any model on ``(N, 2)`` inputs) is
    analysed as it is; otherwise an ``mlp`` with ``hidden`` widths (default
    :data:`WARP_HIDDEN`) is trained on ``data`` with :data:`WARP_TRAIN` settings unless given.
    """
    from shenjing._checks import bounded_int, finite_float, optional_int, random_seed

    for width in hidden or ():
        bounded_int("--hidden", width, low=1, example="64,64")
    optional_int("--epochs", epochs)
    optional_int("--batch-size", batch_size)
    if lr is not None:
        finite_float("--lr", lr, low=0.0, low_open=True)
    random_seed("--seed", seed)
    bounded_int("--lines", n_lines, low=2, why="a grid needs 2 or more lines")
    dev = resolve_device(device, option="--device")
    bounded_int("resolution", resolution, low=2)
    if layers is not None:
        layers = layer_names(layers)
    path = run.path if isinstance(run, Run) else Path(run)
    trained_before = (path / "run.json").is_file() and \
        Run(path).stage("train").get("status") == "done"
    if trained_before and not retrain:
        the_run = run if isinstance(run, Run) else Run(path, trust_code=trust_code)
        dataset = _dataset(_run_dataset(the_run), seed)
        e = the_run.resolve_epoch(epoch)
        model = the_run.model(e)
        _check_memory(model, dataset, layers, n_lines, resolution)
    else:
        from shenjing.models import build_model
        from shenjing.training import train

        dataset = _dataset(data, seed)
        widths = tuple(int(h) for h in (hidden or WARP_HIDDEN))
        _check_new_epoch(epoch, epochs or WARP_TRAIN["epochs"])
        # the same architecture untrained: its layer widths size the study before training
        _check_memory(build_model("mlp", (2,), len(dataset.classes), hidden=widths),
                      dataset, layers, n_lines, resolution)
        resume = (path / "run.json").is_file() and not retrain
        the_run = train("mlp", dataset, run=path, epochs=epochs or WARP_TRAIN["epochs"],
                        lr=lr or WARP_TRAIN["lr"], batch_size=batch_size or
                        WARP_TRAIN["batch_size"], seed=seed, device=dev, resume=resume,
                        force=retrain, progress=progress, model_kwargs={"hidden": widths})
        if not (isinstance(data, str) and data in ("moons", "spirals")):
            _io.save_npz(the_run.subdir("warp") / "data.npz",
                         x_train=dataset.train.x.numpy(), y_train=dataset.train.y.numpy(),
                         x_test=dataset.test.x.numpy(), y_test=dataset.test.y.numpy(),
                         classes=np.array(dataset.classes, dtype=str))
        e = the_run.resolve_epoch(epoch)
        model = the_run.model(e)
    with the_run.running_stage("warp", epoch=e):
        return _study(the_run, model, dataset, e, layers, n_lines, resolution)


def _check_memory(model: torch.nn.Module, dataset: Dataset, layers: Sequence[str] | None,
                  n_lines: int, resolution: int) -> None:
    """Refuse a study too large for the memory available, before anything is written."""
    n_points = len(dataset.train) + len(dataset.test)
    check_warp_memory(layer_widths(model, layers), n_points, n_lines=n_lines,
                      resolution=resolution, n_classes=len(dataset.classes))


def _study(run: Run, model: torch.nn.Module, dataset: Dataset, epoch: int,
           layers: Sequence[str] | None, n_lines: int, resolution: int) -> WarpResult:
    from shenjing.plot import warp as plot_warp

    w = warp_layers(model, dataset.train.x, dataset.train.y, dataset.test.x, dataset.test.y,
                    layers=layers, n_lines=n_lines)
    out = run.subdir("warp")
    tag = f"e{epoch:03d}"
    arrays: dict[str, Any] = {"labels": w.labels, "is_test": w.is_test, "grid": w.grid}
    for i, layer in enumerate(w.layers):
        arrays[f"data_{i}"] = layer.data_2d
        arrays[f"grid_{i}"] = layer.grid_2d
    evr = np.full((len(w.layers), 2), np.nan)
    for i, layer in enumerate(w.layers):
        if layer.projection.explained_variance_ratio is not None:
            evr[i] = layer.projection.explained_variance_ratio
    _io.save_npz(out / f"warp-{tag}.npz", **arrays,
                 layer_names=np.array([x.name for x in w.layers], dtype=str),
                 layer_kinds=np.array([x.kind for x in w.layers], dtype=str),
                 projections=np.array([x.projection.method for x in w.layers], dtype=str),
                 n_features=np.array([x.n_features for x in w.layers]),
                 probe_train=np.array([x.probe_train_accuracy for x in w.layers]),
                 probe_test=np.array([x.probe_test_accuracy for x in w.layers]),
                 explained_variance=evr)
    points = np.concatenate([dataset.train.x.numpy(), dataset.test.x.numpy()]).astype(float)
    dmap = decision_map(model, data_bounds(points), resolution=resolution)
    _io.save_npz(out / f"boundary-{tag}.npz", xs=dmap.xs, ys=dmap.ys, proba=dmap.proba)

    counts = np.bincount(dataset.test.y.numpy())
    chance = float(counts.max() / counts.sum())
    table = w.probe_table()
    hidden = [row for row in table if row["kind"] == "activation"]
    last_hidden = hidden[-1]["layer"] if hidden else None

    figures: list[Path] = []
    figures += save_figure(plot_warp.plot_warp(w), run.figures_dir, f"warp-layers-{tag}")
    figures += save_figure(plot_warp.plot_probe_accuracy(
        [r["layer"] for r in table], [r["probe_test_accuracy"] for r in table],
        train_accuracy=[r["probe_train_accuracy"] for r in table],
        kinds=[r["kind"] for r in table], chance=chance), run.figures_dir, f"warp-probes-{tag}")
    figures += save_figure(plot_warp.plot_decision_boundary(
        dmap.xs, dmap.ys, dmap.proba, points, w.labels,
        title=f"Decision boundary in input space (epoch {epoch})"), run.figures_dir,
        f"warp-boundary-{tag}")
    summary = {"epoch": epoch, "data": dataset.name, "chance": chance, "layers": table,
               "last_hidden": last_hidden, "n_lines": n_lines, "resolution": resolution,
               "layers_asked": None if layers is None else list(layers),
               "figures": [str(p.relative_to(run.path)) for p in figures]}
    _io.write_json(out / f"warp-{tag}.json", summary)
    run.update_stage("warp", "done", epoch=epoch, json=f"warp/warp-{tag}.json", chance=chance,
                     probes={r["layer"]: r["probe_test_accuracy"] for r in table})
    return WarpResult(run, epoch, table, chance, figures)
