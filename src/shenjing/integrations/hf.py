"""Hugging Face: record a ``transformers.Trainer`` into a run; load a saved model for views.

    from shenjing.integrations.hf import ShenjingTrainerCallback
    cb = ShenjingTrainerCallback(run="runs/vit", data=sj.load_dataset("digits"))
    Trainer(model, args, train_dataset=..., callbacks=[cb]).train()

:class:`ShenjingTrainerCallback` drives the same :class:`shenjing.training.Recorder` as our
trainer: epoch-000 checkpoint, one checkpoint and one metrics line per epoch, per-layer
dynamics, gradient norms, test loss/accuracy and dead units on the held-out split.

Where the gradient norms are taken: ``TrainerCallback.on_pre_optimizer_step``. In
transformers 5.x (``transformers/trainer.py``, the inner training loop, once per optimizer
step when ``do_sync_step``) the Trainer first calls ``_clip_grad_norm`` (when
``max_grad_norm > 0``), then ``_get_grad_norm``, both through
``accelerator.clip_grad_norm_``, which unscales AMP gradients first; only then
``on_pre_optimizer_step``, then ``optimizer.step()``. So the norms are of the final,
unscaled gradients **after clipping** (with the Trainer's default ``max_grad_norm=1.0`` a
clipped step's total norm is 1); pass ``max_grad_norm=0`` to record them unclipped.

Training loss: the Trainer does not hand a callback the batch's loss; the epoch's
``train_loss`` is the mean of the losses the Trainer logs during the epoch
(``logging_strategy="epoch"`` gives exactly the epoch's mean over its steps; with
``"steps"`` each logged window counts in the epoch it is logged in). ``train_accuracy`` is
not known to the Trainer and stays empty.

:func:`pretrained_folder` builds a model saved with ``save_pretrained`` (config.json +
model.safetensors) from its config alone — never running code from the folder — for
``shenjing inspect --model hf:FOLDER``, which then loads the weights with safetensors.

transformers is an optional extra: importing this module without it raises one error with
the pip line (``pip install "shenjing[hf]"``); ``import shenjing`` never imports it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from shenjing._optional import require
from shenjing.data.types import Dataset, Split
from shenjing.errors import UsageError
from shenjing.integrations._common import finish_recording, predicting, start_recording
from shenjing.training.losses import LossFn
from shenjing.training.recorder import ModelSpec, Recorder

_PURPOSE = "shenjing.integrations.hf (Hugging Face models and Trainer)"
WHO = "ShenjingTrainerCallback"


def _transformers() -> Any:
    return require("transformers", extra="hf", purpose=_PURPOSE)


# ---- a saved model, built from its config ----------------------------------------------------
def hf_folder_files(folder: str | os.PathLike[str]) -> tuple[Path, Path | None]:
    """``(config.json, model.safetensors or None)`` of a ``save_pretrained`` folder, checked:
    a missing config, a pickle-only weights file, or a config that asks for its own code
    is refused with what to do."""
    path = Path(folder)
    config = path / "config.json"
    if not path.is_dir():
        raise UsageError(f"--model hf:{folder}: no folder {path} (a Hugging Face model saved "
                         "with save_pretrained: config.json + model.safetensors)")
    if not config.is_file():
        raise UsageError(f"--model hf:{folder}: {path} has no config.json; save the model "
                         "with model.save_pretrained(folder)")
    weights = path / "model.safetensors"
    if not weights.is_file():
        if any(path.glob("model-*-of-*.safetensors")):
            raise UsageError(f"--model hf:{folder}: the weights are sharded "
                             "(model-*-of-*.safetensors); save them as one file with "
                             "save_pretrained(folder, max_shard_size='100GB')")
        if (path / "pytorch_model.bin").is_file():
            raise UsageError(f"--model hf:{folder}: only pytorch_model.bin (a pickle) is there; "
                             "shenjing reads Hugging Face weights from model.safetensors only: "
                             "save with save_pretrained(folder, safe_serialization=True), or "
                             "pass --weights FILE")
        return config, None
    return config, weights


def pretrained_folder(folder: str) -> nn.Module:
    """The model a ``save_pretrained`` folder describes, built from its ``config.json`` with
    fresh (seeded by the caller) weights; the folder's own weights are loaded separately,
    from safetensors. Code in the folder never runs: a config with ``auto_map`` (a model
    that needs ``trust_remote_code``) is refused, and the class must be one of
    transformers' own (``config.architectures[0]``)."""
    transformers = _transformers()
    config_file, _ = hf_folder_files(folder)
    import json

    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"--model hf:{folder}: cannot read {config_file} as JSON ({exc})"
                         ) from None
    if not isinstance(raw, dict):
        raise UsageError(f"--model hf:{folder}: {config_file} is not a JSON object")
    if raw.get("auto_map"):
        raise UsageError(f"--model hf:{folder}: the config names its own code (auto_map: "
                         f"{sorted(raw['auto_map'])}), which shenjing never runs "
                         "(trust_remote_code stays off); use a model class transformers "
                         "ships, or pass --model pkg.module:Factory with your code")
    archs = raw.get("architectures") or []
    name = archs[0] if archs and isinstance(archs[0], str) else None
    cls = getattr(transformers, name, None) if name else None
    if cls is None or not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise UsageError(f"--model hf:{folder}: config.architectures is {archs!r}, not a model "
                         "class of the installed transformers; save the model with "
                         "save_pretrained (which writes it), or pass --model "
                         "pkg.module:Factory")
    try:
        config = transformers.AutoConfig.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=False)
        model = cls(config)
    except Exception as exc:
        raise UsageError(f"--model hf:{folder}: transformers could not build {name} from "
                         f"{config_file}: {type(exc).__name__}: {exc}") from None
    return model


