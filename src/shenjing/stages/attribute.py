"""Stage ``attribute``: what the network looks at, untrained next to trained, with checks.

For each epoch asked for, the run's model is built and
:func:`shenjing.analysis.attribute.attribute` (the function a notebook calls; Captum's
methods, batched) computes the maps of each method for the chosen test inputs. Next to
every map the stage reports its checks, computed on the last epoch's model:

- IG completeness: ``|Σ attributions − (f(x) − f(baseline))|`` relative to
  ``|f(x) − f(baseline)|`` per input (returned by ``attribute`` for ``ig``);
- the cascading randomization test (Adebayo et al., 2018) per method: Spearman and SSIM
  between the trained map and the maps as layers are re-initialised from the output down,
  with a PASS / FAIL verdict (:func:`~shenjing.analysis.attribute.randomization_test`);
- deletion / insertion curves (Petsiuk et al., 2018) over ``n_faithfulness`` fixed test
  inputs, with their AUCs against a random pixel order
  (:func:`~shenjing.analysis.attribute.deletion_insertion`).

Files written (epochs as three digits):

``attribute/attribute-e<NNN>.json|npz`` one epoch, saved by the analysis's study object
                                     (:func:`~shenjing.analysis.attribute.load_attribution`
                                     reads them back): inputs, labels, targets,
                                     probabilities, per method ``maps__<m>`` ``(N, H, W)``,
                                     ``raw__<m>``, IG's completeness; the last epoch also
                                     the randomization (``rand_spearman__<m>`` ``(stages,
                                     N)``, ``rand_ssim__<m>``, ``rand_maps__<m>``) and the
                                     deletion / insertion curves (``deletion__<m>`` …
                                     ``(n_faithfulness, fractions)``)
``attribute/summary.json``           the study's summary; under ``extra`` the stage's
                                     record: the options, per epoch and method the
                                     numbers, the checks' numbers and verdicts, the figures
``figures/attribute-maps-test<I>.png|svg``      one input: methods × epochs maps
``figures/attribute-randomization-<method>.png|svg`` the cascade and its curves
``figures/attribute-faithfulness.png|svg``      deletion / insertion vs random

Stage record: ``stages.attribute`` — ``done`` with the numbers and ``backend`` (``local``
or ``ray``; for ``ray`` also ``cluster``, ``workers`` and ``tasks``: per task ``job``
[``maps``, method, epoch] / [``randomization`` | ``faithfulness``, method], ``seconds``,
``pid``), ``failed`` with the error.
Options are checked before anything is written.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shenjing._device import resolve_device
from shenjing.backend import Backend
from shenjing.errors import UsageError
from shenjing.plot.save import save_figure
from shenjing.runs import Run
from shenjing.stages._backend import backend_session, stage_backend
from shenjing.stages._inputs import fixed_samples, resolve_epochs

#: short names accepted for the analysis's methods
ALIASES = {"ig": "integrated_gradients", "grad-cam": "gradcam"}
#: the most inputs drawn as maps in one call
MAX_SAMPLES = 8
#: the most integration steps of IG (memory: steps × batch inputs at once)
MAX_STEPS = 10_000
#: the most inputs the deletion / insertion curves average over
MAX_FAITHFULNESS = 10_000
BASELINES = ("zeros", "mean")
#: where the stage looks for the analysis (one place to change if it moves)
ANALYSIS = "shenjing.analysis.attribute"


@dataclass(frozen=True)
class AttributeOptions:
    """The checked options of one stage call."""

    samples: tuple[int, ...]
    methods: tuple[str, ...]
    target: str | int
    baseline: str
    steps: int
    n_faithfulness: int
    seed: int


#: the randomization test's verdict rule, as the figure and the report state it
RULE = ("pass: final mean Spearman and SSIM both < {t}; partial: one of them; a constant map "
        "counts 0")


def check_attribute_options(*, samples: Sequence[int | str], methods: Sequence[str] | str,
                            target: str | int = "predicted", baseline: str = "zeros",
                            steps: int = 50, n_faithfulness: int = 200,
                            seed: int = 0) -> AttributeOptions:
    """Refuse options that cannot work, before anything is read or written."""
    from shenjing._checks import bounded_int, choice, random_seed

    picks = [bounded_int("--samples", s, low=0, example="0,1,2") for s in samples]
    if not picks:
        raise UsageError("--samples names no input; give test positions, e.g. --samples 0,1,2")
    if len(picks) > MAX_SAMPLES:
        raise UsageError(f"--samples: {len(picks)} inputs asked, at most {MAX_SAMPLES} are "
                         "drawn; e.g. --samples 0,1,2")
    chosen = [methods] if isinstance(methods, str) else list(methods)
    if not chosen:
        raise UsageError("--method names no method; e.g. --method ig,gradcam")
    from shenjing.analysis.attribute import METHODS

    chosen = [ALIASES.get(m, m) for m in chosen]
    for m in chosen:
        choice("--method", m, (*METHODS, *ALIASES))
    if isinstance(target, str) and target not in ("predicted", "label"):
        try:
            target = bounded_int("--target", target, low=0, example="predicted")
        except UsageError:
            raise UsageError(f"--target {target!r}: expected predicted, label or a class "
                             "index ≥ 0, e.g. --target predicted") from None
    elif not isinstance(target, str):
        target = bounded_int("--target", target, low=0, example="predicted")
    choice("--baseline", baseline, BASELINES)
    bounded_int("--steps", steps, low=1, high=MAX_STEPS, example=50,
                why="Integrated Gradients' integration steps")
    bounded_int("--n-faithfulness", n_faithfulness, low=0, high=MAX_FAITHFULNESS,
                example=200, why="test inputs of the deletion / insertion curves; 0 = none")
    random_seed("--seed", seed)
    return AttributeOptions(samples=tuple(dict.fromkeys(picks)),
                            methods=tuple(dict.fromkeys(chosen)), target=target,
                            baseline=baseline, steps=int(steps),
                            n_faithfulness=int(n_faithfulness), seed=int(seed))


def _check_run(run: Run, opts: AttributeOptions) -> None:
    """What only the run can check: a classifier, the sample indices, the class index."""
    if run.task != "classification":
        raise UsageError(f"attribute needs a classifier: run {run.name!r} is a {run.task} "
                         "run (attribution explains one class's score)")
    size = len(run.data.test)
    for s in opts.samples:
        if s >= size:
            raise UsageError(f"--samples {s}: sample index {s} is out of range: the test split "
                             f"of {run.data.name!r} has {size} samples; give indices from 0 to "
                             f"{size - 1}, e.g. --samples 0,1")
    n_classes = len(run.classes)
    if isinstance(opts.target, int) and n_classes and opts.target >= n_classes:
        raise UsageError(f"--target {opts.target}: class index out of range: the run has "
                         f"{n_classes} classes (0 to {n_classes - 1}), e.g. --target 0")


def check_gradcam_layer(model: torch.nn.Module, x: torch.Tensor, layer: str) -> None:
    """Refuse a Grad-CAM layer that does not exist or whose output is not spatial
    ``(N, C, H, W)`` (or tokens ``(N, T, D)``, which the analysis reshapes to the patch
    grid), naming the spatial layers; one forward of one input, hooks always removed."""
    from shenjing.analysis.attribute import layer_shapes
    from shenjing.errors import unknown_name

    names = [n for n, _ in model.named_modules() if n]
    if layer not in names:
        raise unknown_name("--layer", layer, names)
    shapes = layer_shapes(model, x)
    shape = shapes.get(layer)
    if shape is None or len(shape) not in (3, 4):
        spatial = [n for n, s in shapes.items() if len(s) == 4]
        raise UsageError(f"--layer {layer}: Grad-CAM needs a spatial layer (output (N, C, H, "
                         f"W)), but {layer!r} gives {shape or 'no tensor'}; spatial layers: "
                         f"{', '.join(spatial) or 'none'}, e.g. --layer "
                         f"{spatial[-1] if spatial else 'conv2'}")


@dataclass(frozen=True)
class AttributeResult:
    """What the attribute stage measured and wrote."""

    summary_record: dict[str, Any]
    figures: tuple[Path, ...]
    files: tuple[Path, ...]
    json_path: Path
    lines: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """Lines for the CLI: the numbers, then the files."""
        return "\n".join([*self.lines, *(f"wrote {p}" for p in (*self.figures,
                                                                 *self.files))])


def attribute_stage(run: Run, *, samples: Sequence[int | str] = (0, 1, 2),
                    methods: Sequence[str] | str = ("ig", "gradcam"),
                    epochs: Sequence[int | str] | str = ("init", "final"),
                    target: str | int = "predicted", baseline: str = "zeros",
                    steps: int = 50, layer: str | None = None, randomization: bool = True,
                    faithfulness: bool = True, n_faithfulness: int = 200, seed: int = 0,
                    device: str | torch.device = "auto",
                    on_plan: Callable[[str], None] | None = None,
                    backend: str | Backend = "local", ray_address: str | None = None
                    ) -> AttributeResult:
    """Attribution maps of ``methods`` for the test inputs ``samples`` at ``epochs``, with
    IG completeness, the randomization test and deletion / insertion AUCs vs random on the
    last epoch. ``target``: ``predicted``, ``label`` or a class index; ``baseline``:
    ``zeros`` or ``mean`` (the train split's mean input); ``layer``: Grad-CAM's layer
    (default: the analysis's choice, the last spatial one).

    ``backend='ray'`` (``ray_address``, or a :class:`~shenjing.backend.Backend` with its
    workers, CPUs and GPUs; docs/scale.md) computes each (epoch, method)'s maps and, on the
    last epoch, each method's randomization test and deletion / insertion curves as Ray
    tasks, each rebuilding its epoch's model from the weights in the object store (see
    :mod:`shenjing.stages._ray_tasks`); the figures and files are then made here as for
    the local backend."""
    opts = check_attribute_options(samples=samples, methods=methods, target=target,
                                   baseline=baseline, steps=steps,
                                   n_faithfulness=n_faithfulness if faithfulness else 0,
                                   seed=seed)
    be = stage_backend(backend, ray_address)
    chosen_epochs = resolve_epochs(run, epochs)
    dev = resolve_device(device, option="--device")
    _check_run(run, opts)
    test = run.data.test
    picks = list(opts.samples)
    x = test.x[picks]
    labels = [int(y) for y in test.y[picks]]
    last_model = run.model(chosen_epochs[-1], device=dev)
    if layer is not None and "gradcam" in opts.methods:
        check_gradcam_layer(last_model, x.to(dev), layer)
    data_mean = run.data.train.x.mean(0) if opts.baseline == "mean" else None
    n_faith = min(opts.n_faithfulness, len(test))
    if on_plan is not None:
        on_plan(f"attribute: {len(picks)} input(s) × {len(opts.methods)} method(s) × "
                f"{len(chosen_epochs)} epoch(s); IG {opts.steps} steps; checks on epoch "
                f"{chosen_epochs[-1]}: randomization {'on' if randomization else 'off'}, "
                f"deletion/insertion over {n_faith} test inputs")
    lib = importlib.import_module(ANALYSIS)
    if layer is None and "gradcam" in opts.methods:
        layer = lib.default_layer(last_model, x[:1].to(dev))
    common = {"target": opts.target, "labels": torch.as_tensor(labels),
              "baseline": opts.baseline, "data_mean": data_mean, "steps": opts.steps,
              "layer": layer, "device": dev}
    # connected before the stage is marked running: a cluster that cannot be reached or
    # lacks the resources asked for is refused with the run untouched
    with backend_session(be) as ran_on, \
            run.running_stage("attribute", epochs=chosen_epochs, methods=list(opts.methods),
                              backend=be.name):
        final = chosen_epochs[-1]
        xf = yf = None
        if n_faith:
            xf, yf, _ = fixed_samples(run, n_faith, opts.seed, "test")
        if be.is_ray:
            per_epoch, random_tests, faith, timings = _attribute_on_ray(
                run, be, last_model, chosen_epochs, x, xf, yf, opts=opts, common=common,
                randomization=randomization, data_mean=data_mean)
            ran_on = {**ran_on, **timings}
        else:
            per_epoch = {}
            for e in chosen_epochs:
                model = last_model if e == final else run.model(e, device=dev)
                for m in opts.methods:
                    per_epoch[(m, e)] = lib.attribute(model, x, method=m, **common)
                del model
            random_tests = {}
            faith = {}
            for m in opts.methods:
                maps = per_epoch[(m, final)]
                if randomization:  # the test re-initialises a copy of the model
                    random_tests[m] = lib.randomization_test(
                        last_model, x, method=m,
                        targets=torch.as_tensor(maps.targets), seed=opts.seed,
                        **{k: v for k, v in common.items() if k not in ("target", "labels")})
                if xf is not None:
                    fm = lib.attribute(last_model, xf, method=m,
                                       **{**common, "labels": yf})
                    faith[m] = lib.deletion_insertion(
                        last_model, xf, fm.maps, targets=torch.as_tensor(fm.targets),
                        baseline=opts.baseline, data_mean=data_mean, seed=opts.seed)
        out = run.subdir("attribute")
        figures = _draw(run, per_epoch, random_tests, faith, images=x.cpu().numpy(),
                        samples=picks, labels=labels, final=final)
        record = summary_record(opts, per_epoch, random_tests, faith, epochs=chosen_epochs,
                                labels=labels, layer=layer, n_faithfulness=n_faith)
        record["figures"] = [str(p.relative_to(run.path)) for p in figures
                             if p.suffix == ".png"]
        files = _save(out, per_epoch, random_tests, faith, record, images=x.cpu().numpy(),
                      labels=labels, epochs=chosen_epochs)
        json_path = out / "summary.json"
        run.update_stage("attribute", "done", **run_record(record, run, json_path), **ran_on)
    return AttributeResult(summary_record=record, figures=tuple(figures), files=tuple(files),
                           json_path=json_path, lines=tuple(summary_lines(record)))


def _attribute_on_ray(run: Run, be: Backend, last_model: torch.nn.Module,
                      epochs: Sequence[int], x: torch.Tensor, xf: torch.Tensor | None,
                      yf: torch.Tensor | None, *, opts: AttributeOptions,
                      common: dict[str, Any], randomization: bool, data_mean: Any
                      ) -> tuple[dict[tuple[str, int], Any], dict[str, Any], dict[str, Any],
                                 dict[str, Any]]:
    """The local loop's maps and checks as Ray tasks: one per (method, epoch), and on the
    last epoch one randomization test and one deletion / insertion per method. The model
    skeleton, the inputs and each epoch's weights go to the object store once. Returns the
    maps, the tests, the curves (as the local loop's) and the tasks' record."""
    from shenjing.stages._ray_tasks import (
        RayJobs,
        attribution_job,
        faithfulness_job,
        randomization_job,
    )

    cpu = torch.device("cpu")
    jobs = RayJobs(be)
    final = epochs[-1]
    skeleton = jobs.put(copy.deepcopy(last_model).to(cpu))
    states = {e: jobs.put({k: v.detach().to(cpu) for k, v in (
        last_model if e == final else run.model(e, device=cpu)).state_dict().items()})
        for e in epochs}
    options = {**common, "device": None}
    for_maps = {k: (v.detach().to(cpu) if isinstance(v, torch.Tensor) else v)
                for k, v in options.items()}
    x_ref = jobs.put(x.detach().to(cpu))
    xf_ref, yf_ref = ((jobs.put(xf.detach().to(cpu)), jobs.put(yf.detach().to(cpu)))
                      if xf is not None and yf is not None else (None, None))
    run_opts: dict[str, Any] = {"device": jobs.device, "threads": jobs.threads}
    for e in epochs:
        for m in opts.methods:
            jobs.submit(("maps", m, e), attribution_job, skeleton, states[e], x_ref,
                        method=m, options=for_maps, **run_opts)
    for m in opts.methods:
        if randomization:
            jobs.submit(("randomization", m), randomization_job, skeleton, states[final],
                        x_ref, None, after=("maps", m, final), after_at=3, method=m,
                        seed=opts.seed, options={k: v for k, v in for_maps.items()
                                                 if k not in ("target", "labels")},
                        **run_opts)
        if xf_ref is not None:
            jobs.submit(("faithfulness", m), faithfulness_job, skeleton, states[final],
                        xf_ref, yf_ref, method=m, seed=opts.seed,
                        baseline=opts.baseline, data_mean=data_mean, options=for_maps,
                        **run_opts)
    done: dict[Any, Any] = dict(jobs.results())
    per_epoch = {(m, e): done[("maps", m, e)]["maps"] for e in epochs for m in opts.methods}
    random_tests = {m: done[("randomization", m)]["test"] for m in opts.methods
                    if ("randomization", m) in done}
    faith = {m: done[("faithfulness", m)]["curves"] for m in opts.methods
             if ("faithfulness", m) in done}
    return per_epoch, random_tests, faith, jobs.record()


def stage_means(values: Any) -> np.ndarray:
    """Per-stage means over inputs ``(stages, N) → (stages,)``, an undefined value (the
    Spearman of a constant map) counted as 0, as the analysis's verdict counts it."""
    return np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0).mean(axis=1)


def _floats(values: Any, digits: int = 4) -> list[float]:
    return [round(float(v), digits) for v in np.asarray(values, dtype=np.float64).ravel()]


def summary_record(opts: AttributeOptions, per_epoch: dict[tuple[str, int], Any],
                   random_tests: dict[str, Any], faith: dict[str, Any], *,
                   epochs: Sequence[int], labels: Sequence[int], layer: str | None,
                   n_faithfulness: int) -> dict[str, Any]:
    """Every number of the stage, as plain JSON: what summary.json holds and the report
    reads."""
    maps: dict[str, dict[str, Any]] = {}
    for (m, e), r in per_epoch.items():
        entry: dict[str, Any] = {"targets": [int(t) for t in r.targets],
                                 "probabilities": [round(target_probability(r, i), 4)
                                                   for i in range(len(r.targets))],
                                 "predictions": [int(p) for p in r.predictions],
                                 "layer": getattr(r, "layer", None)}
        comp = getattr(r, "completeness", None)
        if comp is not None:
            c = np.asarray(comp.relative_error, dtype=np.float64)
            entry["completeness"] = _floats(c, 6)
            entry["completeness_max"] = round(float(np.nanmax(c)), 6)
        maps.setdefault(m, {})[str(e)] = entry
    randomization = {}
    for m, t in random_tests.items():
        sp = np.asarray(t.spearman, dtype=np.float64)
        ss = np.asarray(t.ssim, dtype=np.float64)
        randomization[m] = {"layers": [str(n) for n in t.stages],
                            "spearman": _floats(stage_means(sp)),
                            "ssim": _floats(stage_means(ss)),
                            "passed": bool(t.passed), "outcome": str(t.outcome),
                            "verdict": str(t.verdict),
                            "threshold": float(t.threshold)}
    faithfulness = {}
    for m, f in faith.items():
        faithfulness[m] = {k: round(float(np.nanmean(np.asarray(getattr(f, k)))), 4)
                           for k in ("deletion_auc", "insertion_auc", "deletion_auc_random",
                                     "insertion_auc_random")}
        faithfulness[m]["n"] = int(np.asarray(f.deletion).shape[0])
    return {"options": {"samples": list(opts.samples), "methods": list(opts.methods),
                        "target": opts.target, "baseline": opts.baseline,
                        "steps": opts.steps, "layer": layer, "seed": opts.seed,
                        "n_faithfulness": n_faithfulness},
            "epochs": list(epochs), "labels": list(labels), "maps": maps,
            "randomization": randomization, "faithfulness": faithfulness}


def summary_lines(record: dict[str, Any]) -> list[str]:
    """The CLI's lines: per method and epoch the targets' probabilities and IG's
    completeness error, the randomization verdict with Spearman/SSIM first → last, and the
    AUCs vs random."""
    lines = []
    for m, by_epoch in record["maps"].items():
        for e, entry in by_epoch.items():
            probs = ", ".join(f"{p:.2f}" for p in entry["probabilities"])
            line = f"{m}, epoch {e}: target probability {probs}"
            if "completeness_max" in entry:
                line += f"; completeness error max {entry['completeness_max']:.2%}"
            lines.append(line)
    for m, r in record["randomization"].items():
        word = str(r.get("outcome") or ("pass" if r["passed"] else "fail")).upper()
        lines.append(f"{m} randomization test: {word} — "
                     f"Spearman {r['spearman'][0]:.2f} → {r['spearman'][-1]:.2f}, SSIM "
                     f"{r['ssim'][0]:.2f} → {r['ssim'][-1]:.2f} over {len(r['layers'])} "
                     "layers")
    for m, f in record["faithfulness"].items():
        lines.append(f"{m} deletion AUC {f['deletion_auc']:.3f} (random "
                     f"{f['deletion_auc_random']:.3f}), insertion AUC {f['insertion_auc']:.3f}"
                     f" (random {f['insertion_auc_random']:.3f}) over {f['n']} inputs")
    return lines


def run_record(record: dict[str, Any], run: Run, json_path: Path) -> dict[str, Any]:
    """The numbers ``run.json`` keeps for the stage."""
    out: dict[str, Any] = {"epochs": record["epochs"], "methods": record["options"]["methods"],
                           "json": str(json_path.relative_to(run.path))}
    last = str(record["epochs"][-1])
    comp = {m: by[last]["completeness_max"] for m, by in record["maps"].items()
            if "completeness_max" in by.get(last, {})}
    if comp:
        out["completeness_max"] = comp
    out["randomization_passed"] = {m: r["passed"] for m, r in record["randomization"].items()}
    out["faithfulness"] = record["faithfulness"]
    return out


def _save(folder: Path, per_epoch: dict[tuple[str, int], Any], random_tests: dict[str, Any],
          faith: dict[str, Any], record: dict[str, Any], *, images: np.ndarray,
          labels: Sequence[int], epochs: Sequence[int]) -> list[Path]:
    """The analysis's study object saves the maps and checks (``attribute-e<NNN>.json|npz``,
    atomically) and ``summary.json`` with the stage's numbers (``record``) on top."""
    lib = importlib.import_module(ANALYSIS)
    final = epochs[-1]
    studied = []
    for e in epochs:
        maps = {m: r for (m, ep), r in per_epoch.items() if ep == e}
        first = next(iter(maps.values()))
        studied.append(lib.EpochAttribution(
            epoch=int(e), inputs=images, labels=np.asarray(labels, dtype=np.int64),
            targets=np.asarray(first.targets), predictions=np.asarray(first.predictions),
            probabilities=np.asarray(first.probabilities), maps=maps,
            randomization=dict(random_tests) if e == final else {},
            faithfulness=dict(faith) if e == final else {}))
    study = lib.attribution_study(studied, extra=record)
    return list(study.save(folder))


def stage_record(summary: Any) -> Any:
    """The stage's numbers inside the study's ``summary.json`` (kept under ``extra``)."""
    if isinstance(summary, dict) and isinstance(summary.get("extra"), dict):
        return summary["extra"]
    return summary


def target_probability(result: Any, s: int) -> float:
    """The softmax probability of input ``s``'s target class (the analysis keeps every
    class's)."""
    probs = np.asarray(result.probabilities)
    return float(probs[s, int(result.targets[s])] if probs.ndim == 2 else probs[s])


def _draw(run: Run, per_epoch: dict[tuple[str, int], Any], random_tests: dict[str, Any],
          faith: dict[str, Any], *, images: np.ndarray, samples: Sequence[int],
          labels: Sequence[int], final: int) -> list[Path]:
    """Every figure into ``RUN/figures/attribute-*``: the maps of each input, the
    randomization cascade of each method (first input), the deletion / insertion curves."""
    from shenjing.plot.attribute import (
        plot_attribution_maps,
        plot_deletion_insertion,
        plot_randomization,
    )

    folder = run.figures_dir
    classes = list(run.classes)

    def name(c: int) -> str:
        return str(classes[c]) if 0 <= c < len(classes) else str(c)

    methods = list(dict.fromkeys(m for m, _ in per_epoch))
    epochs = list(dict.fromkeys(e for _, e in per_epoch))
    figures: list[Path] = []
    for s, index in enumerate(samples):
        maps = np.stack([np.stack([per_epoch[(m, e)].maps[s] for e in epochs])
                         for m in methods])
        first = per_epoch[(methods[0], epochs[0])]
        targets = [name(int(per_epoch[(methods[0], e)].targets[s])) for e in epochs]
        probs = [target_probability(per_epoch[(methods[0], e)], s) for e in epochs]
        del first
        completeness = {m: [None if per_epoch[(m, e)].completeness is None else
                            float(per_epoch[(m, e)].completeness.relative_error[s])
                            for e in epochs] for m in methods}
        what = f"test #{index} (label {name(int(labels[s]))})"
        figures += save_figure(plot_attribution_maps(
            images[s], maps, methods=methods, epochs=epochs, targets=targets,
            probabilities=probs, completeness=completeness, sample=what),
            folder, f"attribute-maps-test{index}")
    for m, t in random_tests.items():
        stack = np.concatenate([np.asarray(t.original)[:1], np.asarray(t.randomized)[:, 0]])
        figures += save_figure(plot_randomization(
            images[0], stack, layers=list(t.stages),
            spearman=[float(v) for v in stage_means(t.spearman)],
            ssim=[float(v) for v in stage_means(t.ssim)],
            passed=bool(t.passed), outcome=str(t.outcome), method=m,
            rule=RULE.format(t=t.threshold),
            sample=f"test #{samples[0]}, epoch {final}",
            n_inputs=int(np.asarray(t.spearman).shape[1])), folder,
            f"attribute-randomization-{m}")
    if faith:
        curves: dict[str, dict[str, Any]] = {}
        n = 0
        fractions: Any = None
        for m, f in faith.items():
            fractions = np.asarray(f.fractions)
            n = int(np.asarray(f.deletion).shape[0])
            curves[m] = {"deletion": np.asarray(f.deletion).mean(0),
                         "insertion": np.asarray(f.insertion).mean(0),
                         "deletion_auc": float(np.mean(f.deletion_auc)),
                         "insertion_auc": float(np.mean(f.insertion_auc))}
        f = faith[methods[0]] if methods[0] in faith else next(iter(faith.values()))
        curves["random"] = {"deletion": np.asarray(f.deletion_random).mean(0),
                            "insertion": np.asarray(f.insertion_random).mean(0),
                            "deletion_auc": float(np.mean(f.deletion_auc_random)),
                            "insertion_auc": float(np.mean(f.insertion_auc_random))}
        figures += save_figure(plot_deletion_insertion(fractions, curves, n_samples=n),
                               folder, "attribute-faithfulness")
    return figures


__all__ = [
    "ALIASES",
    "AttributeOptions",
    "AttributeResult",
    "attribute_stage",
    "check_attribute_options",
    "check_gradcam_layer",
    "stage_record",
    "target_probability",
]
