"""``Recorder``: write a run directory from any training loop, ours or the user's.

    rec = Recorder("runs/mine", model, data=dataset, model_spec="my_pkg.nets:Net",
                   model_kwargs={"width": 64})
    rec.start()                       # epoch-000 checkpoint, layers.json, untrained metrics
    for epoch in range(5):
        for x, y in loader:
            out = model(x); loss = F.cross_entropy(out, y)
            opt.zero_grad(); loss.backward()
            rec.after_backward(loss, output=out, target=y)  # gradient norms
            opt.step()
        rec.end_epoch(optimizer=opt)  # evaluate, stats, checkpoint, one metrics line
    rec.close()                       # let other processes write the run (or use `with`)

Every parameter is tracked, grouped by module (:mod:`shenjing.training.stats`); the
epoch-0 line of metrics.jsonl lists the groups (``params``), so views read the coverage and
the model order from files alone. Our own trainer (:func:`shenjing.training.train`) uses
exactly this object.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shenjing import _io
from shenjing.data.types import Dataset, Split
from shenjing.errors import CheckpointError, UsageError
from shenjing.runs import LAYER_TABLE, Run, hold_writer_lock
from shenjing.training.evaluate import evaluate
from shenjing.training.losses import LOSS_NAMES, LossFn, get_loss, loss_task
from shenjing.training.stats import grad_norms as group_grad_norms
from shenjing.training.stats import group_parameters, group_tensors, layer_stats, snapshot

ModelSpec = Mapping[str, Any] | str

_SPEC_FORMS = ("a zoo spec (shenjing.models.model_spec(...)), a factory spec {'factory': "
               "'pkg.mod:Net', 'kwargs': {...}}, a string 'pkg.mod:Net' or "
               "'path/to/file.py:Net' (with model_kwargs=...), or None")


def recorded_model_spec(model: nn.Module, spec: ModelSpec | None,
                        kwargs: Mapping[str, Any] | None, data: Dataset | None
                        ) -> dict[str, Any]:
    """The model entry of run.json: a zoo spec, a factory spec, or — without ``spec`` —
    ``{"class", "rebuildable": False, "why", "input_shape", "n_outputs"}`` saying what the
    network is and why the run cannot rebuild it. Checks the spec's form (no import).
    """
    from shenjing.models.spec import user_model_spec, zoo_name
    from shenjing.models.zoo import MODELS

    sizes: dict[str, Any] = {}
    if data is not None:
        sizes = {"input_shape": list(data.input_shape), "n_outputs": int(data.output_dim)}
    if spec is None:
        if kwargs:
            raise UsageError("model_kwargs needs model_spec: pass model_spec='pkg.mod:Net' "
                             "(or 'path/to/file.py:Net') to say what the kwargs are for")
        from shenjing.models.outputs import original_class

        cls = original_class(model)  # the user's class, not an output-selecting wrapper
        return {"name": cls.__name__, "class": f"{cls.__module__}.{cls.__qualname__}",
                "rebuildable": False,
                "why": "was recorded by sj.Recorder without a model_spec",
                **sizes}
    if isinstance(spec, str):
        name = zoo_name(spec)
        if name is not None:
            if data is None:
                raise UsageError(f"model_spec {spec!r} is a zoo model: pass data= so its "
                                 "input shape and number of outputs are known")
        else:
            module_ref, _, attr = spec.rpartition(":")
            if not module_ref or not attr:
                raise UsageError(f"model_spec {spec!r} must be a zoo model name "
                                 f"({', '.join(MODELS)}) or 'pkg.module:Factory' / "
                                 "'path/to/file.py:Factory'")
            if module_ref.endswith(".py") and not Path(module_ref).is_file():
                raise UsageError(f"model_spec {spec!r}: no file {module_ref} (from "
                                 f"{Path.cwd()})")
        return user_model_spec(spec, dict(kwargs or {}),
                               input_shape=data.input_shape if data is not None else None,
                               n_outputs=data.output_dim if data is not None else None)
    if not isinstance(spec, Mapping):
        raise UsageError(f"model_spec must be {_SPEC_FORMS}; got a {type(spec).__name__}")
    if kwargs:
        raise UsageError("model_kwargs goes with a string model_spec; a dict spec carries "
                         "its own 'kwargs'")
    out = dict(spec)
    zoo = out.get("name") in MODELS and "input_shape" in out and "n_outputs" in out
    factory = isinstance(out.get("factory"), str) and ":" in out["factory"]
    opaque = out.get("rebuildable") is False and isinstance(out.get("class"), str)
    if not (zoo or factory or opaque):
        raise UsageError(f"model_spec must be {_SPEC_FORMS}; got {out!r:.120}")
    if factory:  # a file path is stored absolute, so the run opens from any folder
        module_ref, _, attr = out["factory"].rpartition(":")
        if module_ref.endswith(".py"):
            out["factory"] = f"{Path(module_ref).resolve()}:{attr}"
    if opaque:
        out = {**sizes, **out}
    return out


def _loss_reference(fn: Callable[..., Any]) -> str:
    """How run.json names a loss callable: ``pkg.mod:name`` when that re-imports it, else
    ``custom`` (a lambda, a local function or a script's ``__main__``: later views that need
    the loss say so)."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return "custom"
    return f"{module}:{qualname}"


