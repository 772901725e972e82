"""Stage ``inspect``: a run from the user's own model + weights + data, then every view.

:func:`inspect_model` does, in this order, and stops with a clear error before writing
anything if a step fails:

1. loads the data (a built-in name or the user's files/factory, :mod:`shenjing.data.custom`);
2. builds the model from ``pkg.module:Factory`` / ``file.py:Factory`` / a zoo name, with a
   fixed torch seed, so the fresh initialisation is reproducible (``init_seed`` in the spec);
3. runs one small batch: a shape mismatch explains what the model expects; a tuple, list or
   dict output gets its prediction selected (``output``, default: the first tensor or the
   ``logits`` entry); the prediction's width is checked against the classes/targets;
4. reads the weights safely (:mod:`shenjing.models.weights`) into a copy, so a key or
   shape mismatch is reported before any file is written;
5. creates the run under ``out`` through :class:`shenjing.training.Recorder`: epoch 0 is
   ``init_weights`` or the seeded fresh initialisation (stated in ``run.json``
   ``config.init``), epoch 1 is the given weights; metrics of both are evaluated on the
   test split, exactly as ``shenjing train`` records them;
6. :func:`run_analysis` calls the analysis stages that exist (embeddings, maps, filters,
   dynamics, landscapes, report), each isolated: one that fails is recorded and the others
   still run.

Files: everything goes under ``out`` (the run directory). ``run.json`` holds
``model`` = the spec (``factory``/zoo name, ``kwargs``, ``output``, ``init_seed``),
``data`` = the data spec, ``config.source = "inspect"``, ``config.weights``,
``config.init``, ``config.output_note``, ``config.layers``; ``stages.inspect`` records the
weights-load notes and the steps run.
"""

from __future__ import annotations

import copy
import glob
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shenjing._checks import bounded_int, choice, optional_int, random_seed
from shenjing._imports import no_bytecode as _no_bytecode
from shenjing.data.types import Dataset
from shenjing.errors import (
    NotApplicableError,
    RunError,
    ShapeMismatchError,
    ShenjingError,
    UsageError,
)
from shenjing.runs import Run
from shenjing.stages._inputs import layer_names


# ---- small results ----------------------------------------------------------------------------
@dataclass(frozen=True)
class StepResult:
    """One analysis step: ``done``, ``skipped`` (module absent / not applicable) or ``failed``."""

    name: str
    status: str
    detail: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class PreparedModel:
    """A user's model ready for a run: built, output selected, checked on one batch."""

    model: nn.Module
    spec: dict[str, Any]
    output: str | int | None
    output_note: str
    loss: str
    task: str
    example_shape: tuple[int, ...]
    prediction_shape: tuple[int, ...]


@dataclass(frozen=True)
class InspectResult:
    """What :func:`inspect_model` made: the run, how the weights loaded, metrics and steps."""

    run: Run
    model_name: str
    weights_notes: tuple[str, ...]
    init: str
    output_note: str
    loss: str
    layers: tuple[str, ...]
    metrics: dict[str, dict[str, Any]]
    steps: tuple[StepResult, ...] = ()
    report: Path | None = None

    @property
    def failed(self) -> list[StepResult]:
        return [s for s in self.steps if s.status == "failed"]

    def summary(self) -> str:
        """Lines for the CLI: model, weights, init, both epochs' metrics, the steps."""
        lines = [f"run {self.run.path}: {self.model_name}, loss {self.loss}"]
        lines += [f"  weights: {n}" for n in self.weights_notes]
        lines.append(f"  epoch 0 = {self.init}")
        lines.append(f"  output: {self.output_note}")
        for label, rec in self.metrics.items():
            acc = rec.get("test_accuracy")
            acc_text = f", test accuracy {acc:.4f}" if acc is not None else ""
            lines.append(f"  {label} (epoch {rec['epoch']}): test loss "
                         f"{rec.get('test_loss', float('nan')):.6f}{acc_text}")
        lines.append(f"  layers: {', '.join(self.layers)}")
        for s in self.steps:
            extra = f" ({s.detail})" if s.detail else ""
            prefix = "WARNING " if s.status == "failed" else ""
            lines.append(f"  {prefix}{s.name}: {s.status}{extra}")
        if self.report is not None:
            lines.append(f"report: {self.report}")
        return "\n".join(lines)


