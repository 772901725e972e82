"""What the Lightning and Hugging Face callbacks share: opening the run a callback records
into (refusing a folder that holds another model's run before anything is written), and
evaluating a model whose ``forward`` returns more than the prediction.

Both callbacks drive one :class:`shenjing.training.Recorder`, the object our own trainer
uses, so the run directory they write is the same format, byte for byte in its structure.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shenjing.data.types import Dataset, Split
from shenjing.errors import UsageError
from shenjing.runs import MANIFEST, Run
from shenjing.training.losses import LossFn
from shenjing.training.recorder import ModelSpec, Recorder


def run_model_name(run: Run) -> str:
    """The model a run holds, as a user would name it: the zoo name, the factory, the
    class, or the layer table's model name."""
    model = run.manifest.get("model") or {}
    for key in ("name", "factory", "class"):
        if isinstance(model.get(key), str):
            return str(model[key])
    return "an unknown model"


def _shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def check_run_folder(path: Path, model: nn.Module, *, overwrite: bool, who: str) -> None:
    """Refuse ``path`` if it holds a run the callback would damage, before anything is
    written: another model's run (named, with its first differing tensor) always, and any
    earlier run unless ``overwrite``."""
    if not (path / MANIFEST).exists():
        if path.exists() and not path.is_dir():
            raise UsageError(f"{who}: run={str(path)!r} is a file, not a folder; pass a new "
                             "or empty folder for the run")
        return
    run = Run(path)  # a foreign or newer run.json is refused here, in one line
    from shenjing.models.outputs import original_class

    mine = original_class(model).__name__
    theirs = run_model_name(run)
    ours = _shapes(model.state_dict())
    try:
        recorded = _shapes(run.state_dict(0)) if 0 in run.epochs else None
    except Exception:  # a damaged checkpoint: the run is not this model's either way
        recorded = None
    differs = recorded is not None and recorded != ours
    if differs:
        assert recorded is not None
        only_run = sorted(set(recorded) - set(ours))
        only_model = sorted(set(ours) - set(recorded))
        changed = sorted(k for k in set(ours) & set(recorded) if ours[k] != recorded[k])
        if changed:
            k = changed[0]
            detail = f"tensor {k!r} is {list(recorded[k])} there, {list(ours[k])} here"
        elif only_run:
            detail = f"it has tensor {only_run[0]!r}, which {mine} lacks"
        else:
            detail = f"{mine} has tensor {only_model[0]!r}, which that run lacks"
        raise UsageError(
            f"{who}: run folder {path} belongs to another model ({theirs}; {detail}), but "
            f"this training records {mine}; pass a new run= folder for {mine} (nothing was "
            "written)")
    if not overwrite:
        raise UsageError(f"{who}: {path} already holds a run of {theirs}; pass a new run= "
                         "folder, or overwrite=True to replace it (nothing was written)")


def open_recorder(run: str | os.PathLike[str], model: nn.Module, *, who: str,
                  data: Dataset | None, eval_split: Split | None, loss: str | None,
                  loss_fn: LossFn | None, model_spec: ModelSpec | None,
                  model_kwargs: Mapping[str, Any] | None, seed: int,
                  config: dict[str, Any], overwrite: bool) -> Recorder:
    """A :class:`Recorder` for a new run at ``run`` (checked first, see
    :func:`check_run_folder`)."""
    if data is None and eval_split is None:
        raise UsageError(f"{who} needs held-out data to evaluate each epoch (test loss, "
                         "accuracy, dead units): pass data=<a shenjing Dataset> or "
                         "eval_split=<a Split of held-out samples>")
    path = Path(run)
    check_run_folder(path, model, overwrite=overwrite, who=who)
    if overwrite and (path / MANIFEST).exists():
        from shenjing.runs import check_removable, remove_run

        check_removable(path)  # a folder holding what shenjing did not write: refused
        remove_run(path)  # no checkpoint of the earlier, longer run may stay behind
    return Recorder(path, model, data=data, loss=loss, loss_fn=loss_fn,
                    model_spec=model_spec, model_kwargs=model_kwargs, seed=seed,
                    config=config, eval_split=eval_split, overwrite=overwrite)


def start_recording(run: str | os.PathLike[str], model: nn.Module, *, who: str,
                    config: dict[str, Any], options: Mapping[str, Any], trainer: str,
                    epochs: Any, output: str | int | None) -> tuple[Recorder, bool]:
    """Open the run (checked, :func:`open_recorder`), mark training running and save epoch
    0 with its metrics: what both callbacks do before the first step. Returns the recorder
    and whether the model's outputs need selecting (it returns no plain tensor); nothing
    stays open when it raises."""
    rec = open_recorder(run, model, who=who, config=config, **options)
    try:
        assert rec.eval_split is not None
        wrap = not returns_tensor(model, rec.eval_split, rec.device)
        rec.run.update_stage("train", "running", trainer=trainer, epochs=epochs)
        with predicting(model, output) if wrap else contextlib.nullcontext():
            rec.start()
    except BaseException:
        rec.close()
        raise
    return rec, wrap


def finish_recording(rec: Recorder, *, trainer: str) -> None:
    """Mark the run's train stage done with its last epoch's test numbers (both callbacks
    at the end of training; they then release the recorder)."""
    final = rec.run.metrics()[-1]
    rec.run.update_stage("train", "done", trainer=trainer, epochs=rec.epoch,
                         test_accuracy=final.get("test_accuracy"),
                         test_loss=final.get("test_loss"))


@contextlib.contextmanager
def predicting(model: nn.Module, output: str | int | None) -> Iterator[None]:
    """For the block, make ``model(x)`` return its prediction tensor (the ``logits`` of a
    Hugging Face ``ModelOutput``, or ``output``), then give the model back its own class, so
    the training library sees the model's real outputs again. Layer names and state-dict keys
    never change (see :mod:`shenjing.models.outputs`)."""
    from shenjing.models.outputs import OutputSelector, with_output

    before = type(model)
    selected = with_output(model, output)
    if isinstance(selected, OutputSelector):  # a class that cannot be swapped
        raise UsageError(f"cannot select the prediction of {type(model).__name__} in place; "
                         "give it a forward that returns the prediction tensor")
    try:
        yield
    finally:
        model.__class__ = before


def returns_tensor(model: nn.Module, split: Split, device: torch.device) -> bool:
    """Whether ``model(x)`` on two held-out samples is a plain tensor."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(split.x[:2].to(device))
    finally:
        model.train(was)
    return isinstance(out, torch.Tensor)
