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
from shenjing._checks import value_range
from shenjing._device import resolve_device
from shenjing.analysis.expr import SEED_EXPRESSION, TargetFunction, check_finite, parse_function
from shenjing.analysis.fit import (
    METHODS,
    fit_errors,
    in_range_mask,
    linear_regions,
    polynomial_fit,
    predict_1d,
    relu_decomposition,
)
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


#: the highest polynomial degree a baseline may have: a degree-d fit solves a (d+1)-square
#: system, so a degree of a million would need terabytes
MAX_DEGREE = 1000
#: the most training points: the net trains on all of them at once (full batch)
MAX_POINTS = 100_000


def parse_poly(spec: str, degree: int | None) -> tuple[str, int | None]:
    """``'lagrange'`` / ``'chebyshev:15'`` → ``(method, degree)`` (``degree`` is the default).

    The method must be one of :data:`~shenjing.analysis.fit.METHODS` and a degree a whole
    number from 0 to :data:`MAX_DEGREE`; each refusal names ``--poly``.
    """
    from shenjing._checks import bounded_int, choice

    method, _, deg = spec.strip().lower().partition(":")
    choice("--poly", method, METHODS)
    if not deg:
        return method, degree
    try:
        return method, bounded_int("--poly", deg, low=0, high=MAX_DEGREE)
    except UsageError:
        raise UsageError(f"--poly {spec!r}: the degree after ':' must be a whole number from "
                         f"0 to {MAX_DEGREE}, e.g. --poly chebyshev:15") from None


