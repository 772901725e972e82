"""``run_demo``: train the seeds' models, run every analysis, write the reports + an index.

The demo is a list of steps over a few runs. Each step records itself in its run's
``run.json`` (``stages["demo:<step>"]`` with the options it ran with), so running the demo
again reuses every finished step; ``force=True`` redoes them all.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from shenjing import _io
from shenjing.data import Dataset, load_dataset
from shenjing.errors import DataError, UsageError
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
               label: str, quiet: bool = False) -> None:
    for step in steps:
        key = f"{label}:{step.name}"
        if not force and _done(run, step):
            console.print(f"[dim]{key}: reused[/dim]")
            continue
        started = time.perf_counter()
        with contextlib.nullcontext() if quiet else console.status(f"{key} …"):
            step.fn(run)
        timings[key] = time.perf_counter() - started
        run.update_stage(f"demo:{step.name}", "done", options=step.options,
                         seconds=round(timings[key], 2))
        console.print(f"{key}: {timings[key]:.1f} s")


def _train(model: str, dataset: Dataset, folder: Path, plan: DemoPlan, *, force: bool,
           device: str, timings: dict[str, float], progress: bool = True) -> Run:
    """Train (or reuse) one zoo model's run."""
    from shenjing.training import train

    path = folder / model
    if (path / "run.json").exists() and not force:
        run = Run(path)
        if run.stage("train").get("status") == "done":
            console.print(f"[dim]{model}:train: reused[/dim]")
            return run
        started = time.perf_counter()
        run = train(model, dataset, epochs=plan.epochs, run=path, resume=True, device=device,
                    progress=progress)
    else:
        started = time.perf_counter()
        run = train(model, dataset, epochs=plan.epochs, run=path, force=True, device=device,
                    progress=progress)
    timings[f"{model}:train"] = time.perf_counter() - started
    console.print(f"{model}:train: {timings[f'{model}:train']:.1f} s, test accuracy "
                  f"{run.metrics()[-1]['test_accuracy']:.3f}")
    return run


def _classifier_steps(model: str, plan: DemoPlan, device: str) -> list[Step]:
    """The analyses for one classifier run, chosen to fit what that seed showed."""
    from shenjing.stages import dynamics as dyn
    from shenjing.stages import filters, maps
    from shenjing.stages import hessian as hs
    from shenjing.stages import landscape as ls

    if model == "vit":  # its 28 parameter groups' dynamics figures cost ~15 s: left out
        return _sequence_steps(model, plan, device)
    steps = [Step("dynamics", lambda r: dyn.dynamics_stage(r), {})]
    if model in SEQUENCE_MODELS:
        return steps + _sequence_steps(model, plan, device)
    steps += _embedding_steps(model, plan, device)
    if model in ("simple_cnn", "dropout_cnn", "mnist_cnn"):
        steps.append(Step("maps-conv1", lambda r: maps.maps_stage(
            r, "conv1", index=0, epochs=("init", "final"), device=device), {"index": 0}))
        steps.append(Step("filters-conv1", lambda r: filters.filters_stage(
            r, "conv1", epochs=("init", "final")), {}))
    else:
        steps.append(Step("filters-fc1", lambda r: filters.filters_stage(
            r, "fc1", epochs=("init", "final")), {}))
    if model == "simple_cnn":
        steps += _looks_at_steps(plan, device)
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
        steps.append(Step("hessian", lambda r: hs.hessian(
            r, top_k=plan.hessian_k, trace=True, density=density, per_layer=density,
            device=device, progress=False), {"k": plan.hessian_k, "density": density}))
    return steps


def _looks_at_steps(plan: DemoPlan, device: str) -> list[Step]:
    """What the CNN looks at (IG and Grad-CAM with their checks), which digits excite its
    second convolution's channels, and what those channels would like to see."""
    from shenjing.stages.attribute import attribute_stage
    from shenjing.stages.units import units_stage
    from shenjing.stages.visualize import visualize_stage

    channels = list(range(8))
    return [
        Step("attribute", lambda r: attribute_stage(
            r, samples=(0, 1, 2), methods=("ig", "gradcam"), epochs=("init", "final"),
            n_faithfulness=200, device=device), {"samples": [0, 1, 2], "n": 200}),
        Step("units-relu2", lambda r: units_stage(
            r, layer="relu2", top=9, channels=channels, epochs=("init", "final"),
            device=device), {"channels": channels}),
        Step("visualize-relu2", lambda r: visualize_stage(
            r, layer="relu2", channels=channels, epochs=("final",), device=device),
            {"channels": channels})]