# ---- losses -----------------------------------------------------------------------------------
def resolve_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A built-in loss name or a ``module:function`` reference (``--loss``)."""
    from shenjing._imports import import_reference
    from shenjing.training.losses import LOSSES, get_loss

    if name in LOSSES:
        return get_loss(name)
    if ":" not in name:
        from shenjing.errors import UnknownNameError, did_you_mean

        raise UnknownNameError(f"--loss {name!r}: expected one of {', '.join(sorted(LOSSES))} "
                               f"or module:function.{did_you_mean(name, LOSSES)} E.g. --loss "
                               "cross_entropy")
    fn = import_reference(name, kind="loss", option="--loss")
    if not callable(fn):
        raise UsageError(f"--loss {name!r} names a {type(fn).__name__}, not a function of "
                         "(prediction, target); name a loss function")
    return fn


def _looks_like_log_probs(pred: torch.Tensor) -> bool:
    if pred.ndim != 2 or not torch.is_floating_point(pred) or (pred > 1e-6).any():
        return False
    return bool(torch.allclose(pred.exp().sum(1), torch.ones(pred.shape[0]), atol=1e-3))


def choose_loss(loss: str | None, data: Dataset, prediction: torch.Tensor) -> tuple[str, str]:
    """(loss, task): the loss named, or the default for the data; checked against the data."""
    if loss is None:
        if data.task == "regression":
            return "mse", "regression"
        return ("nll" if _looks_like_log_probs(prediction) else "cross_entropy",
                "classification")
    from shenjing.training.losses import LOSSES, loss_task

    if loss in LOSSES:
        task = loss_task(loss)
        if task != data.task:
            raise UsageError(f"--loss {loss} is a {task} loss but the data {data.name!r} is a "
                             f"{data.task} task; use "
                             f"{'mse' if data.task == 'regression' else 'cross_entropy or nll'}")
        return loss, task
    resolve_loss(loss)
    return loss, data.task


# ---- building and checking the model ------------------------------------------------------------
#: words of the errors torch, einops and friends raise for an input of the wrong shape
_SHAPE_WORDS = re.compile(r"shape|size|dimension|\bdims?\b|channels|mat1|mat2|must match|"
                          r"input_size|indices|axis|expected .*input", re.IGNORECASE)


def is_shape_error(exc: BaseException) -> bool:
    """Whether ``exc``, raised by a forward, says the input has the wrong shape (rather than
    the model failing for a reason of its own, which no choice of data would fix)."""
    return isinstance(exc, (RuntimeError, ValueError, IndexError)) and bool(
        _SHAPE_WORDS.search(str(exc)))


def _explain_forward(model: nn.Module, x: torch.Tensor, data: Dataset) -> Any:
    """``model(x)``; an error becomes one line: a shape mismatch says what the model
    expects and to check the data; any other error says the model raised, with its own
    message and where, so the user fixes the model, not data that fits."""
    from shenjing._imports import where
    from shenjing.capture.core import expected_input

    try:
        with torch.no_grad():
            return model(x)
    except Exception as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        name = type(model).__name__
        if not is_shape_error(exc):
            raise UsageError(
                f"the model {name} raised {type(exc).__name__}: {text}{where(exc)} on one "
                f"batch of shape {tuple(x.shape)} from --data {data.name!r}; the error is the "
                "model's own, not a shape mismatch: fix the model's forward (or the "
                "--model-arg values it is built with)") from None
        raise ShapeMismatchError(
            f"the model {name} cannot run on the data {data.name!r}: one batch "
            f"of shape {tuple(x.shape)} (samples of shape {data.input_shape}) raised "
            f"{type(exc).__name__}: {text}{where(exc)}. The model expects: "
            f"{expected_input(model)}. Check --data, or the --model-arg values that size "
            "the model's first layer"
        ) from None


def _check_prediction(pred: torch.Tensor, data: Dataset, name: str) -> None:
    if data.task == "classification":
        if pred.ndim != 2:
            raise ShapeMismatchError(
                f"the model {name} returns predictions of shape {tuple(pred.shape)} for a "
                f"batch; a classifier must return (batch, n_classes) scores (the data "
                f"{data.name!r} has {data.n_classes} classes). If the model returns several "
                "tensors, choose the prediction with --output")
        if pred.shape[1] < data.n_classes:
            raise ShapeMismatchError(
                f"the model {name} returns {pred.shape[1]} scores per sample but the data "
                f"{data.name!r} has {data.n_classes} classes ({', '.join(data.classes[:10])}"
                f"{' …' if data.n_classes > 10 else ''}); build it with {data.n_classes} "
                "outputs (e.g. --model-arg n_classes=...)")
    else:
        want = math.prod(data.test.y.shape[1:]) if data.test.y.ndim > 1 else 1
        got = math.prod(pred.shape[1:]) if pred.ndim > 1 else 1
        if want != got:
            raise ShapeMismatchError(
                f"the model {name} returns {got} values per sample but the regression targets "
                f"of {data.name!r} have {want}")


def prepare_model(model_ref: str, model_args: dict[str, Any] | None, data: Dataset, *,
                  output: str | int | None = None, loss: str | None = None, seed: int = 0,
                  batch: int = 4) -> PreparedModel:
    """Build ``model_ref`` with a fixed seed, select its output, check it on one batch."""
    from shenjing.models.outputs import default_output, describe_output, with_output
    from shenjing.models.spec import build_from_spec, user_model_spec

    spec = user_model_spec(model_ref, model_args, input_shape=data.input_shape,
                           n_outputs=data.output_dim, init_seed=seed)
    with _no_bytecode():
        model = build_from_spec(spec)
    model.eval()
    x = data.test.x[:batch]
    raw = _explain_forward(model, x, data)
    name = type(model).__name__
    if isinstance(raw, torch.Tensor):
        if output is not None:
            raise UsageError(f"--output {output!r}: the model {type(model).__name__} returns "
                             f"one tensor {tuple(raw.shape)}, with nothing to select from; "
                             "leave --output out")
        chosen: str | int | None = None
        note = f"the model returns one tensor {tuple(raw.shape)}"
    else:
        from shenjing.models.outputs import select_output

        chosen = default_output(raw) if output is None else output
        if isinstance(chosen, str) and chosen.lstrip("-").isdigit():
            chosen = int(chosen)
        select_output(raw, chosen)  # a wrong key/index raises here, with the structure
        how = "chosen with --output" if output is not None else "the default rule: the " \
            "'logits' entry or else the first tensor; choose another with --output"
        note = f"the model returns {describe_output(raw)}; prediction = [{chosen!r}] ({how})"
        spec["output"] = chosen
        model = with_output(model, chosen)
    with torch.no_grad():
        pred = model(x)
    _check_prediction(pred, data, name)
    loss_name, task = choose_loss(loss, data, pred)
    return PreparedModel(model=model, spec=spec, output=chosen, output_note=note,
                         loss=loss_name, task=task, example_shape=tuple(x.shape),
                         prediction_shape=tuple(pred.shape))


# ---- options, checked before anything is written ----------------------------------------------
EMBED_METHODS = ("tsne", "pca", "umap")
MIN_EMBED_SAMPLES = 10


@dataclass(frozen=True)
class InspectOptions:
    """The sizes of the analysis ``inspect`` runs; :meth:`check` refuses bad values up front.

    ``samples`` caps the test samples of the landscapes, ``embed_samples`` /
    ``embed_train_samples`` those of the maps and their probes, ``hessian_samples`` those of
    the Hessian (None: all); ``line_steps`` and ``plane_steps`` size the landscapes (the plane
    is steps × steps); ``hessian_top`` is the number of top eigenvalues; ``skip`` names steps
    not to run.
    """

    line_steps: int = 31
    plane_steps: int = 15
    samples: int | None = 1000
    embed_method: str = "tsne"
    embed_samples: int | None = 2000
    embed_train_samples: int | None = 5000
    hessian_top: int = 5
    hessian_samples: int | None = 500
    skip: tuple[str, ...] = ()

    def check(self, step_names: Sequence[str]) -> None:
        """Raise a UsageError naming the option for the first value that cannot work."""
        bounded_int("--line-steps", self.line_steps, low=2,
                    why="a line needs its two end points")
        bounded_int("--plane-steps", self.plane_steps, low=3,
                    why="a plane needs a point on each side of θ*")
        optional_int("--samples", self.samples)
        optional_int("--embed-samples", self.embed_samples, low=MIN_EMBED_SAMPLES,
                     why="a 2-D map and its kNN numbers need neighbours")
        optional_int("--embed-train-samples", self.embed_train_samples,
                     low=MIN_EMBED_SAMPLES, why="the linear probe is trained on them")
        bounded_int("--hessian-top", self.hessian_top, low=1)
        optional_int("--hessian-samples", self.hessian_samples)
        choice("--method", self.embed_method, EMBED_METHODS)
        if self.embed_method == "umap" and "embed" not in self.skip:
            from shenjing._optional import require

            require("umap", extra="umap")
        for name in self.skip:
            choice("--skip", name, step_names)
        from shenjing.stages.hessian import validate_hessian_options
        from shenjing.stages.landscape import (
            validate_line_options,
            validate_plane_options,
        )

        # the landscape and Hessian stages' own checks, in inspect's option names
        validate_line_options(steps=self.line_steps, samples=self.samples,
                              names={"steps": "--line-steps", "samples": "--samples"})
        validate_plane_options(steps=self.plane_steps, samples=self.samples,
                               names={"steps": "--plane-steps", "samples": "--samples"})
        validate_hessian_options(top_k=self.hessian_top, samples=self.hessian_samples,
                                 trace=True,
                                 names={"top_k": "--hessian-top",
                                        "samples": "--hessian-samples"})


# ---- the analysis steps -------------------------------------------------------------------------
@dataclass(frozen=True)
class InspectContext:
    """What the steps need to know about the run's model beyond the run folder."""

    model: nn.Module
    layers: tuple[str, ...]
    penultimate: str
    options: InspectOptions
    device: torch.device
    n_test: int
    n_train: int = 0


