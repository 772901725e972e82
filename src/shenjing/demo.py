"""``run_demo``: train the seeds' models, run every analysis, write the reports + an index.

The demo is a list of steps over a few runs. Each step records itself in its run's
``run.json`` (``stages["demo:<step>"]`` with the options it ran with), so running the demo
again reuses every finished step; ``force=True`` redoes them all.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from shenjing.data import Dataset, load_dataset
from shenjing.errors import UsageError
from shenjing.runs import Run

console = Console(stderr=True, emoji=False)


@dataclass(frozen=True)
class Step:
    """One named piece of work on one run, with the options that define its result."""

    name: str
    fn: Callable[[Run], Any]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoResult:
    """Where the index and the reports are, and how long it took."""

    index: Path
    reports: dict[str, Path]
    seconds: float
    step_seconds: dict[str, float]


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of the demo's work (``fast`` shrinks them)."""

    epochs: int | None
    grid: int
    line_steps: int
    tsne_n: int | None
    hessian_k: int


def _plan(data: str, fast: bool) -> DemoPlan:
    if fast:
        return DemoPlan(epochs=3, grid=11, line_steps=21, tsne_n=300, hessian_k=3)
    if data == "digits":
        return DemoPlan(epochs=None, grid=21, line_steps=41, tsne_n=None, hessian_k=5)
    return DemoPlan(epochs=5, grid=21, line_steps=41, tsne_n=2000, hessian_k=5)


def _done(run: Run, step: Step) -> bool:
    rec = run.stage(f"demo:{step.name}")
    return rec.get("status") == "done" and rec.get("options") == json.loads(
        json.dumps(step.options, default=str))


def _run_steps(run: Run, steps: list[Step], *, force: bool, timings: dict[str, float],
               label: str) -> None:
    for step in steps:
        key = f"{label}:{step.name}"
        if not force and _done(run, step):
            console.print(f"[dim]{key}: reused[/dim]")
            continue
        started = time.perf_counter()
        with console.status(f"{key} …"):
            step.fn(run)
        timings[key] = time.perf_counter() - started
        run.update_stage(f"demo:{step.name}", "done", options=step.options,
                         seconds=round(timings[key], 2))
        console.print(f"{key}: {timings[key]:.1f} s")


def _train(model: str, dataset: Dataset, folder: Path, plan: DemoPlan, *, force: bool,
           device: str, timings: dict[str, float]) -> Run:
    """Train (or reuse) one zoo model's run."""
    from shenjing.training import train

    path = folder / model
    if (path / "run.json").exists() and not force:
        run = Run(path)
        if run.stage("train").get("status") == "done":
            console.print(f"[dim]{model}:train: reused[/dim]")
            return run
        started = time.perf_counter()
        run = train(model, dataset, epochs=plan.epochs, run=path, resume=True, device=device)
    else:
        started = time.perf_counter()
        run = train(model, dataset, epochs=plan.epochs, run=path, force=True, device=device)
    timings[f"{model}:train"] = time.perf_counter() - started
    console.print(f"{model}:train: {timings[f'{model}:train']:.1f} s, test accuracy "
                  f"{run.metrics()[-1]['test_accuracy']:.3f}")
    return run


def _classifier_steps(model: str, plan: DemoPlan, device: str) -> list[Step]:
    """The analyses for one classifier run, chosen to fit what that seed showed."""
    from shenjing.stages import dynamics as dyn
    from shenjing.stages import landscape as ls
    from shenjing.stages import maps

    steps = [Step("dynamics", lambda r: dyn.dynamics_stage(r), {})]
    steps += _embedding_steps(model, plan, device)
    if model in ("simple_cnn", "dropout_cnn", "mnist_cnn"):
        steps.append(Step("maps-conv1", lambda r: maps.maps_stage(
            r, "conv1", index=0, epochs=("init", "final"), device=device), {"index": 0}))
        steps.append(Step("filters-conv1", lambda r: maps.filters_stage(
            r, "conv1", epochs=("init", "final")), {}))
    else:
        steps.append(Step("filters-fc1", lambda r: maps.filters_stage(
            r, "fc1", epochs=("init", "final")), {}))
    steps.append(Step("landscape-line", lambda r: ls.landscape_line(
        r, steps=plan.line_steps, device=device, progress=False),
        {"steps": plan.line_steps}))
    if model in ("mlp", "dropout_cnn"):
        steps.append(Step("landscape-plane", lambda r: ls.landscape_plane(
            r, steps=plan.grid, device=device, progress=False), {"steps": plan.grid}))
    if model == "dropout_cnn":
        steps.append(Step("landscape-trajectory", lambda r: ls.landscape_trajectory(
            r, steps=plan.grid, device=device, progress=False), {"steps": plan.grid}))
    if model in ("mlp", "dropout_cnn"):
        # the spectral density costs ~120 Hessian-vector products: only for the small mlp
        density = model == "mlp"
        steps.append(Step("hessian", lambda r: ls.hessian(
            r, top_k=plan.hessian_k, trace=True, density=density, per_layer=density,
            device=device, progress=False), {"k": plan.hessian_k, "density": density}))
    return steps