class Recorder:
    """Records checkpoints, per-epoch metrics and per-group dynamics into a run directory.

    ``model_spec`` is how the run rebuilds the architecture later: a zoo spec from
    :func:`shenjing.models.model_spec`, a factory spec ``{"factory": "pkg.mod:Net",
    "kwargs": {...}}``, or a string ``"pkg.mod:Net"`` / ``"path/file.py:Net"`` (or a zoo
    name) with ``model_kwargs``. Without one the run still holds checkpoints, metrics and
    the layer table (dynamics, weights and the report work), and run.json says that the
    network cannot be rebuilt and why.

    ``loss`` names the loss (a built-in name or ``pkg.mod:function``); ``loss_fn`` is the
    callable itself (``fn(output, target)`` → batch mean), used to evaluate; with both,
    ``loss`` is the name recorded.

    The Recorder holds the run's writer lock from its creation until :meth:`close` (or the
    end of a ``with`` block, or of the object, or of the process): another process that
    tries to write the run meanwhile is refused with one line naming this one.

    >>> import tempfile
    >>> from torch import nn
    >>> from shenjing.data import load_dataset
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    >>> with Recorder(f"{tempfile.mkdtemp()}/run", net, data=load_dataset("digits")) as rec:
    ...     rec.start()                       # epoch 0: the untrained net
    ...     record = rec.end_epoch()          # after a pass over the data (none here)
    >>> rec.run.epochs, record["epoch"]
    ([0, 1], 1)
    """

    def __init__(self, run: str | os.PathLike[str] | Run, model: nn.Module, *,
                 data: Dataset | None = None, loss: str | None = None,
                 loss_fn: LossFn | None = None,
                 model_spec: ModelSpec | None = None,
                 model_kwargs: Mapping[str, Any] | None = None, seed: int = 0,
                 config: dict[str, Any] | None = None, eval_split: Split | None = None,
                 device: torch.device | str | None = None, overwrite: bool = False) -> None:
        if loss_fn is not None and not callable(loss_fn):
            raise UsageError(f"loss_fn must be a callable fn(output, target) -> loss, got "
                             f"{type(loss_fn).__name__}; pass a name as loss=")
        task: str = data.task if data is not None else "classification"
        if loss_fn is None:
            self.loss_name = loss or "cross_entropy"
            self.loss_fn = get_loss(self.loss_name)
            task = loss_task(self.loss_name, task)
        else:
            self.loss_name = loss or _loss_reference(loss_fn)
            self.loss_fn = loss_fn
            if self.loss_name in LOSS_NAMES:
                task = loss_task(self.loss_name, task)
        self.model = model
        self.classification = task == "classification"
        self.data = data
        self.eval_split = eval_split if eval_split is not None else (
            data.test if data is not None else None)
        self.device = torch.device(device) if device is not None else _model_device(model)
        self._groups = group_parameters(model)
        opens = isinstance(run, Run) or ((Path(run) / "run.json").exists() and not overwrite)
        # the spec is checked before the lock is taken: a bad argument creates nothing
        spec = None if opens else recorded_model_spec(model, model_spec, model_kwargs, data)
        if not isinstance(run, Run) and opens:
            run = Run(run)  # a foreign run.json is refused before any lock file is written
        self._lock = hold_writer_lock(self, run.path if isinstance(run, Run) else run)
        if isinstance(run, Run):
            self.run = run
        else:
            assert spec is not None
            self.run = Run.create(
                run, model=spec,
                data=data.spec if data is not None else {"name": "custom"}, seed=seed,
                task="classification" if self.classification else "regression",
                classes=data.classes if data is not None else (),
                config={**(config or {}), "loss": self.loss_name}, overwrite=overwrite)
        self.epoch = 0
        self._initial: dict[str, torch.Tensor] | None = None
        self._previous: dict[str, torch.Tensor] | None = None
        self._grad_sums: dict[str, float] = {}
        self._n_steps_epoch = 0
        self._train_loss_sum = 0.0
        self._train_correct = 0
        self._train_seen = 0
        self.steps = 0

    # ---- lifecycle --------------------------------------------------------------------
    def close(self) -> None:
        """Release the run's writer lock (the run stays as written; calling twice is fine)."""
        self._lock.release()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Save the untrained net as epoch 0, its layer table, and record its metrics."""
        self.run.sweep_stale_temps()
        self._initial = snapshot(self._tensors())
        self._previous = None
        self.run.save_checkpoint(0, self.model)
        self._write_layer_table()
        self._write_epoch(0, lr=None, train_loss=None, train_accuracy=None, grad_norms=None,
                          extra={"params": self._groups.to_record()})
        self._previous = self._initial

    def resume(self, epoch: int) -> None:
        """Continue after ``epoch``: reload the weights there and forget later records."""
        self.run.sweep_stale_temps()
        try:
            self.model.load_state_dict(self.run.state_dict(epoch))
        except RuntimeError as exc:
            raise CheckpointError(f"{self.run.checkpoint_path(epoch)} does not fit the model "
                                  f"being resumed: {str(exc).splitlines()[0]}") from None
        initial = self.run.state_dict(0)
        self._initial = snapshot({g.name: [initial[p] for p in g.params]
                                  for g in self._groups.groups})
        self._previous = snapshot(self._tensors())
        self.epoch = epoch
        records = [r for r in self.run.metrics() if r["epoch"] <= epoch]
        _io.write_text(self.run.metrics_path, "".join(_io.jsonl_line(r) for r in records))
        self.steps = records[-1].get("steps", 0) if records else 0

    def after_backward(self, loss: torch.Tensor | float | None = None, *,
                       output: torch.Tensor | None = None,
                       target: torch.Tensor | None = None) -> None:
        """Call after ``loss.backward()``, before ``optimizer.step()``: gradient norms of every
        parameter group and (optionally) the batch's loss and accuracy for the epoch's
        training averages."""
        for name, norm in group_grad_norms(self._tensors()).items():
            self._grad_sums[name] = self._grad_sums.get(name, 0.0) + norm
        self._n_steps_epoch += 1
        self.steps += 1
        if loss is not None:
            n = int(target.shape[0]) if target is not None else 1
            value = loss.detach() if isinstance(loss, torch.Tensor) else loss
            self._train_loss_sum += float(value) * n
            self._train_seen += n
            if output is not None and target is not None and self.classification:
                self._train_correct += int((output.detach().argmax(1) == target).sum())

    def end_epoch(self, *, optimizer: torch.optim.Optimizer | None = None,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Close an epoch: checkpoint, evaluate, compute layer stats, append one metrics line."""
        if self._initial is None:
            raise RuntimeError("call Recorder.start() before the first epoch")
        self.epoch += 1
        grad_norms = {k: v / self._n_steps_epoch for k, v in self._grad_sums.items()} \
            if self._n_steps_epoch else None
        train_loss = self._train_loss_sum / self._train_seen if self._train_seen else None
        train_acc = (self._train_correct / self._train_seen
                     if self._train_seen and self.classification else None)
        lr = optimizer.param_groups[0]["lr"] if optimizer is not None else None
        self.run.save_checkpoint(self.epoch, self.model)
        if optimizer is not None:
            self._save_state(optimizer)
        record = self._write_epoch(self.epoch, lr=lr, train_loss=train_loss,
                                   train_accuracy=train_acc, grad_norms=grad_norms, extra=extra)
        self._grad_sums, self._n_steps_epoch = {}, 0
        self._train_loss_sum, self._train_correct, self._train_seen = 0.0, 0, 0
        return record

    # ---- internals --------------------------------------------------------------------
    def _tensors(self) -> dict[str, list[torch.Tensor]]:
        # looked up each time: the user may move the model or swap a parameter between calls
        return group_tensors(self.model, self._groups)

    def _write_layer_table(self) -> None:
        """``RUN/layers.json`` (run-format contract): the model's layers, shapes and
        parameter counts from one 2-sample test batch, so views that never build the model
        still know its structure and order."""
        from shenjing.capture.layers import list_layers

        if self.eval_split is None or len(self.eval_split) == 0:
            return
        example = self.eval_split.x[:2].to(self.device)
        table = list_layers(self.model, example)
        _io.write_json(self.run.path / LAYER_TABLE, table.to_dict())

    def _write_epoch(self, epoch: int, *, lr: float | None, train_loss: float | None,
                     train_accuracy: float | None, grad_norms: dict[str, float] | None,
                     extra: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self._initial is not None
        current = snapshot(self._tensors())
        record: dict[str, Any] = {"epoch": epoch, "steps": self.steps, "lr": lr,
                                  "train_loss": train_loss, "train_accuracy": train_accuracy}
        if self.eval_split is not None:
            ev = evaluate(self.model, self.eval_split, self.loss_fn, device=self.device,
                          classification=self.classification)
            record.update(test_loss=ev.loss, test_accuracy=ev.accuracy,
                          dead_units=ev.dead_units)
        record["layers"] = layer_stats(current, self._previous, self._initial, grad_norms)
        if extra:
            record.update(extra)
        _io.append_jsonl(self.run.metrics_path, record)
        self._previous = current
        return record

    def _save_state(self, optimizer: torch.optim.Optimizer) -> None:
        """Optimizer + RNG state for ``--resume`` (loaded back with weights_only=True)."""
        target = self.run.checkpoints_dir / f"state-{self.epoch:03d}.pt"
        with _io.atomic_path(target) as tmp:
            torch.save({"epoch": self.epoch, "optimizer": optimizer.state_dict(),
                        "torch_rng": torch.get_rng_state(), "steps": self.steps}, tmp)
        for old in self.run.checkpoints_dir.iterdir():
            found = _STATE_FILE.match(old.name)
            if found and old != target and int(found[1]) < self.epoch - 1:
                old.unlink(missing_ok=True)


_STATE_FILE = re.compile(r"^state-(\d{3,})\.pt$")


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def load_train_state(run: Run, epoch: int) -> dict[str, Any] | None:
    """The optimizer/RNG state saved after ``epoch`` (None if absent).

    Read with ``torch.load(weights_only=True)``: a file holding anything but tensors and
    plain containers (a pickle of an object, which could run code) or a damaged one is
    refused with one :class:`~shenjing.errors.CheckpointError`, and nothing runs.
    """
    path = run.checkpoints_dir / f"state-{epoch:03d}.pt"
    if not path.exists():
        return None
    fix = ("delete it to resume from the epoch before (or start over with --force); never "
           "load it with torch.load(weights_only=False) unless you wrote it yourself")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise CheckpointError(f"{path}: cannot be read as optimizer state (not the zip "
                              f"archive torch.save writes); the file is damaged: {fix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: refused, it is not plain optimizer state "
                              f"({_first_line(exc)}); {fix}") from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, zip errors, …
        raise CheckpointError(f"{path}: cannot be read as optimizer state "
                              f"({type(exc).__name__}: {_first_line(exc)}); the file is "
                              f"damaged: {fix}") from None
    if not isinstance(state, dict) or not isinstance(state.get("optimizer"), dict):
        raise CheckpointError(f"{path}: not the optimizer state shenjing saves (a dict with "
                              f"'optimizer'); {fix}")
    return state


def _first_line(exc: BaseException) -> str:
    """The first line of an error's message, cut to a length that fits one line."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]
