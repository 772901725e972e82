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
import inspect as _inspect
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shenjing._imports import no_bytecode as _no_bytecode
from shenjing.data.types import Dataset
from shenjing.errors import RunError, ShapeMismatchError, UsageError
from shenjing.hooks import forward_hooks
from shenjing.runs import Run

CLASSIFICATION_LOSSES = ("cross_entropy", "nll")


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
    """A built-in loss name or a ``module:function`` reference."""
    from shenjing.training.losses import LOSSES, get_loss

    if name in LOSSES or ":" not in name:
        return get_loss(name)
    from shenjing.models.spec import resolve_factory

    try:
        return resolve_factory(name)
    except UsageError as exc:
        raise UsageError(f"--loss {name!r}: {exc}") from None


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
def _explain_forward(model: nn.Module, x: torch.Tensor, data: Dataset) -> Any:
    from shenjing.capture.core import expected_input

    try:
        with torch.no_grad():
            return model(x)
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ShapeMismatchError(
            f"the model {type(model).__name__} cannot run on the data {data.name!r}: one batch "
            f"of shape {tuple(x.shape)} (samples of shape {data.input_shape}) raised "
            f"{type(exc).__name__}: {text}. The model expects: {expected_input(model)}. "
            "Check --data, or the --model-arg values that size the model's first layer"
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
        chosen: str | int | None = None
        note = f"the model returns one tensor {tuple(raw.shape)}"
        if output is not None:
            note += f" (--output {output!r} not needed, ignored)"
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


# ---- layers -------------------------------------------------------------------------------------
def execution_order(model: nn.Module, example: torch.Tensor) -> list[tuple[str, bool, bool]]:
    """Leaf-or-weighted modules in the order they first run: (name, has own params,
    returns a single tensor)."""
    names = [n for n, m in model.named_modules() if n and (
        not any(True for _ in m.children()) or any(True for _ in m.parameters(recurse=False)))]
    order: list[tuple[str, bool, bool]] = []
    seen: set[str] = set()

    def make(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(mod: nn.Module, _a: Any, out: Any) -> None:
            if name not in seen:
                seen.add(name)
                own = any(True for _ in mod.parameters(recurse=False))
                order.append((name, own, isinstance(out, torch.Tensor)))
        return hook

    was = model.training
    model.eval()
    try:
        with forward_hooks(model, {n: make(n) for n in names}), torch.no_grad():
            model(example)
    finally:
        model.train(was)
    return order


def default_layers(model: nn.Module, example: torch.Tensor, n_last: int = 3) -> list[str]:
    """The last ``n_last`` weighted layers that run, plus the penultimate layer.

    Normalisation layers (BatchNorm, LayerNorm, GroupNorm) are not counted as weighted.
    Only modules returning one tensor are chosen (an LSTM's ``(output, (h, c))`` is
    skipped: name it with ``--layers`` to capture it). The penultimate layer is the last
    module that runs before the final weighted layer (e.g. ``relu3`` before ``fc2``: the
    post-activation features the classifier reads), dropout skipped.
    """
    order = [o for o in execution_order(model, example) if o[2]]
    norms = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
    weighted = [name for name, own, _ in order
                if own and not isinstance(model.get_submodule(name), norms)]
    if not weighted:
        return [name for name, _, _ in order][-2:]
    chosen = weighted[-n_last:]
    last = weighted[-1]
    position = [name for name, _, _ in order].index(last)
    for name, _, _ in reversed(order[:position]):
        module = model.get_submodule(name)
        if isinstance(module, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Flatten)):
            continue
        if name not in chosen:
            chosen.append(name)
        break
    ordered = [name for name, _, _ in order]
    return sorted(set(chosen), key=ordered.index)


# ---- the analysis steps (kept small: the lead wires them to the final stage APIs) -------------
@dataclass(frozen=True)
class AnalysisStep:
    """One analysis stage to call if its module exists: ``module:function`` + how to call it.

    ``calls(run, ctx)`` returns a list of (label, kwargs) — one call per layer, say — or an
    empty list when the step does not apply to this model (then it is ``skipped``).
    """

    name: str
    target: str
    calls: Callable[[Run, dict[str, Any]], list[tuple[str, dict[str, Any]]]]


def _conv_layers(ctx: dict[str, Any]) -> list[str]:
    model = ctx["model"]
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]