def function_dataset(f: TargetFunction, *, n_points: int = 100,
                     train_range: tuple[float, float] = SEED_RANGE,
                     extrapolation: tuple[float, float] = SEED_EXTRAPOLATION,
                     n_test: int = 400) -> Dataset:
    """A regression :class:`Dataset` of ``f``: ``n_points`` even x in ``train_range`` (train),
    an even grid of ``n_test`` over ``extrapolation`` (test), as ``(n, 1)`` float32."""
    _check_points(n_points)
    lo, hi = train_range
    _check_ranges((float(lo), float(hi)), (float(extrapolation[0]), float(extrapolation[1])))
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
    """The function and ranges a fit run was trained on: fit/function.json, else the data
    spec in run.json (a run whose training was killed before function.json was written)."""
    path = run.path / "fit" / "function.json"
    if path.is_file():
        return _io.read_json(path)
    data = run.manifest.get("data", {})
    if data.get("name") in ("curve", "function"):
        return {"function": data.get("function", SEED_EXPRESSION), "kind": "expression",
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


def _check_points(n_points: int) -> int:
    from shenjing._checks import bounded_int

    return bounded_int("--points", n_points, low=2, high=MAX_POINTS, example=100,
                       why="the net trains on all of them at once")


def _check_ranges(train_range: tuple[float, float],
                  extrapolation: tuple[float, float] | None) -> None:
    """Both ranges finite with min < max, the studied range containing the training one."""
    given = [("--range", train_range)] + ([("--extrapolate", extrapolation)]
                                          if extrapolation is not None else [])
    for option, pair in given:
        value_range(option, pair, example="-5:5")
    if extrapolation is not None and not (
            extrapolation[0] <= train_range[0] and train_range[1] <= extrapolation[1]):
        lo, hi = train_range
        raise UsageError(f"--extrapolate {extrapolation[0]:g}:{extrapolation[1]:g} must "
                         f"contain the training range --range {lo:g}:{hi:g}, e.g. "
                         f"--extrapolate {lo - 0.2 * (hi - lo):g}:{hi + 0.2 * (hi - lo):g}")


def _check_degrees(poly_specs: list[tuple[str, int | None]], n_points: int) -> None:
    """Every baseline's degree fits the points: ≤ points − 1 (and ≤ :data:`MAX_DEGREE`)."""
    for method, deg in poly_specs:
        if deg is None and n_points - 1 > MAX_DEGREE:
            raise UsageError(f"--points {n_points} gives the {method} baseline degree "
                             f"{n_points - 1} (points − 1), above the {MAX_DEGREE} allowed; "
                             f"pass --degree (e.g. --degree 50) or fewer --points")
        if deg is not None and deg > n_points - 1:
            raise UsageError(f"--degree {deg} (for {method}) needs at least {deg + 1} training "
                             f"points, and the fit has {n_points}: choose a degree ≤ "
                             f"{n_points - 1}, e.g. --degree {min(15, n_points - 1)}")


#: the options :func:`fit` compares with what an existing run was trained with
_SETTINGS = {"hidden": "--hidden", "depth": "--depth", "epochs": "--epochs",
             "passes_per_epoch": "--passes", "lr": "--lr", "seed": "--seed",
             "n_points": "--points", "train_range": "--range",
             "extrapolation": "--extrapolate"}


def _recorded_settings(run: Run, recipe: dict[str, Any]) -> dict[str, Any]:
    """What the run was trained with, under :data:`_SETTINGS`' keys (None: not recorded)."""
    manifest = run.manifest
    config = manifest.get("config", {})
    kwargs = manifest.get("model", {}).get("kwargs", {})
    return {"hidden": kwargs.get("hidden"), "depth": kwargs.get("depth"),
            "epochs": config.get("epochs"), "passes_per_epoch": config.get("passes_per_epoch"),
            "lr": config.get("lr"), "seed": config.get("seed", manifest.get("seed")),
            "n_points": recipe.get("n_points"), "train_range": recipe.get("train_range"),
            "extrapolation": recipe.get("extrapolation")}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (tuple, list)) or isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(np.isclose(float(a), float(b), rtol=1e-12, atol=0.0))


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ":".join(f"{float(v):g}" for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _check_same_settings(run: Run, recipe: dict[str, Any], asked: dict[str, Any]) -> None:
    """Refuse options given for an existing run that differ from what it was trained with:
    they would be silently ignored (the run is studied, or resumed, as it was made)."""
    recorded = _recorded_settings(run, recipe)
    differ = [f"{_SETTINGS[k]} {_show(recorded[k])} (you asked {_show(v)})"
              for k, v in asked.items()
              if v is not None and recorded.get(k) is not None and not _same(v, recorded[k])]
    if differ:
        raise UsageError(f"run {run.path} was trained with other settings: {'; '.join(differ)}. "
                         "Leave those options out to study the run as it is, pass --retrain "
                         "to train it again with yours, or choose another --run folder")


def _check_run_folder(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise UsageError(f"--run {path} is a file, not a run folder; choose a folder, e.g. "
                         "--run runs/fit")
    if path.is_dir() and not (path / "run.json").exists() and any(path.iterdir()):
        raise RunError(f"--run {path} exists and is not a shenjing run; refusing to write into "
                       "it. Choose an empty or new --run folder")


def fit(run: str | os.PathLike[str] | Run = "runs/fit", *, function: str | None = None,
        hidden: int | None = None, depth: int | None = None, epochs: int | None = None,
        passes_per_epoch: int | None = None, lr: float | None = None,
        seed: int | None = None,
        polynomials: tuple[str, ...] | list[str] = ("lagrange", "chebyshev"),
        degree: int | None = None, n_points: int | None = None,
        train_range: tuple[float, float] | None = None,
        extrapolation: tuple[float, float] | None = None, n_eval: int = 1401,
        device: str | torch.device = "auto", retrain: bool = False, gif: bool = True,
        progress: bool = True, trust_code: bool = False) -> FitResult:
    """Train (or reuse) a ``curve_mlp`` run on ``function`` and write the fitting study.

    Defaults are seed 001's: its function, 100 points on [−5, 5], one hidden layer of 64,
    Adam 1e-3 on the full batch, 20 recorded epochs × 250 passes, seed 0; the study looks
    at [−7, 7]. A run that is already trained is analysed without retraining
    (``retrain=True`` starts it over); a killed training resumes. Options left as None take
    the run's own settings; one given that differs from what an existing run was trained
    with is refused (it could not apply without retraining). Every value is checked before
    anything is written. A function given as ``file.py:f`` is code: reopening the run runs
    it only if you made the run here or pass ``trust_code=True``.
    """
    from shenjing._checks import bounded_int, finite_float, positive_int, random_seed

    path = run.path if isinstance(run, Run) else Path(run)
    for option, value in (("--hidden", hidden), ("--depth", depth), ("--epochs", epochs),
                          ("--passes", passes_per_epoch)):
        if value is not None:
            positive_int(option, value)
    if lr is not None:
        finite_float("--lr", lr, low=0.0, low_open=True, example="0.001")
    if seed is not None:
        random_seed("--seed", seed)
    if n_points is not None:
        _check_points(n_points)
    if degree is not None:
        bounded_int("--degree", degree, low=0, high=MAX_DEGREE, example=15)
    asked_range = None if train_range is None else (float(train_range[0]),
                                                    float(train_range[1]))
    asked_extrapolation = None if extrapolation is None else (float(extrapolation[0]),
                                                              float(extrapolation[1]))
    lo, hi = asked_range or SEED_RANGE
    _check_ranges((lo, hi), asked_extrapolation)
    if not polynomials:
        raise UsageError("--poly names no baseline; give lagrange, chebyshev or both, e.g. "
                         "--poly lagrange,chebyshev:15")
    poly_specs = [parse_poly(p, degree) for p in polynomials]
    dev = resolve_device(device, option="--device")
    _check_run_folder(path)
    asked = {"hidden": hidden, "depth": depth, "epochs": epochs,
             "passes_per_epoch": passes_per_epoch, "lr": lr, "seed": seed,
             "n_points": n_points, "train_range": asked_range,
             "extrapolation": asked_extrapolation}

    existing = (path / "run.json").is_file() and not retrain
    if existing:
        known = run if isinstance(run, Run) else Run(path, trust_code=trust_code)
        recipe = _recipe(known)
        if function is not None and parse_function(function).source != recipe["function"]:
            raise RunError(f"--function {function!r}: run {path} was trained on "
                           f"{recipe['function']!r}, not {function!r}; leave --function out to "
                           "study the run as it is, use another --run folder or --retrain")
        _check_same_settings(known, recipe, asked)
        _check_degrees(poly_specs, int(recipe["n_points"]))
    if existing and _trained(path):
        trained = known
        trained.require_trust()  # the recipe may name a function in a file: code
        f = parse_function(recipe["function"])
        dataset = function_dataset(f, n_points=int(recipe["n_points"]),
                                   train_range=tuple(recipe["train_range"]),
                                   extrapolation=tuple(recipe["extrapolation"]),
                                   n_test=int(recipe.get("n_test", 400)))
        extrapolation = (float(recipe["extrapolation"][0]), float(recipe["extrapolation"][1]))
    else:
        from shenjing.training import train

        points = 100 if n_points is None else n_points
        _check_degrees(poly_specs, points)
        if asked_extrapolation is None:
            asked_extrapolation = (lo - 0.2 * (hi - lo), hi + 0.2 * (hi - lo))
        extrapolation = asked_extrapolation
        f = parse_function(function)
        dataset = function_dataset(f, n_points=points, train_range=(lo, hi),
                                   extrapolation=extrapolation)
        trained = train("curve_mlp", dataset, run=path, epochs=epochs, lr=lr,
                        seed=0 if seed is None else seed, passes_per_epoch=passes_per_epoch,
                        device=dev, resume=existing, force=retrain, progress=progress,
                        model_kwargs={"hidden": 64 if hidden is None else int(hidden),
                                      "depth": 1 if depth is None else int(depth)})
        (trained.path / "fit").mkdir(exist_ok=True)
        _io.write_json(trained.path / "fit" / "function.json",
                       {"function": f.source, "kind": f.kind, "n_points": points,
                        "train_range": [lo, hi], "extrapolation": list(extrapolation),
                        "n_test": len(dataset.test)})
        trained.record_code()  # a function from a file is code this user ran: trust it
    with trained.running_stage("fit"):
        return _study(trained, f, dataset, poly_specs, extrapolation, n_eval, gif)


def _study(run: Run, f: TargetFunction, dataset: Dataset,
           poly_specs: list[tuple[str, int | None]], extrapolation: tuple[float, float],
           n_eval: int, gif: bool) -> FitResult:
    from shenjing.plot import fit as plot_fit_figs

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
    fig = plot_fit_figs.plot_fit(x, y_true, y_net, polynomials=polys,
                               x_train=x_train, y_train=y_train, train_range=train_range,
                               errors=errors, title=f"y = {f.source}")
    figures += save_figure(fig, run.figures_dir, "fit-curve")
    abs_err = {"net": np.abs(y_net - y_true), **{lab: np.abs(v - y_true)
                                                   for lab, v in polys.items()}}
    figures += save_figure(plot_fit_figs.plot_fit_errors(x, abs_err, train_range=train_range),
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
        figures += save_figure(plot_fit_figs.plot_decomposition(
            x, pieces, k, sums, y_net=y_net, y_true=y_true, train_range=train_range),
            run.figures_dir, "fit-decomposition")

    regions = linear_regions(model, float(x[0]), float(x[-1]))
    _io.save_npz(out / "regions.npz", boundaries=regions.boundaries, edges=regions.edges,
                 slopes=regions.slopes, intercepts=regions.intercepts, patterns=regions.patterns)
    n_in = int(np.sum((regions.boundaries >= train_range[0])
                      & (regions.boundaries <= train_range[1]))) + 1
    figures += save_figure(plot_fit_figs.plot_linear_regions(
        x, y_net, regions.boundaries, regions.slopes, regions.edges, y_true=y_true,
        train_range=train_range), run.figures_dir, "fit-regions")
    figures += save_figure(plot_fit_figs.plot_fit_epochs(x, y_true, y_epochs, epochs,
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
    from shenjing.plot.fit import plot_fit_frame

    frames = []
    for e, y, loss in zip(epochs, y_epochs, losses, strict=True):
        fig = plot_fit_frame(x, y_true, y, epoch=int(e), train_range=(train_range[0],
                                                                      train_range[1]), loss=loss)
        try:
            frames.append(figure_to_array(fig))
        finally:
            plt.close(fig)
    return save_gif(frames, out / "fit-epochs.gif", duration_ms=400)
