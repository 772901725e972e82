"""``Recorder``: write a run directory from any training loop, ours or the user's.

    rec = Recorder("runs/mine", model, data=dataset, loss="cross_entropy")
    rec.start()                       # epoch-000 checkpoint + untrained metrics
    for epoch in range(5):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(); loss.backward()
            rec.after_backward(loss, model_output=None, target=None)  # gradient norms
            opt.step()
        rec.end_epoch(optimizer=opt)  # evaluate, stats, checkpoint, one metrics line

Our own trainer (:func:`shenjing.training.train`) uses exactly this object.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shenjing import _io
from shenjing.data.types import Dataset, Split
from shenjing.runs import Run
from shenjing.training.evaluate import evaluate
from shenjing.training.losses import get_loss, loss_task
from shenjing.training.stats import layer_stats, snapshot, weighted_layers


class Recorder:
    """Records checkpoints, per-epoch metrics and per-layer dynamics into a run directory.

    ``model_spec`` is how the run rebuilds the architecture later (a zoo spec from
    :func:`shenjing.models.model_spec`, or ``{"factory": "pkg.mod:Net", "kwargs": {...}}``);
    without one the run still holds checkpoints and metrics, but ``Run.model()`` cannot
    rebuild the network.
    """

    def __init__(self, run: str | os.PathLike[str] | Run, model: nn.Module, *,
                 data: Dataset | None = None, loss: str = "cross_entropy",
                 model_spec: dict[str, Any] | None = None, seed: int = 0,
                 config: dict[str, Any] | None = None, eval_split: Split | None = None,
                 device: torch.device | str | None = None, overwrite: bool = False) -> None:
        self.model = model
        self.loss_name = loss
        self.loss_fn = get_loss(loss)
        task = data.task if data is not None else "classification"
        self.classification = loss_task(loss, task) == "classification"
        self.data = data
        self.eval_split = eval_split if eval_split is not None else (
            data.test if data is not None else None)
        self.device = torch.device(device) if device is not None else _model_device(model)
        if isinstance(run, Run):
            self.run = run
        elif (Path(run) / "run.json").exists() and not overwrite:
            self.run = Run(run)
        else:
            self.run = Run.create(
                run, model=model_spec or {"name": type(model).__name__, "class":
                                          f"{type(model).__module__}.{type(model).__qualname__}"},
                data=data.spec if data is not None else {"name": "custom"}, seed=seed,
                task="classification" if self.classification else "regression",
                classes=data.classes if data is not None else (),
                config={**(config or {}), "loss": loss}, overwrite=overwrite)
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
    def start(self) -> None:
        """Save the untrained net as epoch 0 and record its metrics."""
        self._initial = snapshot(self.model)
        self._previous = None
        self.run.save_checkpoint(0, self.model)
        self._write_epoch(0, lr=None, train_loss=None, train_accuracy=None, grad_norms=None)
        self._previous = self._initial

    def resume(self, epoch: int) -> None:
        """Continue after ``epoch``: reload the weights there and forget later records."""
        self.model.load_state_dict(self.run.state_dict(epoch))
        self._initial = {k: v.to(torch.float64) for k, v in _weights_from(
            self.run.state_dict(0), self.model).items()}
        self._previous = snapshot(self.model)
        self.epoch = epoch
        records = [r for r in self.run.metrics() if r["epoch"] <= epoch]
        _io.write_text(self.run.metrics_path, "".join(_io_line(r) for r in records))
        self.steps = records[-1].get("steps", 0) if records else 0

    def after_backward(self, loss: torch.Tensor | float | None = None, *,
                       output: torch.Tensor | None = None,
                       target: torch.Tensor | None = None) -> None:
        """Call after ``loss.backward()``, before ``optimizer.step()``: gradient norms and
        (optionally) the batch's loss and accuracy for the epoch's training averages."""
        layers = weighted_layers(self.model)
        with torch.no_grad():
            names = [n for n, w in layers.items() if w.grad is not None]
            grads = [g for n in names if (g := layers[n].grad) is not None]
            norms = torch._foreach_norm(grads) if grads else []
            for name, norm in zip(names, norms, strict=True):
                self._grad_sums[name] = self._grad_sums.get(name, 0.0) + float(norm)
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
    def _write_epoch(self, epoch: int, *, lr: float | None, train_loss: float | None,
                     train_accuracy: float | None, grad_norms: dict[str, float] | None,
                     extra: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self._initial is not None
        current = snapshot(self.model)
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
        for old in self.run.checkpoints_dir.glob("state-*.pt"):
            if old != target and int(old.stem.split("-")[1]) < self.epoch - 1:
                old.unlink(missing_ok=True)


def _io_line(record: dict[str, Any]) -> str:
    import json

    return json.dumps(_io.to_jsonable(record), sort_keys=True, allow_nan=True) + "\n"


def _weights_from(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: state[f"{name}.weight"].to("cpu") for name in weighted_layers(model)}


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def load_train_state(run: Run, epoch: int) -> dict[str, Any] | None:
    """The optimizer/RNG state saved after ``epoch`` (None if absent). Safe: weights_only."""
    path = run.checkpoints_dir / f"state-{epoch:03d}.pt"
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)