def _capped(option: str, asked: int | None, available: int, split: str = "test") -> str:
    """``'; --samples 1000 capped to the 450 test samples'`` when ``asked`` exceeds what the
    split has (the stages then use all of it), else ''."""
    if asked is None or asked <= available:
        return ""
    return f"; {option} {asked} capped to the {available} {split} samples"


@dataclass(frozen=True)
class AnalysisStep:
    """One analysis after the run is made: ``run(run, ctx)`` calls the stage function (the
    same one the CLI command and a notebook call) and returns a short detail.

    It raises :class:`NotApplicableError` when the view does not apply to this model (then
    the step is ``skipped`` with that reason); any other error makes it ``failed``.
    ``stages`` are the names its stages record in run.json: a stage refused before it
    started records nothing itself, and is marked there by :func:`run_analysis`.
    """

    name: str
    run: Callable[[Run, InspectContext], str]
    stages: tuple[str, ...] = ()


def _conv_layers(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]


def _embed(run: Run, ctx: InspectContext) -> str:
    from shenjing.stages.embed import embed_stage

    o = ctx.options
    n = min(o.embed_samples or ctx.n_test, ctx.n_test)
    # small user datasets: neighbourhood sizes must stay below half the samples
    embed_stage(run, list(ctx.layers), epochs=("init", "final"), method=o.embed_method,
                n=o.embed_samples, n_train=o.embed_train_samples, device=ctx.device,
                n_neighbors=max(1, min(10, n // 2 - 1)), k=max(1, min(5, n // 2 - 1)),
                perplexity=float(min(30.0, max(2.0, (n - 1) / 3.0 - 1))))
    return (", ".join(ctx.layers) + _capped("--embed-samples", o.embed_samples, ctx.n_test)
            + _capped("--embed-train-samples", o.embed_train_samples, ctx.n_train, "train"))


def _each_layer(layers: Sequence[str], call: Callable[[str], Any]) -> str:
    """Call ``call`` per layer: skipped only if every layer is; failed if any fails."""
    done, skipped, errors = [], [], []
    for layer in dict.fromkeys(layers):
        try:
            call(layer)
            done.append(layer)
        except NotApplicableError as exc:
            skipped.append(f"{layer}: {exc}")
        except Exception as exc:  # isolate per layer: report every failure
            errors.append(f"{layer}: {type(exc).__name__}: {exc}")
    if errors:
        raise RuntimeError("; ".join(errors))
    if not done:
        raise NotApplicableError("; ".join(skipped))
    return ", ".join(done) + (f" (skipped {'; '.join(skipped)})" if skipped else "")


def _maps(run: Run, ctx: InspectContext) -> str:
    from shenjing.stages.maps import maps_stage

    convs = _conv_layers(ctx.model)
    # the first convolution (what the input becomes first), the first default block (an
    # LSTM's time × hidden output, a transformer's tokens) and the features the head reads
    layers = ([convs[0]] if convs else []) + [ctx.layers[0], ctx.penultimate]
    return _each_layer(layers, lambda layer: maps_stage(
        run, layer, epochs=("init", "final"), device=ctx.device))


def _filters(run: Run, ctx: InspectContext) -> str:
    from shenjing.stages.filters import filters_stage

    # the stage's own rule picks the layer (the first convolution, else a first linear layer
    # reading the whole input) or says why the view does not apply
    return str(filters_stage(run, epochs=("init", "final")).layer)


def _attention(run: Run, ctx: InspectContext) -> str:
    from shenjing.stages.attention import attention_stage

    # a model without attention raises NotApplicableError: the step is skipped with the
    # reason (what the model has)
    o = ctx.options
    n = min(o.embed_samples or ctx.n_test, ctx.n_test, 256)
    result = attention_stage(run, samples=(0, min(1, ctx.n_test - 1)), epochs=("init", "final"),
                             n=n, n_probe=min(o.embed_train_samples or ctx.n_train,
                                              ctx.n_train, 1000), device=ctx.device)
    return _first_line(result.summary())


def _recurrent(run: Run, ctx: InspectContext) -> str:
    from shenjing.stages.recurrent import MIN_N, recurrent_stage

    # a model without a recurrent layer raises NotApplicableError: the step is skipped
    o = ctx.options
    # the stage uses a smaller split whole; its --n floor keeps a probe per step meaningful
    n = max(MIN_N, min(o.embed_samples or ctx.n_test, 1000))
    result = recurrent_stage(run, epochs=("init", "final"), n=n, device=ctx.device)
    return _first_line(result.summary())


def _classifier_only(run: Run, view: str) -> None:
    if run.task != "classification":
        raise NotApplicableError(f"{view} explains a class score; this run is a {run.task} "
                                 "task")


def _attribute(run: Run, ctx: InspectContext) -> str:
    from shenjing.stages.attribute import attribute_stage

    _classifier_only(run, "attribute")
    # Grad-CAM where the model has a convolution; else the plain input gradient next to IG
    methods = ("ig", "gradcam") if _conv_layers(ctx.model) else ("ig", "saliency")
    samples = tuple(range(min(3, ctx.n_test)))
    result = attribute_stage(run, samples=samples, methods=methods, epochs=("init", "final"),
                             n_faithfulness=min(200, ctx.n_test), device=ctx.device)
    return _first_line(result.summary())


def _units(run: Run, ctx: InspectContext) -> str:
    from shenjing.stages.units import units_stage

    convs = _conv_layers(ctx.model)
    # the last convolution's channels (crops under their receptive fields), else the
    # features the head reads
    layer = convs[-1] if convs else ctx.penultimate
    units_stage(run, layer=layer, top=9, epochs=("init", "final"),
                device=ctx.device)
    return layer


def _visualize(run: Run, ctx: InspectContext) -> str:
    from shenjing.stages.visualize import visualize_stage

    _classifier_only(run, "visualize")
    n_classes = len(run.classes)
    if not n_classes:
        raise NotApplicableError("visualize of the output needs the run's classes")
    result = visualize_stage(run, layer="output", channels=list(range(min(10, n_classes))),
                             epochs=("final",), device=ctx.device)
    return _first_line(result.summary())


def _first_line(summary: str) -> str:
    return next((line.strip() for line in summary.splitlines() if line.strip()), "")


def _dynamics(run: Run, ctx: InspectContext) -> str:
    from shenjing.stages.dynamics import dynamics_stage

    dynamics_stage(run)
    return ""


def _line(run: Run, ctx: InspectContext) -> str:
    from shenjing.stages.landscape import landscape_line

    o = ctx.options
    landscape_line(run, steps=o.line_steps, samples=o.samples, progress=False,
                   device=ctx.device)
    return f"{o.line_steps} points" + _capped("--samples", o.samples, ctx.n_test)


def _plane(run: Run, ctx: InspectContext) -> str:
    from shenjing.stages.landscape import landscape_plane

    o = ctx.options
    landscape_plane(run, steps=o.plane_steps, samples=o.samples, progress=False,
                    device=ctx.device)
    return f"{o.plane_steps}×{o.plane_steps}" + _capped("--samples", o.samples, ctx.n_test)


def _trajectory(run: Run, ctx: InspectContext) -> str:
    from shenjing.stages.landscape import landscape_trajectory

    if len(run.epochs) < 3:
        raise NotApplicableError(
            f"the trajectory plane needs at least 3 checkpoints and this run has "
            f"{len(run.epochs)} (epoch 0 and the weights); give your training's checkpoints "
            "with --checkpoints 'ckpt/epoch-*.safetensors'")
    o = ctx.options
    landscape_trajectory(run, steps=o.plane_steps, samples=o.samples, progress=False,
                         device=ctx.device)
    return f"{len(run.epochs)} checkpoints" + _capped("--samples", o.samples, ctx.n_test)


def _hessian(run: Run, ctx: InspectContext) -> str:
    from shenjing.stages.hessian import hessian

    o = ctx.options
    per_epoch = len(run.epochs) >= 3
    result = hessian(run, top_k=o.hessian_top, trace=True, density=False, per_layer=False,
                     across_epochs=per_epoch, samples=o.hessian_samples, progress=False,
                     device=ctx.device)
    top = result.summary.get("top_eigenvalues") or []
    return ((f"λ_max {top[0]:.4g}" if top else "") + (", per epoch" if per_epoch else "")
            + _capped("--hessian-samples", o.hessian_samples, ctx.n_test))


def _report(run: Run, ctx: InspectContext) -> str:
    from shenjing.report import build_report

    build_report(run)
    return ""


#: every analysis ``inspect`` runs after creating the run, in order (the report last)
ANALYSIS_STEPS: tuple[AnalysisStep, ...] = (
    AnalysisStep("embed", _embed, ("capture", "embed")),
    AnalysisStep("maps", _maps, ("maps",)),
    AnalysisStep("filters", _filters, ("filters",)),
    AnalysisStep("attention", _attention, ("attention",)),
    AnalysisStep("recurrent", _recurrent, ("recurrent",)),
    AnalysisStep("attribute", _attribute, ("attribute",)),
    AnalysisStep("units", _units, ("units",)),
    AnalysisStep("visualize", _visualize, ("visualize",)),
    AnalysisStep("dynamics", _dynamics, ("dynamics", "weights")),
    AnalysisStep("landscape_line", _line, ("landscape_line",)),
    AnalysisStep("landscape_plane", _plane, ("landscape_plane",)),
    AnalysisStep("landscape_trajectory", _trajectory, ("landscape_trajectory",)),
    AnalysisStep("hessian", _hessian, ("hessian",)),
    AnalysisStep("report", _report, ("report",)),
)
STEP_NAMES: tuple[str, ...] = tuple(s.name for s in ANALYSIS_STEPS)


def run_analysis(run: Run, ctx: InspectContext,
                 steps: Sequence[AnalysisStep] = ANALYSIS_STEPS,
                 on_step: Callable[[StepResult], None] | None = None) -> list[StepResult]:
    """Run each step; one failure does not stop the others.

    A step that raises :class:`NotApplicableError` is ``skipped`` with its reason; any
    other error makes it ``failed`` with the error, in the result and in run.json (a stage
    that could not record its own failure is marked ``failed`` here).
    """
    results = []
    for step in steps:
        start = time.perf_counter()
        if step.name in ctx.options.skip:
            result = StepResult(step.name, "skipped", "turned off with --skip")
        else:
            try:
                result = StepResult(step.name, "done", step.run(run, ctx),
                                    time.perf_counter() - start)
            except NotApplicableError as exc:
                result = StepResult(step.name, "skipped", str(exc), time.perf_counter() - start)
                _mark(run, step, "skipped", reason=str(exc))
            except Exception as exc:  # isolate: record and go on
                error = f"{type(exc).__name__}: {exc}"
                result = StepResult(step.name, "failed", error, time.perf_counter() - start)
                _mark(run, step, "failed", error=error)
        results.append(result)
        if on_step is not None:
            on_step(result)
    return results


def _mark(run: Run, step: AnalysisStep, status: str, **info: str) -> None:
    """Record ``status`` for the step's stages that did not end themselves (still running
    or never started), so run.json never says ``running`` for a step that ended."""
    for name in step.stages or (step.name,):
        if run.stage(name).get("status") in (None, "running"):
            run.update_stage(name, status, **info)


# ---- checkpoints --------------------------------------------------------------------------------
_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


def _natural_key(path: Path) -> tuple[Any, ...]:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name))