def load_pretrained_weights(model: nn.Module, folder: str | os.PathLike[str]) -> str:
    """Load a ``save_pretrained`` folder's ``model.safetensors`` into ``model`` (built by
    :func:`pretrained_folder`) the way transformers reads it — safetensors only
    (``use_safetensors=True``), local files only, ``trust_remote_code=False`` — since
    transformers 5 renames a checkpoint's keys while loading. Every tensor must match.
    Returns the format, for run.json."""
    _, weights = hf_folder_files(folder)
    if weights is None:
        raise UsageError(f"--model hf:{folder}: the folder has no model.safetensors")
    cls: Any = getattr(type(model), "_shenjing_original_class", type(model))
    try:
        loaded = cls.from_pretrained(str(folder), local_files_only=True, use_safetensors=True,
                                     trust_remote_code=False)
    except Exception as exc:
        raise UsageError(f"--model hf:{folder}: transformers could not read "
                         f"{weights}: {type(exc).__name__}: {exc}") from None
    state = loaded.state_dict()
    mine = model.state_dict()
    if state.keys() != mine.keys() or any(state[k].shape != mine[k].shape for k in mine):
        raise UsageError(f"--model hf:{folder}: {weights} does not fit the model its "
                         "config.json builds; save the model again with save_pretrained")
    model.load_state_dict(state)
    return "safetensors (save_pretrained, read by transformers)"