def _embedding_steps(model: str, plan: DemoPlan, device: str) -> list[Step]:
    try:
        from shenjing.stages import embed
    except ImportError:
        return []
    layer = {"mlp": "relu1", "mnistnet": "relu2"}.get(model, "relu3")
    return [Step(f"embed-{layer}", lambda r: embed.embed_stage(
        r, layers=[layer], epochs=("init", "final"), method="tsne", n=plan.tsne_n,
        device=device), {"layer": layer, "n": plan.tsne_n})]


def run_demo(out: str | os.PathLike[str] = "runs/demo", *, data: str = "digits",
             data_dir: str | os.PathLike[str] | None = None, fast: bool = False,
             force: bool = False, device: str = "auto") -> DemoResult:
    """Train the seeds' classifiers (mlp, simple_cnn, dropout_cnn) and the function-fitting
    and space-warping studies, analyse each, write one report per run and ``index.html``.

    Figures are written as PNG only (the report inlines PNGs); each view's own command
    also writes SVG.
    """
    if data not in ("digits", "mnist", "fashion-mnist"):
        raise UsageError(f"demo data must be digits, mnist or fashion-mnist (got {data!r})")
    from shenjing.plot.save import figure_formats

    started = time.perf_counter()
    with figure_formats("png"):  # the report inlines PNGs; each view's command writes SVG
        return _demo(Path(out), data, data_dir, fast, force, device, started)


def _demo(folder: Path, data: str, data_dir: str | os.PathLike[str] | None, fast: bool,
          force: bool, device: str, started: float) -> DemoResult:
    from shenjing.report import build_index, build_report
    from shenjing.stages import fit as fit_stage
    from shenjing.stages import warp as warp_stage

    folder.mkdir(parents=True, exist_ok=True)
    plan = _plan(data, fast)
    dataset = load_dataset(data, data_dir=data_dir)
    timings: dict[str, float] = {}
    reports: dict[str, Path] = {}
    entries: list[dict[str, str]] = []
    for model in ("mlp", "simple_cnn", "dropout_cnn"):
        run = _train(model, dataset, folder, plan, force=force, device=device, timings=timings)
        _run_steps(run, _classifier_steps(model, plan, device), force=force, timings=timings,
                   label=model)
        t0 = time.perf_counter()
        reports[model] = build_report(run).path
        timings[f"{model}:report"] = time.perf_counter() - t0
        console.print(f"{model}:report: {timings[f'{model}:report']:.1f} s")
        acc = run.metrics()[-1]["test_accuracy"]
        entries.append({"href": f"{model}/report.html", "name": model, "model": model,
                        "data": data, "shows": _SHOWS[model],
                        "number": f"test accuracy {acc:.3f}"})
    t0 = time.perf_counter()
    fit_run = fit_stage.fit(folder / "curve_fit", retrain=force, progress=False,
                            epochs=8 if fast else None)
    reports["curve_fit"] = build_report(fit_run.run).path
    timings["curve_fit"] = time.perf_counter() - t0
    console.print(f"curve_fit: {timings['curve_fit']:.1f} s")
    net = fit_run.errors.get("net", {})
    entries.append({"href": "curve_fit/report.html", "name": "curve_fit", "model": "curve_mlp",
                    "data": "curve", "shows": _SHOWS["curve_fit"],
                    "number": f"RMSE in range {net.get('rmse_in', float('nan')):.3g}, "
                              f"beyond {net.get('rmse_out', float('nan')):.3g}"})
    t0 = time.perf_counter()
    warp_run = warp_stage.warp(folder / "spirals_warp", retrain=force, progress=False)
    reports["spirals_warp"] = build_report(warp_run.run).path
    timings["spirals_warp"] = time.perf_counter() - t0
    console.print(f"spirals_warp: {timings['spirals_warp']:.1f} s")
    entries.append({"href": "spirals_warp/report.html", "name": "spirals_warp",
                    "model": "mlp", "data": "spirals", "shows": _SHOWS["spirals_warp"],
                    "number": "probe accuracy by layer: " + ", ".join(
                        f"{p.get('probe_test_accuracy', 0):.2f}" for p in warp_run.probes)})
    index = build_index(entries, folder / "index.html", title="shenjing demo",
                        subtitle=f"the seeds' models on {data}; one report per run")
    return DemoResult(index=index, reports=reports, seconds=time.perf_counter() - started,
                      step_seconds=timings)


_SHOWS = {
    "mlp": "W1 hidden features (t-SNE, probes), W8 dynamics, MLP filters, W5 landscape, Hessian",
    "simple_cnn": "W2 feature maps untrained vs trained, conv filters, W8 dynamics, 1-D line",
    "dropout_cnn": "W5 loss line, filter-normalized plane, trajectory, sharpness",
    "curve_fit": "W3 the net vs polynomial interpolation, per-neuron ReLU pieces",
    "spirals_warp": "W3 how each layer bends space until the classes separate",
}

__all__ = ["DemoResult", "run_demo"]