def _sequence_steps(model: str, plan: DemoPlan, device: str) -> list[Step]:
    """The transformer's attention or the recurrent net's states over time, and its line."""
    from shenjing.stages import landscape as ls

    if model == "vit":
        from shenjing.stages.attention import attention_stage

        # one input's maps (every view's figures, ~8 s); `shenjing attention` draws more
        steps = [Step("attention", lambda r: attention_stage(
            r, samples=(0,), epochs=("init", "final"), n=128, n_probe=500, device=device),
            {"samples": [0], "n": 128, "n_probe": 500})]
    else:
        from shenjing.stages.recurrent import recurrent_stage

        steps = [Step("recurrent", lambda r: recurrent_stage(
            r, epochs=("init", "final"), device=device), {})]
    steps.append(Step("landscape-line", lambda r: ls.landscape_line(
        r, steps=plan.line_steps, device=device, progress=False),
        {"steps": plan.line_steps}))
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


@dataclass(frozen=True)
class DemoTask:
    """What one study of the demo needs; picklable, so a worker process can run it."""

    study: str  # a zoo classifier name, "curve_fit" or "spirals_warp"
    folder: Path
    data: str
    data_dir: str | None
    plan: DemoPlan
    force: bool
    device: str
    quiet: bool = False  # no live status line (several processes share the terminal)


@dataclass(frozen=True)
class StudyResult:
    """One study's report, its line on the index page, and its seconds per stage."""

    study: str
    report: Path
    entry: dict[str, str]
    timings: dict[str, float]


#: the studies, longest first (so two workers finish close together)
STUDIES = ("dropout_cnn", "mlp", "vit", "simple_cnn", "row_lstm", "spirals_warp", "curve_fit")
#: seed 001's transformer and recurrent net: their own views instead of maps and t-SNE
SEQUENCE_MODELS = ("vit", "row_lstm")
CLASSIFIERS = ("mlp", "simple_cnn", "dropout_cnn", *SEQUENCE_MODELS)


def run_demo(out: str | os.PathLike[str] = "runs/demo", *, data: str = "digits",
             data_dir: str | os.PathLike[str] | None = None, fast: bool = False,
             force: bool = False, device: str = "auto", jobs: int | None = None,
             full: bool = False) -> DemoResult:
    """Train the seeds' classifiers (mlp, simple_cnn, dropout_cnn, vit, row_lstm) and the
    function-fitting and space-warping studies, analyse each, write one report per run and
    ``index.html``.

    The seven studies are independent: with ``jobs`` > 1 (default: 2 where there are 2+
    cores and the device is the CPU) they run in that many worker processes, one torch
    thread each, so every core is busy. Figures are written as PNG only (the report inlines
    PNGs); each view's own command also writes SVG. A study that finished before (same
    options) is reused; ``force`` redoes everything.

    ``full`` adds seed 001's adversarial studies, which do not fit the plain demo's minute:
    the GAN on digits (200 epochs, ~40 s) and DANN MNIST → digits (source only, DANN, MMD
    penalty; MNIST from ``data_dir``, which ``full`` then needs also with ``data='digits'``).
    """
    from shenjing._checks import choice, positive_int
    from shenjing._device import resolve_device
    from shenjing.plot.save import figure_formats

    choice("--data", data, ("digits", "mnist", "fashion-mnist"))
    # each study's stages take the device as given and resolve it as they start: "auto"
    # also lets a landscape resume with the device its stored points were computed on
    on_cpu = resolve_device(device, option="--device").type == "cpu"
    if jobs is None:
        jobs = min(2, os.cpu_count() or 1) if on_cpu else 1
    positive_int("--jobs", jobs)
    started = time.perf_counter()
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {folder} is a file, not a folder; give a folder for the "
                         "demo's runs, e.g. --out runs/demo")
    # the data first (a bad --data-dir is refused before the folder exists); the studies
    # load it again in their own processes
    load_dataset(data, data_dir=data_dir)
    if full:  # DANN's source domain is MNIST: its files are checked before anything is written
        try:
            load_dataset("mnist", data_dir=data_dir)
        except DataError as exc:
            raise DataError(f"--full's DANN study trains on MNIST (→ digits): {exc}") from None
    _io.make_folder(folder)
    plan = _plan(data, fast)
    tasks = [DemoTask(study, folder, data, str(data_dir) if data_dir else None, plan, force,
                      device, quiet=jobs > 1) for study in STUDIES]
    results = [run_study(t) for t in tasks] if jobs == 1 else _in_workers(tasks, jobs)
    by_study = {r.study: r for r in results}
    ordered = [by_study[s] for s in (*CLASSIFIERS, "curve_fit", "spirals_warp")]
    # after the studies: one side of the comparison is the mlp study's run
    with figure_formats("png"):
        ordered.append(_comparison_study(DemoTask(COMPARISON, folder, data,
                                                  str(data_dir) if data_dir else None, plan,
                                                  force, device), {}))
        if full:
            ordered += _adversarial_studies(folder, data_dir=data_dir, device=device,
                                            force=force)
    from shenjing.report import build_index

    index = build_index([r.entry for r in ordered], folder / "index.html",
                        title="shenjing demo",
                        subtitle=f"the seeds' models on {data}; one report per run")
    timings = {k: v for r in ordered for k, v in r.timings.items()}
    return DemoResult(index=index, reports={r.study: r.report for r in ordered},
                      seconds=time.perf_counter() - started, step_seconds=timings)