# ---- the Trainer callback --------------------------------------------------------------------
class _Recording:
    """The state and logic of :class:`ShenjingTrainerCallback` (the hooks it overrides)."""

    def __init__(self, run: str | os.PathLike[str], *, data: Dataset | None = None,
                 eval_split: Split | None = None, model_spec: ModelSpec | None = None,
                 model_kwargs: Mapping[str, Any] | None = None, loss: str | None = None,
                 loss_fn: LossFn | None = None, output: str | int | None = None,
                 seed: int = 0, config: dict[str, Any] | None = None,
                 overwrite: bool = False) -> None:
        self.path = os.fspath(run)
        self._options = {"data": data, "eval_split": eval_split, "loss": loss,
                         "loss_fn": loss_fn, "model_spec": model_spec,
                         "model_kwargs": model_kwargs, "seed": seed,
                         "overwrite": overwrite}
        self._config = dict(config or {})
        self.output = output
        self.recorder: Recorder | None = None
        self._net: nn.Module | None = None
        self._wrap = False
        self._pending = False
        self._optimizer: Any = None
        self._loss_steps = 0.0
        self._loss_sum = 0.0
        self._last_logged = 0

    def _predicting(self) -> contextlib.AbstractContextManager[None]:
        assert self._net is not None
        return predicting(self._net, self.output) if self._wrap else contextlib.nullcontext()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Open the run (checked), save epoch 0 and its metrics before the first step."""
        model = kwargs.get("model")
        if not isinstance(model, nn.Module):
            raise UsageError(f"{WHO}: the Trainer gave no model to record")
        optimizer = kwargs.get("optimizer")
        config = {"trainer": "transformers", "epochs": args.num_train_epochs,
                  "lr": args.learning_rate, "batch_size": args.per_device_train_batch_size,
                  "gradient_accumulation_steps": args.gradient_accumulation_steps,
                  "max_grad_norm": args.max_grad_norm,
                  "lr_scheduler": str(getattr(args.lr_scheduler_type, "value",
                                              args.lr_scheduler_type)),
                  "grad_norm": "after AMP unscaling, after clipping "
                               "(Trainer on_pre_optimizer_step)",
                  "optimizer": type(getattr(optimizer, "optimizer", optimizer)).__name__.lower(),
                  **self._config}
        self.recorder, self._wrap = start_recording(
            self.path, model, who=WHO, config=config, options=self._options,
            trainer="transformers", epochs=args.num_train_epochs, output=self.output)
        self._net, self._optimizer = model, optimizer
        self._last_logged = state.global_step

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._flush()

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any,
                              **kwargs: Any) -> None:
        """Gradient norms per layer: final (all micro-batches), unscaled, after clipping."""
        if self.recorder is not None:
            self.recorder.after_backward()

    def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None,
               **kwargs: Any) -> None:
        """Count a logged training loss (a mean over the steps since the last log)."""
        if logs and isinstance(logs.get("loss"), (int, float)):
            steps = state.global_step - self._last_logged
            if steps > 0:
                self._loss_sum += float(logs["loss"]) * steps
                self._loss_steps += steps
            self._last_logged = state.global_step
        if self._pending:
            self._flush()

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Close the epoch once the Trainer's epoch log (right after this hook) is in: the
        weights do not change in between."""
        self._pending = self.recorder is not None
        if str(getattr(args.logging_strategy, "value", args.logging_strategy)) != "epoch":
            self._flush()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Write the last epoch, mark the train stage done, release the run."""
        self._flush()
        rec = self.recorder
        if rec is None:
            return
        finish_recording(rec, trainer="transformers")
        rec.close()

    def _flush(self) -> None:
        """Checkpoint, evaluate on the held-out split, write the epoch's metrics line."""
        if not self._pending or self.recorder is None:
            return
        self._pending = False
        extra = {"train_loss": self._loss_sum / self._loss_steps if self._loss_steps
                 else None, "train_accuracy": None}
        optimizer = getattr(self._optimizer, "optimizer", self._optimizer)
        with self._predicting():
            self.recorder.end_epoch(optimizer=optimizer, extra=extra)
        self._loss_sum, self._loss_steps = 0.0, 0


class ShenjingTrainerCallback(_Recording, _transformers().TrainerCallback):  # type: ignore[misc]
    """A ``transformers.TrainerCallback`` that writes the training into the run folder ``run``.

    ``data`` (a shenjing Dataset; its test split is held out) or ``eval_split`` (a Split) is
    evaluated each epoch: test loss, accuracy and dead ReLU units. The model recorded is the
    Trainer's; a ``ModelOutput`` is reduced to its ``logits`` (or ``output``) for the
    evaluation only (the Trainer keeps getting the model's real outputs). ``model_spec`` /
    ``model_kwargs`` say how the run rebuilds the network; ``loss`` / ``loss_fn`` evaluate it
    (default cross-entropy). A folder holding another model's run is refused before anything
    is written (the same model's too unless ``overwrite=True``). Gradient norms are after AMP
    unscaling and after clipping (see the module docstring).
    """


__all__ = ["ShenjingTrainerCallback", "hf_folder_files", "load_pretrained_weights",
           "pretrained_folder"]
