"""Stage ``fit``: train ``curve_mlp`` on a function of x and compare it with polynomials.

``fit(run, function=None)`` trains (or reuses) a run of seed 001's ``curve_mlp`` on the
training points of a function (seed 001's by default; any expression in x or
``module:function``), then measures and draws the fit in the training range and beyond it
against polynomial baselines of the same points, decomposes the output into its ReLU units
(one hidden layer) and finds the linear regions along x (any depth).

Files written (all under the run directory):

``fit/function.json``
    ``{"function", "kind", "n_points", "train_range", "extrapolation", "n_test"}`` — the
    recipe of the training data (a custom function's run cannot be rebuilt by
    ``shenjing.data.load_from_spec``; this file rebuilds it).
``fit/fit.npz``
    ``x`` ``(n_eval,)`` evaluation grid over the extrapolation range; ``y_true``; ``y_net``
    (the final net, float32 forward); ``in_range`` bool; ``x_train``, ``y_train`` (the
    points the net and the polynomials saw, float32 values); ``poly_values``
    ``(n_poly, n_eval)``; ``poly_labels``, ``poly_methods`` (str), ``poly_degrees`` (int).
``fit/epochs.npz``
    ``epochs`` ``(E,)``, ``y_net`` ``(E, n_eval)`` the fit at every checkpoint, ``train_loss``
    ``(E,)`` (nan where not recorded, e.g. epoch 0).
``fit/decomposition.npz`` (one hidden layer only)
    ``w``, ``b``, ``v`` ``(hidden,)``, ``c`` ``()``, ``kinks`` ``(hidden,)`` (nan: w = 0),
    ``order`` (kink order), ``pieces`` ``(n_eval, hidden)``, ``partial_sums``
    ``(hidden + 1, n_eval)``.
``fit/regions.npz``
    ``boundaries`` ``(k,)``, ``edges`` ``(k + 2,)``, ``slopes``, ``intercepts`` ``(k + 1,)``,
    ``patterns`` ``(k + 1, units)`` bool.
``fit/summary.json``
    settings, ``errors`` (label → ``rmse_in``, ``max_in``, ``rmse_out``, ``max_out``, ``n_in``,
    ``n_out``; null = infinite), ``decomposition`` (``max_abs_diff_float64``,
    ``max_abs_diff_float32``, ``n_units``, ``n_active``, ``n_kinks_in_range``) or null,
    ``regions`` (``n_regions``, ``n_in_range``), ``figures``.
``figures/fit-curve``, ``fit-errors``, ``fit-decomposition`` (one hidden layer),
``fit-regions``, ``fit-epochs`` (``.png`` + ``.svg``); ``fit/fit-epochs.gif``.

``run.json`` gets ``stages.fit`` with the net's and each polynomial's in/out-of-range RMSE.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shenjing import _io
from shenjing.analysis.approx import (
    METHODS,
    fit_errors,
    in_range_mask,
    linear_regions,
    polynomial_fit,
    predict_1d,
    relu_decomposition,
)
from shenjing.analysis.expr import SEED_EXPRESSION, TargetFunction, check_finite, parse_function
from shenjing.data import Dataset, Split
from shenjing.errors import RunError, UsageError
from shenjing.plot.save import save_figure
from shenjing.runs import Run

SEED_RANGE = (-5.0, 5.0)
SEED_EXTRAPOLATION = (-7.0, 7.0)


@dataclass(frozen=True, repr=False)
class FitResult:
    """What :func:`fit` measured: errors per approximation (label → dict) and files written."""

    run: Run
    function: str
    errors: dict[str, dict[str, Any]]
    summary: dict[str, Any]
    figures: list[Path] = field(default_factory=list)

    def __repr__(self) -> str:
        rows = ", ".join(f"{k}: in {_num(v['rmse_in'])}, out {_num(v['rmse_out'])}"
                         for k, v in self.errors.items())
        return f"FitResult({self.function!r}; RMSE {rows})"


def _num(v: Any) -> str:
    return "inf" if v is None else f"{v:.4g}"


def parse_poly(spec: str, degree: int | None) -> tuple[str, int | None]:
    """``'lagrange'`` / ``'chebyshev:15'`` → ``(method, degree)`` (``degree`` is the default)."""
    method, _, deg = spec.strip().lower().partition(":")
    if method not in METHODS:
        from shenjing.errors import unknown_name

        raise unknown_name("polynomial method", method, METHODS)
    if deg:
        try:
            return method, int(deg)
        except ValueError:
            raise UsageError(f"polynomial {spec!r}: the degree after ':' must be an integer, "
                             "e.g. chebyshev:15") from None
    return method, degree


def function_dataset(f: TargetFunction, *, n_points: int = 100,
                     train_range: tuple[float, float] = SEED_RANGE,
                     extrapolation: tuple[float, float] = SEED_EXTRAPOLATION,
                     n_test: int = 400) -> Dataset:
    """A regression :class:`Dataset` of ``f``: ``n_points`` even x in ``train_range`` (train),
    an even grid of ``n_test`` over ``extrapolation`` (test), as ``(n, 1)`` float32."""
    if n_points < 2:
        raise UsageError(f"n_points must be ≥ 2 (got {n_points})")
    lo, hi = train_range
    if not (extrapolation[0] <= lo < hi <= extrapolation[1]):
        raise UsageError(f"the extrapolation range {extrapolation} must contain the training "
                         f"range {train_range}")
    x_train = np.linspace(lo, hi, n_points)
    check_finite(f, x_train, where=f"the training range [{lo:g}, {hi:g}]")
    x_test = np.linspace(*extrapolation, n_test)
    check_finite(f, x_test, where=f"the extrapolation range [{extrapolation[0]:g}, "
                                  f"{extrapolation[1]:g}]")

    def split(x: np.ndarray) -> Split:
        return Split(torch.tensor(x, dtype=torch.float32).view(-1, 1),
                     torch.tensor(f(x), dtype=torch.float32).view(-1, 1), torch.arange(len(x)))

    is_seed = f.source == SEED_EXPRESSION and n_points == 100 and tuple(train_range) == \
        SEED_RANGE and tuple(extrapolation) == SEED_EXTRAPOLATION and n_test == 400
    if is_seed:  # the built-in `curve` set: a run of it reloads through load_from_spec
        from shenjing.data import load_dataset

        return load_dataset("curve")
    spec = {"name": "function", "function": f.source, "n_points": n_points,
            "train_range": list(train_range), "extrapolation": list(extrapolation),
            "n_test": n_test}
    return Dataset(name="function", train=split(x_train), test=split(x_test), classes=(),
                   task="regression", spec=spec,
                   notes=(f"y = {f.source}, trained on {n_points} points in "
                          f"[{lo:g}, {hi:g}]",))


def _recipe(run: Run) -> dict[str, Any]:
    """The function and ranges a fit run was trained on (from fit/function.json or the spec)."""
    path = run.path / "fit" / "function.json"
    if path.is_file():
        return _io.read_json(path)
    data = run.manifest.get("data", {})
    if data.get("name") == "curve":
        return {"function": SEED_EXPRESSION, "kind": "expression",
                "n_points": int(data.get("n_points", 100)),
                "train_range": list(data.get("train_range", SEED_RANGE)),
                "extrapolation": list(data.get("extrapolation", SEED_EXTRAPOLATION)),
                "n_test": int(data.get("n_test", 400))}
    raise UsageError(f"run {run.path} was trained on {data.get('name')!r}, not on a function "
                     "of x; `shenjing fit` needs a curve_mlp run (or a new --run folder)")


def _trained(path: Path) -> bool:
    if not (path / "run.json").is_file():
        return False
    return Run(path).stage("train").get("status") == "done"


def fit(run: str | os.PathLike[str] | Run = "runs/fit", *, function: str | None = None,
        hidden: int = 64, depth: int = 1, epochs: int | None = None,
        passes_per_epoch: int | None = None, lr: float | None = None, seed: int = 0,
        polynomials: tuple[str, ...] | list[str] = ("lagrange", "chebyshev"),
        degree: int | None = None, n_points: int = 100,
        train_range: tuple[float, float] = SEED_RANGE,
        extrapolation: tuple[float, float] | None = None, n_eval: int = 1401,
        device: str = "auto", retrain: bool = False, gif: bool = True,
        progress: bool = True, trust_code: bool = False) -> FitResult:
    """Train (or reuse) a ``curve_mlp`` run on ``function`` and write the fitting study.

    Defaults are seed 001's: its function, 100 points on [−5, 5], one hidden layer of 64,
    Adam 1e-3 on the full batch, 20 recorded epochs × 250 passes; the study looks at
    [−7, 7]. A run that is already trained is analysed without retraining (``retrain=True``
    starts it over); a killed training resumes. A function given as ``file.py:f`` is code:
    reopening the run runs it only if you made the run here or pass ``trust_code=True``.
    """
    path = run.path if isinstance(run, Run) else Path(run)
    if depth < 1 or hidden < 1:
        raise UsageError(f"hidden and depth must be ≥ 1 (got hidden={hidden}, depth={depth})")
    lo, hi = (float(v) for v in train_range)
    if not lo < hi:
        raise UsageError(f"train range must have min < max (got {train_range})")
    if extrapolation is None:
        extrapolation = (lo - 0.2 * (hi - lo), hi + 0.2 * (hi - lo))
    extrapolation = (float(extrapolation[0]), float(extrapolation[1]))
    poly_specs = [parse_poly(p, degree) for p in polynomials]

    if _trained(path) and not retrain:
        trained = run if isinstance(run, Run) else Run(path, trust_code=trust_code)
        trained.require_trust()  # the recipe may name a function in a file: code
        recipe = _recipe(trained)
        if function is not None and parse_function(function).source != recipe["function"]:
            raise RunError(f"run {path} was trained on {recipe['function']!r}, not "
                           f"{function!r}; use another --run folder or --retrain")
        f = parse_function(recipe["function"])
        dataset = function_dataset(f, n_points=int(recipe["n_points"]),
                                   train_range=tuple(recipe["train_range"]),
                                   extrapolation=tuple(recipe["extrapolation"]),
                                   n_test=int(recipe.get("n_test", 400)))
        extrapolation = (float(recipe["extrapolation"][0]), float(recipe["extrapolation"][1]))
    else:
        from shenjing.training import train

        f = parse_function(function)
        dataset = function_dataset(f, n_points=n_points, train_range=(lo, hi),
                                   extrapolation=extrapolation)
        resume = (path / "run.json").is_file() and not retrain
        trained = train("curve_mlp", dataset, run=path, epochs=epochs, lr=lr, seed=seed,
                        passes_per_epoch=passes_per_epoch, device=device, resume=resume,
                        force=retrain, progress=progress,
                        model_kwargs={"hidden": int(hidden), "depth": int(depth)})
        (trained.path / "fit").mkdir(exist_ok=True)
        _io.write_json(trained.path / "fit" / "function.json",
                       {"function": f.source, "kind": f.kind, "n_points": n_points,
                        "train_range": [lo, hi], "extrapolation": list(extrapolation),
                        "n_test": len(dataset.test)})
        trained.record_code()  # a function from a file is code this user ran: trust it
    with trained.running_stage("fit"):
        return _study(trained, f, dataset, poly_specs, extrapolation, n_eval, gif)


def _study(run: Run, f: TargetFunction, dataset: Dataset,
           poly_specs: list[tuple[str, int | None]], extrapolation: tuple[float, float],
           n_eval: int, gif: bool) -> FitResult:
    from shenjing.plot import approx as plot_approx

    out = run.subdir("fit")
    lo, hi = (float(v) for v in dataset.spec["train_range"])
    train_range = (lo, hi)
    x_train = dataset.train.x.numpy().astype(np.float64).ravel()
    y_train = dataset.train.y.numpy().astype(np.float64).ravel()
    x = np.linspace(extrapolation[0], extrapolation[1], n_eval)
    y_true = f(x)
    model = run.model("final")
    y_net = predict_1d(model, x)

    errors = {"net": fit_errors(x, y_true, y_net, train_range).as_dict()}
    poly_values, labels, methods, degrees = [], [], [], []
    for method, deg in poly_specs:
        p = polynomial_fit(x_train, y_train, method=method, degree=deg)
        if p.label in labels:
            continue
        values = p(x)
        poly_values.append(values)
        labels.append(p.label)
        methods.append(method)
        degrees.append(p.degree)
        errors[p.label] = fit_errors(x, y_true, values, train_range).as_dict()
    _io.save_npz(out / "fit.npz", x=x, y_true=y_true, y_net=y_net,
                 in_range=in_range_mask(x, train_range), x_train=x_train, y_train=y_train,
                 poly_values=np.array(poly_values).reshape(len(poly_values), n_eval),
                 poly_labels=np.array(labels, dtype=str), poly_methods=np.array(methods, dtype=str),
                 poly_degrees=np.array(degrees, dtype=np.int64))

    epochs = run.epochs
    y_epochs = np.stack([predict_1d(run.model(e), x) for e in epochs])
    loss_by_epoch = {int(m["epoch"]): m.get("train_loss") for m in run.metrics()}
    losses = [loss_by_epoch.get(e) for e in epochs]
    _io.save_npz(out / "epochs.npz", epochs=np.array(epochs), y_net=y_epochs,
                 train_loss=np.array([np.nan if v is None else v for v in losses], dtype=float))

    figures: list[Path] = []
    polys = dict(zip(labels, poly_values, strict=True))
    fig = plot_approx.plot_fit(x, y_true, y_net, polynomials=polys,
                               x_train=x_train, y_train=y_train, train_range=train_range,
                               errors=errors, title=f"y = {f.source}")
    figures += save_figure(fig, run.figures_dir, "fit-curve")
    abs_err = {"net": np.abs(y_net - y_true), **{lab: np.abs(v - y_true)
                                                   for lab, v in polys.items()}}
    figures += save_figure(plot_approx.plot_fit_errors(x, abs_err, train_range=train_range),
                           run.figures_dir, "fit-errors")

    decomposition = None
    try:
        dec = relu_decomposition(model)
    except UsageError:
        dec = None
    if dec is not None:
        order = dec.kink_order()
        pieces = dec.pieces(x)
        sums = dec.partial_sums(x, order)
        k = dec.kinks
        decomposition = {
            "n_units": dec.n_units,
            "n_active": int(dec.active(x).sum()),
            "n_kinks_in_range": int(np.sum(np.isfinite(k) & (k >= train_range[0])
                                           & (k <= train_range[1]))),
            "max_abs_diff_float64": float(np.max(np.abs(
                sums[-1] - predict_1d(model, x, dtype=torch.float64)))),
            "max_abs_diff_float32": float(np.max(np.abs(sums[-1] - y_net))),
        }
        _io.save_npz(out / "decomposition.npz", w=dec.w, b=dec.b, v=dec.v, c=np.array(dec.c),
                     kinks=k, order=order, pieces=pieces, partial_sums=sums)
        figures += save_figure(plot_approx.plot_decomposition(
            x, pieces, k, sums, y_net=y_net, y_true=y_true, train_range=train_range),
            run.figures_dir, "fit-decomposition")

    regions = linear_regions(model, float(x[0]), float(x[-1]))
    _io.save_npz(out / "regions.npz", boundaries=regions.boundaries, edges=regions.edges,
                 slopes=regions.slopes, intercepts=regions.intercepts, patterns=regions.patterns)
    n_in = int(np.sum((regions.boundaries >= train_range[0])
                      & (regions.boundaries <= train_range[1]))) + 1
    figures += save_figure(plot_approx.plot_linear_regions(
        x, y_net, regions.boundaries, regions.slopes, regions.edges, y_true=y_true,
        train_range=train_range), run.figures_dir, "fit-regions")
    figures += save_figure(plot_approx.plot_fit_epochs(x, y_true, y_epochs, epochs,
                                                       train_range=train_range, losses=losses),
                           run.figures_dir, "fit-epochs")
    gif_path = None
    if gif:
        gif_path = _save_gif(x, y_true, y_epochs, epochs, losses, train_range, out)

    summary = {
        "function": f.source, "kind": f.kind, "train_range": list(train_range),
        "extrapolation": list(extrapolation), "n_points": int(x_train.size),
        "n_eval": int(n_eval), "model": run.manifest["model"].get("kwargs", {}),
        "epoch": run.final_epoch, "errors": errors, "decomposition": decomposition,
        "regions": {"n_regions": regions.n_regions, "n_in_range": n_in},
        "figures": [str(p.relative_to(run.path)) for p in figures],
        "gif": None if gif_path is None else str(gif_path.relative_to(run.path)),
    }
    _io.write_json(out / "summary.json", summary)
    run.update_stage("fit", "done", function=f.source, summary="fit/summary.json",
                     rmse={k: {"in": v["rmse_in"], "out": v["rmse_out"]}
                           for k, v in errors.items()})
    return FitResult(run, f.source, errors, summary, figures)




def _save_gif(x: np.ndarray, y_true: np.ndarray, y_epochs: np.ndarray, epochs: list[int],
              losses: list[Any], train_range: tuple[float, ...], out: Path) -> Path:
    import matplotlib.pyplot as plt

    from shenjing.plot.animate import figure_to_array, save_gif
    from shenjing.plot.approx import plot_fit_frame

    frames = []
    for e, y, loss in zip(epochs, y_epochs, losses, strict=True):
        fig = plot_fit_frame(x, y_true, y, epoch=int(e), train_range=(train_range[0],
                                                                      train_range[1]), loss=loss)
        try:
            frames.append(figure_to_array(fig))
        finally:
            plt.close(fig)
    return save_gif(frames, out / "fit-epochs.gif", duration_ms=400)