def _embed_calls(run: Run, ctx: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    o = ctx["options"]
    n = min(o["embed_samples"] or ctx["n_test"], ctx["n_test"])
    # small user datasets: neighbourhood sizes must stay below half the samples
    kwargs = {"n_neighbors": max(1, min(10, n // 2 - 1)), "k": max(1, min(5, n // 2 - 1)),
              "perplexity": float(min(30.0, max(2.0, (n - 1) / 3.0 - 1)))}
    return [(", ".join(ctx["layers"]), {
        "layers": list(ctx["layers"]), "epochs": ("init", "final"),
        "method": o["embed_method"], "n": o["embed_samples"],
        "n_train": o["embed_train_samples"], "device": ctx["device"], **kwargs})]


def _maps_calls(run: Run, ctx: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    convs = _conv_layers(ctx)
    layers = ([convs[0]] if convs else []) + [ctx["penultimate"]]
    return [(layer, {"layer": layer, "epochs": ("init", "final"), "device": ctx["device"]})
            for layer in dict.fromkeys(layers) if layer]


def _filters_calls(run: Run, ctx: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    convs = _conv_layers(ctx)
    if convs:
        return [(convs[0], {"layer": convs[0], "epochs": ("init", "final")})]
    first = ctx.get("first_linear")
    shape = tuple(ctx["input_shape"])
    if first and len(shape) == 3 and \
            ctx["model"].get_submodule(first).in_features == math.prod(shape):
        # a linear layer reading the whole image: its units drawn as images
        return [(first, {"layer": first, "epochs": ("init", "final")})]
    return []


def _single(label: str = "") -> Callable[[Run, dict[str, Any]], list[tuple[str, dict]]]:
    return lambda run, ctx: [(label, {})]


def _line_calls(run: Run, ctx: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    o = ctx["options"]
    return [("", {"steps": o["line_steps"], "samples": o["samples"], "progress": False,
                  "device": ctx["device"]})]


def _plane_calls(run: Run, ctx: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    o = ctx["options"]
    return [("", {"steps": o["plane_steps"], "samples": o["samples"], "progress": False,
                  "device": ctx["device"]})]


#: the analysis run after a run is created; absent modules are skipped (``stages/embed.py``
#: and ``report`` are written in parallel and hook in by name)
ANALYSIS_STEPS: tuple[AnalysisStep, ...] = (
    AnalysisStep("embed", "shenjing.stages.embed:embed_stage", _embed_calls),
    AnalysisStep("maps", "shenjing.stages.maps:maps_stage", _maps_calls),
    AnalysisStep("filters", "shenjing.stages.maps:filters_stage", _filters_calls),
    AnalysisStep("dynamics", "shenjing.stages.dynamics:dynamics_stage", _single()),
    AnalysisStep("landscape_line", "shenjing.stages.landscape:landscape_line", _line_calls),
    AnalysisStep("landscape_plane", "shenjing.stages.landscape:landscape_plane", _plane_calls),
    AnalysisStep("report", "shenjing.report:build_report", _single()),
)


def _find(target: str) -> Callable[..., Any] | None:
    import importlib

    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            return None  # the stage has not landed in this checkout
        raise
    return getattr(module, attr, None)


def _accepted(fn: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Keep only the keyword arguments ``fn`` takes (stage signatures still move)."""
    params = _inspect.signature(fn).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def run_analysis(run: Run, ctx: dict[str, Any],
                 steps: Sequence[AnalysisStep] = ANALYSIS_STEPS,
                 on_step: Callable[[StepResult], None] | None = None) -> list[StepResult]:
    """Call each step's stage function if it exists; one failure does not stop the others."""
    results = []
    for step in steps:
        start = time.perf_counter()
        fn = _find(step.target)
        if fn is None:
            result = StepResult(step.name, "skipped", f"{step.target} not available")
        else:
            calls = step.calls(run, ctx)
            if not calls:
                result = StepResult(step.name, "skipped", "not applicable to this model")
            else:
                done, errors = [], []
                for label, kwargs in calls:
                    try:
                        fn(run, **_accepted(fn, kwargs))
                        done.append(label)
                    except Exception as exc:  # isolate: record and go on
                        errors.append(f"{label or step.name}: {type(exc).__name__}: {exc}")
                status = "failed" if errors else "done"
                detail = "; ".join(errors) if errors else ", ".join(x for x in done if x)
                result = StepResult(step.name, status, detail,
                                    time.perf_counter() - start)
        results.append(result)
        if on_step is not None:
            on_step(result)
    return results


# ---- the stage ----------------------------------------------------------------------------------
def _first_linear(model: nn.Module) -> str | None:
    return next((n for n, m in model.named_modules() if isinstance(m, nn.Linear)), None)


def inspect_model(model: str, weights: str | os.PathLike[str], *, out: str | os.PathLike[str],
                  data: str | Dataset = "digits", data_dir: str | os.PathLike[str] | None = None,
                  model_args: dict[str, Any] | None = None,
                  init_weights: str | os.PathLike[str] | None = None,
                  trust_pickle: bool = False, strict: bool = True,
                  output: str | int | None = None, loss: str | None = None,
                  layers: Sequence[str] | None = None, seed: int = 0,
                  analysis: bool = True, steps: Sequence[AnalysisStep] = ANALYSIS_STEPS,
                  line_steps: int = 31, plane_steps: int = 15, samples: int | None = 1000,
                  embed_method: str = "tsne", embed_samples: int | None = 2000,
                  embed_train_samples: int | None = 5000,
                  force: bool = False, device: str = "auto",
                  on_step: Callable[[StepResult], None] | None = None) -> InspectResult:
    """Make a run at ``out`` from a user's model and weights, then run the analysis on it.

    ``model``: ``pkg.module:Factory``, ``path/to/file.py:Factory`` or a zoo name
    (``simple_cnn``, ``shenjing.models:simple_cnn``), called with ``model_args``.
    ``weights``/``init_weights``: safetensors, a torch file read with ``weights_only=True``
    (``trust_pickle`` to allow a full unpickle), a TorchScript or torch.export archive.
    ``data``: a built-in dataset name, a ``.npz``/``.npy``, an image folder, a
    ``pkg.module:make_dataset`` factory, or a :class:`Dataset`.
    ``samples`` caps the test samples used by the landscapes, ``embed_samples`` /
    ``embed_train_samples`` those of the embeddings and their probes (None: all);
    ``line_steps``/``plane_steps`` size the landscapes (the plane is steps × steps).
    """
    from shenjing._device import resolve_device
    from shenjing.data.custom import load_data
    from shenjing.models.outputs import original_class
    from shenjing.models.weights import load_weights
    from shenjing.training import Recorder

    out = Path(out)
    if (out / "run.json").exists() and not force:
        raise RunError(f"{out} already holds a run; pass --force to replace it or choose "
                       "another --out folder")
    if out.exists() and not (out / "run.json").exists() and out.is_dir() and any(out.iterdir()):
        raise RunError(f"{out} exists and is not a shenjing run; refusing to write into it. "
                       "Choose an empty or new --out folder")
    with _no_bytecode():
        dataset = data if isinstance(data, Dataset) else load_data(
            str(data), data_dir=data_dir, seed=seed, progress=False)
    prepared = prepare_model(model, model_args, dataset, output=output, loss=loss, seed=seed)
    net = prepared.model
    model_name = original_class(net).__name__
    # load everything before writing anything: a mismatch must not leave a half run behind
    final = copy.deepcopy(net)
    final_report = load_weights(final, weights, strict=strict, trust_pickle=trust_pickle)
    if init_weights is not None:
        init_report = load_weights(net, init_weights, strict=strict, trust_pickle=trust_pickle,
                                   what="--init-weights")
        init_text = f"the weights of {init_weights} ({init_report.file.format})"
    else:
        init_text = (f"a fresh initialisation of {model_name} with torch seed {seed} (no "
                     "--init-weights given): the 'untrained' side of every comparison")
    example = dataset.test.x[:4]
    chosen_layers = list(layers) if layers else default_layers(final, example)
    if layers:
        from shenjing.capture.layers import resolve_layers

        chosen_layers = resolve_layers(final, list(layers))
    dev = resolve_device(device)
    config = {"source": "inspect", "weights": str(weights),
              "weights_format": final_report.file.format,
              "init": init_text, "init_weights": str(init_weights) if init_weights else None,
              "output_note": prepared.output_note, "layers": chosen_layers,
              "strict": strict, "trust_pickle": trust_pickle}
    builtin_loss = prepared.loss if ":" not in prepared.loss else (
        "cross_entropy" if prepared.task == "classification" else "mse")
    if out.exists() and force and (out / "run.json").exists():
        import shutil

        shutil.rmtree(out)
    net.to(dev)
    rec = Recorder(out, net, data=dataset, loss=builtin_loss, model_spec=prepared.spec,
                   seed=seed, config=config, device=dev)
    if builtin_loss != prepared.loss:  # a user loss function: evaluate with it, record its name
        rec.loss_fn = resolve_loss(prepared.loss)
        rec.loss_name = prepared.loss
        rec.run.update_manifest(config={**rec.run.manifest["config"], "loss": prepared.loss})
    run = rec.run
    # the stages below read run.data: hand them the dataset already in memory instead of
    # reloading it from its spec (Run.data is a cached_property)
    run.__dict__["data"] = dataset
    run.update_stage("inspect", "running", weights=str(weights))
    rec.start()
    with torch.no_grad():
        net.load_state_dict(final.state_dict())
    rec.end_epoch(extra={"source": "weights file", "weights": str(weights)})
    records = run.metrics()
    metrics = {"init": records[0], "final": records[-1]}
    ctx = {"model": final, "layers": chosen_layers,
           "penultimate": chosen_layers[-2] if len(chosen_layers) > 1 else chosen_layers[-1],
           "first_linear": _first_linear(final), "input_shape": dataset.input_shape,
           "n_test": len(dataset.test),
           "device": device,
           "options": {"line_steps": line_steps, "plane_steps": plane_steps,
                       "samples": samples, "embed_method": embed_method,
                       "embed_samples": embed_samples,
                       "embed_train_samples": embed_train_samples}}
    results = run_analysis(run, ctx, steps, on_step) if analysis else []
    report = run.path / "report.html"
    run.update_stage(
        "inspect", "done", weights=str(weights), weights_notes=list(final_report.notes),
        init=init_text, output=prepared.output_note, loss=prepared.loss,
        layers=chosen_layers,
        steps=[{"name": s.name, "status": s.status, "detail": s.detail} for s in results])
    return InspectResult(run=run, model_name=model_name, weights_notes=final_report.notes,
                         init=init_text, output_note=prepared.output_note, loss=prepared.loss,
                         layers=tuple(chosen_layers), metrics=metrics, steps=tuple(results),
                         report=report if report.exists() else None)


__all__ = ["ANALYSIS_STEPS", "AnalysisStep", "InspectResult", "PreparedModel", "StepResult",
           "choose_loss", "default_layers", "inspect_model", "prepare_model", "resolve_loss",
           "run_analysis"]