def checkpoint_series(pattern: str | os.PathLike[str]) -> list[Path]:
    """The weights files a ``--checkpoints`` pattern names, in natural order
    (``epoch-2`` before ``epoch-10``): a glob, or a folder (its weights files)."""
    text = str(pattern)
    folder = Path(text).expanduser()
    if folder.is_dir():
        files = [p for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES and p.is_file()]
    else:
        files = [Path(p) for p in glob.glob(os.path.expanduser(text)) if Path(p).is_file()]
    if not files:
        raise UsageError(f"--checkpoints {text!r} matches no weights file; give a glob in "
                         "quotes, e.g. --checkpoints 'ckpt/epoch-*.safetensors', or a folder")
    return sorted(files, key=_natural_key)


@dataclass(frozen=True)
class EpochSource:
    """Where one epoch of an inspect run comes from."""

    epoch: int
    weights: Path | None  # None: the seeded fresh initialisation
    label: str


def _epoch_sources(weights: str | os.PathLike[str] | None,
                   init_weights: str | os.PathLike[str] | None,
                   checkpoints: str | os.PathLike[str] | None) -> tuple[list[EpochSource], str]:
    """The run's epochs (0 = init) and the kind of epoch 0: fresh, weights or checkpoints."""
    if checkpoints is not None:
        if weights is not None:
            raise UsageError("give either --weights (one trained file) or --checkpoints (a "
                             "series; the last is the trained net), not both")
        series = checkpoint_series(checkpoints)
        if init_weights is None and len(series) < 2:
            raise UsageError(f"--checkpoints {str(checkpoints)!r} matches one file; a series "
                             "needs at least two (epoch 0 = the first), or add --init-weights")
        files: list[Path | None] = [Path(init_weights) if init_weights else None, *series] \
            if init_weights is not None else list(series)
        kind = "weights" if init_weights is not None else "checkpoints"
    else:
        if weights is None:
            raise UsageError("inspect needs --weights FILE (the trained weights) or "
                             "--checkpoints 'PATTERN' (a series of them)")
        files = [Path(init_weights) if init_weights else None, Path(weights)]
        kind = "weights" if init_weights is not None else "fresh"
    sources = [EpochSource(i, f, str(f) if f is not None else "fresh initialisation")
               for i, f in enumerate(files)]
    return sources, kind