def _adversarial_studies(folder: Path, *, data_dir: str | os.PathLike[str] | None,
                         device: str, force: bool) -> list[StudyResult]:
    """``demo --full``'s GAN and DANN studies (each trained or reused, with its report)."""
    from shenjing.stages import dann as dann_stage
    from shenjing.stages import gan as gan_stage

    results = []
    for name, study in (("gan", lambda: gan_stage.demo_study(folder, data="digits",
                                                             device=device, force=force)),
                        ("dann", lambda: dann_stage.demo_study(folder, data="digits",
                                                               data_dir=data_dir,
                                                               device=device, force=force))):
        t0 = time.perf_counter()
        entry = study()
        seconds = time.perf_counter() - t0
        console.print(f"{name}: {seconds:.1f} s")
        results.append(StudyResult(name, folder / entry["href"], entry, {name: seconds}))
    return results


def _in_workers(tasks: list[DemoTask], jobs: int) -> list[StudyResult]:
    """Run the studies in ``jobs`` fresh processes (spawned: no forked OpenMP state)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context,
                             initializer=_worker_init) as pool:
        return list(pool.map(run_study, tasks))


def _worker_init() -> None:
    """One torch thread and one BLAS thread per worker: the workers share the cores between
    them (two workers each waking two BLAS threads made the probes 5× slower)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)  # for the life of the worker process


def run_study(task: DemoTask) -> StudyResult:
    """One study of the demo, start to report (reusing what is done)."""
    from shenjing.plot.save import figure_formats

    timings: dict[str, float] = {}
    with figure_formats("png"):  # the report inlines PNGs; each view's command writes SVG
        if task.study in CLASSIFIERS:
            return _classifier_study(task, timings)
        return _function_study(task, timings)


def _classifier_study(task: DemoTask, timings: dict[str, float]) -> StudyResult:
    from shenjing.report import build_report

    model = task.study
    dataset = load_dataset(task.data, data_dir=task.data_dir)
    run = _train(model, dataset, task.folder, task.plan, force=task.force,
                 device=task.device, timings=timings, progress=not task.quiet)
    _run_steps(run, _classifier_steps(model, task.plan, task.device), force=task.force,
               timings=timings, label=model, quiet=task.quiet)
    t0 = time.perf_counter()
    report = build_report(run).path
    timings[f"{model}:report"] = time.perf_counter() - t0
    console.print(f"{model}:report: {timings[f'{model}:report']:.1f} s")
    acc = run.metrics()[-1]["test_accuracy"]
    entry = {"href": f"{model}/report.html", "name": model, "model": model,
             "data": task.data, "shows": _SHOWS[model], "number": f"test accuracy {acc:.3f}"}
    return StudyResult(model, report, entry, timings)


def _function_study(task: DemoTask, timings: dict[str, float]) -> StudyResult:
    """Seed 001's curve fit or the space-warping net, reused when already done."""
    from shenjing.report import build_report
    from shenjing.stages import fit as fit_stage
    from shenjing.stages import warp as warp_stage

    t0 = time.perf_counter()
    path = task.folder / task.study
    options = {"fast": task.plan.epochs == 3}
    if not task.force and _study_done(path, options):
        console.print(f"[dim]{task.study}: reused[/dim]")
        run = Run(path)
        report = path / "report.html"
        number = run.stage("demo:study").get("number", "")
    elif task.study == "curve_fit":
        fitted = fit_stage.fit(path, retrain=task.force, progress=False,
                               epochs=8 if task.plan.epochs == 3 else None, device=task.device)
        run = fitted.run
        net = fitted.errors.get("net", {})
        number = (f"RMSE in range {net.get('rmse_in', float('nan')):.3g}, beyond "
                  f"{net.get('rmse_out', float('nan')):.3g}")
    else:
        warped = warp_stage.warp(path, retrain=task.force, progress=False, device=task.device)
        run = warped.run
        number = "probe accuracy by layer: " + ", ".join(
            f"{p.get('probe_test_accuracy', 0):.2f}" for p in warped.probes)
    if run.stage("demo:study").get("status") != "done" or task.force or \
            not (path / "report.html").is_file() or \
            run.stage("demo:study").get("options") != options:
        report = build_report(run).path
        timings[task.study] = time.perf_counter() - t0
        run.update_stage("demo:study", "done", options=options, number=number,
                         seconds=round(timings[task.study], 2))
        console.print(f"{task.study}: {timings[task.study]:.1f} s")
    model, data = ("curve_mlp", "curve") if task.study == "curve_fit" else ("mlp", "spirals")
    entry = {"href": f"{task.study}/report.html", "name": task.study, "model": model,
             "data": data, "shows": _SHOWS[task.study], "number": number}
    return StudyResult(task.study, report, entry, timings)


