"""``ShenjingCallback``: record a PyTorch Lightning training into a shenjing run directory.

    from shenjing.integrations.lightning import ShenjingCallback
    from shenjing.models import model_spec
    cb = ShenjingCallback(run="runs/lit", data=sj.load_dataset("digits"), model="net",
                          model_spec=model_spec("mlp", (1, 8, 8), 10))
    L.Trainer(max_epochs=5, callbacks=[cb]).fit(lit_module, train_loader)

The run gets what :class:`shenjing.training.Recorder` writes for our own trainer: the
epoch-000 checkpoint (the net before its first step), one checkpoint and one metrics line per
epoch, per-layer dynamics, gradient norms, test loss/accuracy and dead units on the held-out
split; every shenjing view then works on it (``shenjing report RUN``, ``dynamics`` …).

Where the gradient norms are taken: Lightning's ``on_before_optimizer_step`` hook. In
lightning 2.6 (``lightning/pytorch/plugins/precision/precision.py``,
``Precision._after_closure``) that hook runs after the closure (training step + backward)
and *before* ``_clip_gradients``; under 16-bit AMP (``plugins/precision/amp.py``,
``MixedPrecision.optimizer_step``) ``scaler.unscale_(optimizer)`` runs before it. So the
norms are of the final, unscaled gradients, **before clipping**, once per optimizer step
(after all accumulated micro-batches).

Lightning is an optional extra: importing this module without it raises one error with the
pip line (``pip install "shenjing[lightning]"``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from shenjing._optional import require
from shenjing.data.types import Dataset, Split
from shenjing.errors import UsageError
from shenjing.integrations._common import finish_recording, predicting, start_recording
from shenjing.runs import record_failure
from shenjing.training.losses import LossFn
from shenjing.training.recorder import ModelSpec, Recorder

_pl = require("lightning.pytorch", extra="lightning",
              purpose="shenjing.integrations.lightning (recording a Lightning training)")

WHO = "ShenjingCallback"


class ShenjingCallback(_pl.Callback):  # type: ignore[name-defined]
    """A Lightning callback that writes the training into the run folder ``run``.

    ``data`` (a shenjing :class:`~shenjing.data.Dataset`; its test split is held out) or
    ``eval_split`` (any :class:`~shenjing.data.types.Split`) is what each epoch is evaluated
    on: test loss, accuracy and dead ReLU units. ``model`` is the network to record: the
    LightningModule itself (default), the name of one of its attributes (``"net"``), or a
    module; its ``forward(x)`` must give the prediction (a dict or ``ModelOutput`` is fine:
    ``output`` picks the entry, default ``logits``). ``model_spec`` / ``model_kwargs`` say how
    the run rebuilds the network later (see :class:`~shenjing.training.Recorder`); ``loss``
    / ``loss_fn`` evaluate it (default cross-entropy). A folder that already holds a run is
    refused before anything is written (another model's run always; the same model's unless
    ``overwrite=True``).

    Training loss and accuracy: from what ``training_step`` returns, ``loss`` (a tensor, or
    the dict's ``"loss"``) averaged over the epoch's batches weighted by their size, and the
    accuracy when the dict also holds ``"logits"`` and the batch is ``(x, y)``.
    """

    def __init__(self, run: str | os.PathLike[str], *, data: Dataset | None = None,
                 eval_split: Split | None = None, model: str | nn.Module | None = None,
                 model_spec: ModelSpec | None = None,
                 model_kwargs: Mapping[str, Any] | None = None, loss: str | None = None,
                 loss_fn: LossFn | None = None, output: str | int | None = None,
                 seed: int = 0, config: dict[str, Any] | None = None,
                 overwrite: bool = False) -> None:
        super().__init__()
        if model is not None and not isinstance(model, (str, nn.Module)):
            raise UsageError(f"{WHO}: model= must be an attribute name of the LightningModule "
                             f"or an nn.Module, got {type(model).__name__}")
        self.path = os.fspath(run)
        self._options = {"data": data, "eval_split": eval_split, "loss": loss,
                         "loss_fn": loss_fn, "model_spec": model_spec,
                         "model_kwargs": model_kwargs, "seed": seed,
                         "overwrite": overwrite}
        self._config = dict(config or {})
        self._model_ref = model
        self.output = output
        self.recorder: Recorder | None = None
        self._net: nn.Module | None = None
        self._wrap = False
        self._loss_sum = 0.0
        self._correct = 0
        self._seen = 0
        self._acc_seen = 0

    # ---- which module, and how it predicts ----------------------------------------------
    def _network(self, pl_module: nn.Module) -> nn.Module:
        ref = self._model_ref
        if ref is None:
            return pl_module
        if isinstance(ref, nn.Module):
            return ref
        found = getattr(pl_module, ref, None)
        if not isinstance(found, nn.Module):
            names = [n for n, _ in pl_module.named_children()]
            raise UsageError(f"{WHO}: model={ref!r} is not a module of "
                             f"{type(pl_module).__name__}; its modules are: "
                             f"{', '.join(names) or 'none'}")
        return found

    def _predicting(self) -> contextlib.AbstractContextManager[None]:
        assert self._net is not None
        return predicting(self._net, self.output) if self._wrap else contextlib.nullcontext()

    # ---- Lightning hooks ----------------------------------------------------------------
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Open the run (checked), save epoch 0 and its metrics before the first step."""
        net = self._network(pl_module)
        config = {"trainer": "lightning", "max_epochs": trainer.max_epochs,
                  "accumulate_grad_batches": trainer.accumulate_grad_batches,
                  "gradient_clip_val": trainer.gradient_clip_val,
                  "precision": str(trainer.precision),
                  "grad_norm": "after AMP unscaling, before clipping "
                               "(Lightning on_before_optimizer_step)",
                  **_optimizer_config(trainer), **self._config}
        self.recorder, self._wrap = start_recording(
            self.path, net, who=WHO, config=config, options=self._options,
            trainer="lightning", epochs=trainer.max_epochs, output=self.output)
        self._net = net

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        """Gradient norms per layer: final (all micro-batches), unscaled, before clipping."""
        if self.recorder is not None:
            self.recorder.after_backward()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """Add the batch's training loss (and accuracy, with ``logits``) to the epoch's."""
        if self.recorder is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        target = batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 else None
        n = int(target.shape[0]) if isinstance(target, torch.Tensor) and target.ndim else 1
        self._loss_sum += float(loss.detach()) * n
        self._seen += n
        logits = outputs.get("logits") if isinstance(outputs, Mapping) else None
        if (isinstance(logits, torch.Tensor) and isinstance(target, torch.Tensor)
                and self.recorder.classification):
            self._correct += int((logits.detach().argmax(1) == target).sum())
            self._acc_seen += n

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Checkpoint, evaluate on the held-out split, write the epoch's metrics line."""
        rec = self.recorder
        if rec is None:
            return
        extra: dict[str, Any] = {
            "train_loss": self._loss_sum / self._seen if self._seen else None,
            "train_accuracy": self._correct / self._acc_seen if self._acc_seen else None}
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        with self._predicting():
            rec.end_epoch(optimizer=optimizer, extra=extra)
        self._loss_sum, self._correct, self._seen, self._acc_seen = 0.0, 0, 0, 0

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """Mark the train stage done and release the run."""
        rec = self.recorder
        if rec is None:
            return
        finish_recording(rec, trainer="lightning")
        self._release()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """Mark the train stage failed (interrupted for Ctrl-C) and release the run."""
        rec = self.recorder
        if rec is None:
            return
        if isinstance(exception, KeyboardInterrupt):
            with contextlib.suppress(Exception):
                rec.run.update_stage("train", "interrupted", last_epoch=rec.epoch)
        else:
            record_failure(rec.run, "train", exception)
        self._release()

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._release()

    def _release(self) -> None:
        if self.recorder is not None:
            self.recorder.close()


def _optimizer_config(trainer: Any) -> dict[str, Any]:
    """The first optimizer's class and learning rate, for run.json's config."""
    if not trainer.optimizers:
        return {}
    opt = trainer.optimizers[0]
    return {"optimizer": type(opt).__name__.lower(), "lr": opt.param_groups[0].get("lr")}


__all__ = ["ShenjingCallback"]