#: ``--model hf:FOLDER``: a Hugging Face model saved with ``save_pretrained``
HF_PREFIX = "hf:"
#: the factory that builds it from its config.json (no code from the folder runs)
HF_FACTORY = "shenjing.integrations.hf:pretrained_folder"


def hf_model_ref(model: str, model_args: dict[str, Any] | None,
                 weights: str | os.PathLike[str] | None,
                 checkpoints: str | os.PathLike[str] | None
                 ) -> tuple[str, dict[str, Any], str | os.PathLike[str] | None]:
    """``--model hf:FOLDER`` as a factory reference, its kwargs and the trained weights:
    the folder's ``model.safetensors`` unless ``--weights``/``--checkpoints`` say otherwise
    (the model is built from config.json with a seeded fresh init for epoch 0)."""
    from shenjing.integrations.hf import hf_folder_files

    folder = model[len(HF_PREFIX):]
    if not folder:
        raise UsageError("--model hf: needs a folder: --model hf:path/to/saved_model (what "
                         "save_pretrained wrote: config.json + model.safetensors)")
    if model_args:
        raise UsageError(f"--model {model!r} is built from its config.json; leave --model-arg "
                         "out (edit the config, or use --model pkg.module:Factory)")
    _, found = hf_folder_files(folder)
    if weights is None and checkpoints is None:
        if found is None:
            raise UsageError(f"--model {model!r}: the folder has no model.safetensors; pass "
                             "--weights FILE (or --checkpoints) with the trained weights")
        weights = found
    return HF_FACTORY, {"folder": str(Path(folder).resolve())}, weights