#: the comparison's folder under the demo's, and its SGD side's run
COMPARISON = "compare-mlp"
SGD_RUN = "mlp_sgd"
#: the SGD side: the seed's MLP with SGD + momentum 0.9 (the trainer's momentum) at this lr
SGD_LR = 0.05


def _comparison_study(task: DemoTask, timings: dict[str, float]) -> StudyResult:
    """The seed MLP with Adam (the mlp study's run) against the same MLP trained with
    SGD + momentum 0.9, side by side (``shenjing compare``), reused when already done.

    The comparison takes the mlp run's own line, plane and Hessian as they are (the same
    grid, samples and seeds) and computes the SGD run's and λ_max across epochs.
    """
    from shenjing.stages.compare import compare
    from shenjing.training import train

    t0 = time.perf_counter()
    adam = Run(task.folder / "mlp")
    path = task.folder / SGD_RUN
    if (path / "run.json").exists() and not task.force and \
            Run(path).stage("train").get("status") == "done":
        sgd = Run(path)
    else:
        # as many epochs as the Adam side had (the seed's, or the fast plan's)
        sgd = train("mlp", load_dataset(task.data, data_dir=task.data_dir),
                    epochs=adam.final_epoch,
                    run=path, optimizer="sgd", lr=SGD_LR, force=True, device=task.device,
                    progress=False)
    out = task.folder / task.study
    settings: dict[str, Any] = dict(steps=task.plan.grid, line_steps=task.plan.line_steps,
                                    samples=None, top_k=task.plan.hessian_k,
                                    trace_samples=50, probe_train=1000)
    done = out / "compare.json"
    if not task.force and done.is_file() and (out / "report.html").is_file() and \
            _io.read_json(done).get("demo_options") == settings:
        console.print(f"[dim]{task.study}: reused[/dim]")
        summary = _io.read_json(done)
    else:
        res = compare([adam, sgd], out, device=task.device, **settings)
        summary = {**res.summary, "demo_options": settings}
        _io.write_json(done, summary)
        timings[task.study] = time.perf_counter() - t0
        console.print(f"{task.study}: {timings[task.study]:.1f} s")
    top = summary.get("views", {}).get("sharpness", {}).get("runs", {})
    number = ", ".join(f"λ_max {k} {v['top_eigenvalue']:.3g}" for k, v in top.items())
    entry = {"href": f"{task.study}/report.html", "name": "mlp: Adam vs SGD",
             "model": "mlp", "data": task.data, "shows": _SHOWS[COMPARISON],
             "number": number}
    return StudyResult(task.study, out / "report.html", entry, timings)


def _study_done(path: Path, options: dict[str, Any]) -> bool:
    if not (path / "run.json").is_file() or not (path / "report.html").is_file():
        return False
    rec = Run(path).stage("demo:study")
    return rec.get("status") == "done" and rec.get("options") == options


_SHOWS = {
    "mlp": "W1 hidden features (t-SNE, probes), W8 dynamics, MLP filters, W5 landscape, Hessian",
    "simple_cnn": "W2 feature maps untrained vs trained, conv filters, W8 dynamics, 1-D line",
    "dropout_cnn": "W5 loss line, filter-normalized plane, trajectory, sharpness",
    "vit": "W9 attention per layer and head, rollout, which heads became local, CLS probes",
    "row_lstm": "W9 what the LSTM knows at each row (probe of h_t), gate saturation, states",
    "curve_fit": "W3 the net vs polynomial interpolation, per-neuron ReLU pieces",
    "spirals_warp": "W3 how each layer bends space until the classes separate",
    COMPARISON: "W5 Adam vs SGD+momentum side by side: curves, dynamics, lines, planes on one "
                "scale, sharpness, CKA, probes",
}

__all__ = ["DemoResult", "DemoTask", "StudyResult", "run_demo", "run_study"]