# ---- the stage ----------------------------------------------------------------------------------
def inspect_model(model: str, weights: str | os.PathLike[str] | None = None, *,
                  out: str | os.PathLike[str],
                  data: str | Dataset = "digits", data_dir: str | os.PathLike[str] | None = None,
                  normalize: str | None = None,
                  model_args: dict[str, Any] | None = None,
                  init_weights: str | os.PathLike[str] | None = None,
                  checkpoints: str | os.PathLike[str] | None = None,
                  trust_pickle: bool = False, strict: bool = True,
                  output: str | int | None = None, loss: str | None = None,
                  layers: Sequence[str] | str | None = None, seed: int = 0,
                  analysis: bool = True, steps: Sequence[AnalysisStep] = ANALYSIS_STEPS,
                  options: InspectOptions | None = None,
                  force: bool = False, device: str | torch.device = "auto",
                  on_step: Callable[[StepResult], None] | None = None,
                  **sizes: Any) -> InspectResult:
    """Make a run at ``out`` from a user's model and weights, then run the analysis on it.

    ``model``: ``pkg.module:Factory``, ``path/to/file.py:Factory`` or a zoo name
    (``simple_cnn``, ``shenjing.models:simple_cnn``), called with ``model_args``; or
    ``hf:FOLDER``, a Hugging Face model saved with ``save_pretrained`` (built from its
    config.json, never with remote code; weights from its model.safetensors by default).
    A ``ModelOutput`` (or any dict/tuple output) gives its ``logits`` by default.
    ``weights``/``init_weights``: safetensors, a torch file read with ``weights_only=True``
    (``trust_pickle`` to allow a full unpickle), a TorchScript archive (read without running
    it) or a torch.export archive.
    ``checkpoints`` (instead of ``weights``): a glob or folder of weights files, in natural
    order; they become epochs 0…n−1 (epochs 1…n after ``init_weights``), so the trajectory and
    per-epoch sharpness views see the user's own training.
    ``data``: a built-in dataset name, a ``.npz``/``.npy``, an image folder, a
    ``pkg.module:make_dataset`` factory, or a :class:`Dataset`; ``normalize`` scales its
    pixels (``standard``, ``unit``, ``none``; None: the dataset's default, recorded).
    ``options`` (or its fields as keyword arguments: ``line_steps=…``, ``samples=…``) sizes the
    analysis; every option is checked before anything is written.
    """
    from shenjing._device import resolve_device
    from shenjing.data.custom import load_data
    from shenjing.models.outputs import original_class
    from shenjing.models.weights import load_weights
    from shenjing.training import Recorder

    opts = options if options is not None else InspectOptions(**sizes)
    if options is not None and sizes:
        raise UsageError(f"pass either options= or its fields ({', '.join(sizes)}), not both")
    opts.check([s.name for s in steps])
    random_seed("--seed", seed)
    if normalize is not None:
        from shenjing.data.scaling import NORMALIZE_CHOICES

        choice("--normalize", normalize, NORMALIZE_CHOICES)
    dev = resolve_device(device, option="--device")
    hf_folder: Path | None = None
    if model.startswith(HF_PREFIX):
        model, model_args, weights = hf_model_ref(model, model_args, weights, checkpoints)
        hf_folder = Path(model_args["folder"])
    sources, init_kind = _epoch_sources(weights, init_weights, checkpoints)
    out = Path(out)
    if (out / "run.json").exists() and not force:
        raise RunError(f"{out} already holds a run; pass --force to replace it or choose "
                       "another --out folder")
    if (out / "run.json").exists():
        from shenjing.runs import check_removable

        check_removable(out)  # --force on a folder that is not only a shenjing run: refused
    if out.exists() and not (out / "run.json").exists() and out.is_dir() and any(out.iterdir()):
        raise RunError(f"{out} exists and is not a shenjing run; refusing to write into it. "
                       "Choose an empty or new --out folder")
    with _no_bytecode():
        dataset = data if isinstance(data, Dataset) else load_data(
            str(data), data_dir=data_dir, seed=seed, normalize=normalize, progress=False)
    prepared = prepare_model(model, model_args, dataset, output=output, loss=loss, seed=seed)
    net = prepared.model
    model_name = original_class(net).__name__
    if hf_folder is not None:  # views name it by its class, not by shenjing's factory
        prepared.spec["name"] = model_name
    # read every weights file before writing anything: a mismatch must not leave a half run
    states: list[dict[str, torch.Tensor] | None] = []
    notes: tuple[str, ...] = ()
    formats: list[str] = []
    scratch = copy.deepcopy(net)
    example = dataset.test.x[:4]
    for src in sources:
        if src.weights is None:
            _check_finite_output(net, example, dataset, "its fresh initialisation")
            states.append(None)
            continue
        what = "--init-weights" if (src.epoch == 0 and init_kind == "weights") else (
            "--checkpoints" if checkpoints is not None else "--weights")
        if hf_folder is not None and \
                Path(src.weights).resolve() == hf_folder / "model.safetensors":
            from shenjing.integrations.hf import load_pretrained_weights

            # transformers renames a checkpoint's keys as it loads them (5.x): its reader
            fmt = load_pretrained_weights(scratch, hf_folder)
            notes, formats = (), [*formats, fmt]
        else:
            report = load_weights(scratch, src.weights, strict=strict,
                                  trust_pickle=trust_pickle, what=what)
            notes, formats = report.notes, [*formats, report.file.format]
        _check_finite_output(scratch, example, dataset, f"{what} {src.weights}")
        states.append({k: v.detach().clone() for k, v in scratch.state_dict().items()})
    final = copy.deepcopy(net)
    final.load_state_dict(states[-1])  # type: ignore[arg-type]
    init_text = _init_text(init_kind, sources, model_name, seed)
    from shenjing.capture.layers import default_layers, resolve_keys

    defaults = default_layers(final, example)
    if layers:
        chosen_layers = [str(k) for k in resolve_keys(final, example, layer_names(layers))]
        penultimate = chosen_layers[-2] if len(chosen_layers) > 1 else chosen_layers[-1]
        layers_note = (f"Layers shown: {', '.join(chosen_layers)} (chosen with --layers). "
                       f"By default these would be: {', '.join(defaults.names)}.")
    else:
        chosen_layers, penultimate = list(defaults.names), defaults.penultimate
        layers_note = defaults.describe()
    trained_from = [str(s.weights) for s in sources if s.weights is not None]
    config = {"source": "inspect", "weights": trained_from[-1],
              "weights_format": formats[-1], "init": init_text, "init_kind": init_kind,
              "init_weights": str(init_weights) if init_weights else None,
              "checkpoints": [{"epoch": s.epoch, "file": s.label} for s in sources]
              if checkpoints is not None else None,
              "output_note": prepared.output_note, "layers": chosen_layers,
              "layers_note": layers_note,
              "strict": strict, "trust_pickle": trust_pickle}
    user_loss = resolve_loss(prepared.loss) if ":" in prepared.loss else None
    existed = out.exists()
    if existed and force and (out / "run.json").exists():
        from shenjing.runs import remove_run

        remove_run(out)  # only a shenjing run's own files, under its writer lock
    net.to(dev)
    rec = Recorder(out, net, data=dataset, loss=prepared.loss, loss_fn=user_loss,
                   model_spec=prepared.spec, seed=seed, config=config, device=dev)
    run = rec.run
    run.attach_data(dataset)  # the stages below read run.data: no second load from the spec
    try:
        with run.running_stage("inspect", weights=trained_from[-1]):
            _record_epochs(rec, net, sources, states, model_name, dataset)
            records = run.metrics()
            metrics = {"init": records[0], "final": records[-1]}
            ctx = InspectContext(model=final.to(dev), layers=tuple(chosen_layers),
                                 penultimate=penultimate, options=opts, device=dev,
                                 n_test=len(dataset.test), n_train=len(dataset.train))
            results = run_analysis(run, ctx, steps, on_step) if analysis else []
            run.update_stage(
                "inspect", "done", weights=trained_from[-1], weights_notes=list(notes),
                init=init_text, output=prepared.output_note, loss=prepared.loss,
                layers=chosen_layers,
                steps=[{"name": s.name, "status": s.status, "detail": s.detail}
                       for s in results])
    except _UnusableModelError as exc:  # a model or data that cannot work: keep nothing
        _discard(rec, out, created=not existed)
        raise exc.error from None
    finally:
        rec.close()  # the writer lock the Recorder took ends with inspect
    report_path = run.path / "report.html"
    return InspectResult(run=run, model_name=model_name, weights_notes=notes,
                         init=init_text, output_note=prepared.output_note, loss=prepared.loss,
                         layers=tuple(chosen_layers), metrics=metrics, steps=tuple(results),
                         report=report_path if report_path.exists() else None)


class _UnusableModelError(Exception):
    """The user's model or data failed while the run's epochs were evaluated: the half-made
    run is discarded and :attr:`error`, a usage error saying why, is raised instead."""

    def __init__(self, error: UsageError) -> None:
        super().__init__(str(error))
        self.error = error


def _record_epochs(rec: Any, net: nn.Module, sources: Sequence[EpochSource],
                   states: Sequence[dict[str, torch.Tensor] | None], model_name: str,
                   data: Dataset) -> None:
    """Record epoch 0 and each weights file as the run's epochs, evaluated on the test split.

    The user's model or data failing there (a usage error the Recorder raises, or the
    model's own error on a batch the one-batch check did not see) raises
    :class:`_UnusableModelError`; a full disk or a lock goes on as it is (the run is kept).
    """
    try:
        if states[0] is not None:
            net.load_state_dict(states[0])
        rec.start()
        for src, state in zip(sources[1:], states[1:], strict=True):
            with torch.no_grad():
                net.load_state_dict(state)  # type: ignore[arg-type]
            rec.end_epoch(extra={"source": "weights file", "weights": src.label})
    except UsageError as exc:
        raise _UnusableModelError(exc) from None
    except ShenjingError:
        raise
    except Exception as exc:
        raise _UnusableModelError(_evaluation_error(exc, model_name, data)) from None


def _discard(rec: Any, out: Path, *, created: bool) -> None:
    """Remove the run a failed evaluation left half made (its epoch 0 at most): the folder
    too if this call created it."""
    import contextlib
    import shutil

    from shenjing.runs import remove_run

    with contextlib.suppress(ShenjingError, OSError):
        rec.close()
        remove_run(out)
        if created:
            shutil.rmtree(out)


def _evaluation_error(exc: Exception, model_name: str, data: Dataset) -> UsageError:
    """One line for an error raised while the test split was evaluated: the model's own
    error, or a shape mismatch of a later batch."""
    from shenjing._imports import where

    text = " ".join(str(exc).split()) or type(exc).__name__
    kind = ShapeMismatchError if is_shape_error(exc) else UsageError
    return kind(f"evaluating the model {model_name} on the test split of --data {data.name!r} "
                f"raised {type(exc).__name__}: {text}{where(exc)} (one small batch ran; a "
                "later one failed); nothing was kept: fix the model's forward for every "
                "batch of the data")


def _check_finite_output(model: nn.Module, x: torch.Tensor, data: Dataset, what: str) -> None:
    """Refuse a model whose prediction on one batch is NaN or infinite: every number the
    run would record (losses, maps, landscapes) would be NaN too."""
    pred = _explain_forward(model, x, data)
    bad = int((~torch.isfinite(pred)).sum())
    if bad:
        from shenjing.models.outputs import original_class

        raise UsageError(f"the model {original_class(model).__name__} with {what} predicts NaN "
                         f"or infinite values for one batch of --data {data.name!r} ({bad} of "
                         f"{pred.numel()} values); check the weights and the model's forward "
                         "before inspecting it")


def _init_text(kind: str, sources: Sequence[EpochSource], model_name: str, seed: int) -> str:
    """What epoch 0 is, in the words the report and the summary use."""
    if kind == "fresh":
        return (f"a fresh initialisation of {model_name} with torch seed {seed}, not your "
                "model's real initial weights (no --init-weights given): the 'before' side of "
                "every comparison; pass --init-weights or --checkpoints for your own")
    first = sources[0].label
    if kind == "checkpoints":
        return f"the first file of --checkpoints, {first}"
    return f"the weights of {first} (--init-weights)"


__all__ = ["ANALYSIS_STEPS", "STEP_NAMES", "AnalysisStep", "InspectContext", "InspectOptions",
           "InspectResult", "PreparedModel", "StepResult", "checkpoint_series", "choose_loss",
           "inspect_model", "prepare_model", "resolve_loss", "run_analysis"]
