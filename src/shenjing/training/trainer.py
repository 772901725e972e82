"""``train()``: train a zoo model on a dataset and record everything into a run directory.

Determinism: the model is initialised from ``seed``; every epoch reseeds the shuffling
generator and the global RNG (dropout) from ``(seed, epoch)``. So the same seed gives the
same metrics.jsonl byte for byte on CPU, and ``resume`` after a kill continues exactly as
an uninterrupted run would: the killed epoch is redone from the last finished one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shenjing._device import resolve_device
from shenjing._io import sweep_stale_temps
from shenjing.data import Dataset, load_dataset
from shenjing.errors import (
    CheckpointError,
    RunError,
    ShenjingError,
    UsageError,
    unknown_name,
)
from shenjing.models import build_model, model_spec, train_defaults
from shenjing.runs import (
    MANIFEST,
    Run,
    check_removable,
    record_failure,
    remove_run,
    writer_lock,
)
from shenjing.training.augment import random_shift
from shenjing.training.losses import get_loss, loss_task
from shenjing.training.recorder import Recorder, load_train_state
from shenjing.training.schedule import SCHEDULES, lr_factor

OPTIMIZERS = ("adam", "adamw", "sgd")
#: more epochs than anyone trains a study's model for: a larger count is a typo
MAX_EPOCHS = 100_000
#: the largest random shift, in pixels, that still leaves an image mostly in the frame
MAX_SHIFT = 64

@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (what run.json records under ``config``).

    Every value is checked when the config is made, so a typo fails before any file is
    written:

    >>> TrainConfig(epochs=3).lr
    0.001
    >>> TrainConfig(optimizer="adm")
    Traceback (most recent call last):
    shenjing.errors.UnknownNameError: unknown optimizer 'adm'. Did you mean 'adam' or 'adamw'? ...
    """

    model: str = "mlp"
    data: str = "digits"
    epochs: int = 5
    optimizer: str = "adam"
    lr: float = 1e-3
    batch_size: int = 128
    weight_decay: float = 0.0
    momentum: float = 0.9
    loss: str = "cross_entropy"
    seed: int = 0
    passes_per_epoch: int = 1
    schedule: str = "constant"
    shift: int = 0
    model_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        from shenjing._checks import bounded_int, finite_float, positive_int

        bounded_int("epochs", self.epochs, low=1, high=MAX_EPOCHS)
        bounded_int("shift", self.shift, low=0, high=MAX_SHIFT)
        if self.schedule not in SCHEDULES:
            raise unknown_name("schedule", self.schedule, SCHEDULES)
        positive_int("batch_size", self.batch_size)
        positive_int("passes_per_epoch", self.passes_per_epoch)
        finite_float("lr", self.lr, low=0.0, low_open=True)
        finite_float("weight_decay", self.weight_decay, low=0.0)
        if self.optimizer not in OPTIMIZERS:
            raise unknown_name("optimizer", self.optimizer, OPTIMIZERS)
        get_loss(self.loss)


def make_optimizer(cfg: TrainConfig, params: Any) -> torch.optim.Optimizer:
    """The optimizer ``cfg`` names."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay or 1e-2)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def train(model: str = "mlp", data: str | Dataset = "digits", *, epochs: int | None = None,
          run: str | os.PathLike[str] | None = None, optimizer: str | None = None,
          lr: float | None = None, batch_size: int | None = None, seed: int = 0,
          device: str | torch.device = "auto", data_dir: str | os.PathLike[str] | None = None,
          resume: bool = False, force: bool = False, loss: str | None = None,
          weight_decay: float = 0.0, model_kwargs: dict[str, Any] | None = None,
          passes_per_epoch: int | None = None, progress: bool = True,
          stop_after_steps: int | None = None, normalize: str | None = None,
          schedule: str | None = None, shift: int | None = None) -> Run:
    """Train a zoo model and record it into a run directory; return the :class:`Run`.

    Hyper-parameters left as None take the seed's values for that model
    (:func:`shenjing.models.train_defaults`). ``resume=True`` continues a killed run from
    its last finished epoch; ``force=True`` starts the run over. ``schedule`` is the
    learning-rate schedule (``constant``, or ``cosine``: warm-up then cosine to zero over
    all the run's steps); ``shift`` moves each training image by up to that many pixels, a
    new draw every epoch.

    >>> import tempfile
    >>> run = train("mlp", "digits", epochs=1, run=tempfile.mkdtemp() + "/r", progress=False)
    >>> run.epochs
    [0, 1]
    """
    if resume and force:
        raise UsageError("resume=True and force=True contradict each other: resume continues "
                         "the run, force deletes it and starts over; pass one")
    dataset = data if isinstance(data, Dataset) else load_dataset(
        data, data_dir=data_dir, seed=seed, progress=progress, normalize=normalize)
    defaults = train_defaults(model, dataset.name)
    cfg = TrainConfig(
        # None means the seed's default; any other value (0 included) is checked as given
        model=model, data=dataset.name,
        epochs=defaults.epochs if epochs is None else epochs,
        optimizer=optimizer or defaults.optimizer,
        lr=defaults.lr if lr is None else lr,
        batch_size=defaults.batch_size if batch_size is None else batch_size,
        weight_decay=weight_decay, loss=loss or defaults.loss, seed=seed,
        passes_per_epoch=defaults.passes_per_epoch if passes_per_epoch is None
        else passes_per_epoch,
        schedule=schedule or defaults.schedule,
        shift=defaults.shift if shift is None else shift,
        model_kwargs=dict(model_kwargs or {}))
    if cfg.shift and len(dataset.input_shape) != 3:
        raise UsageError(f"shift={cfg.shift} moves images, but dataset {dataset.name!r} has "
                         f"inputs of shape {tuple(dataset.input_shape)}, not (channels, "
                         "height, width); leave shift out (--shift 0)")
    task = loss_task(cfg.loss, dataset.task)
    if (task == "classification") != (dataset.task == "classification"):
        raise UsageError(_task_mismatch(model, cfg.loss, task, dataset))
    run_path = Path(run) if run is not None else Path("runs") / f"{model}-{dataset.name}"
    dev = resolve_device(device)

    torch.manual_seed(seed)
    net = build_model(model, dataset.input_shape, dataset.output_dim, **cfg.model_kwargs)
    spec = model_spec(model, dataset.input_shape, dataset.output_dim, **cfg.model_kwargs)
    net.to(dev)
    opt = make_optimizer(cfg, net.parameters())
    config = dataclasses.asdict(cfg)

    existing = (run_path / MANIFEST).exists()
    if existing and not (resume or force):
        raise RunError(f"{run_path} already holds a run; pass --resume to continue it "
                       "or --force to start over")
    if existing:
        Run(run_path)  # a foreign or newer run.json is refused before anything is written
    if existing and force:
        check_removable(run_path)  # … and so is a folder holding what shenjing did not write
    # one writer at a time, for the whole command: a second one is refused in one line
    with writer_lock(run_path):
        sweep_stale_temps(run_path)
        rec, start_epoch = _open_recorder(run_path, net, opt, dataset, cfg, spec, config, dev,
                                          existing=existing, resume=resume, force=force)
        with rec:
            return _train_recorded(net, opt, rec, dataset, cfg, dev, start_epoch, progress,
                                   stop_after_steps)


def _open_recorder(run_path: Path, net: nn.Module, opt: torch.optim.Optimizer,
                   dataset: Dataset, cfg: TrainConfig, spec: dict[str, Any],
                   config: dict[str, Any], dev: torch.device, *, existing: bool,
                   resume: bool, force: bool) -> tuple[Recorder, int]:
    """The Recorder of the run being trained and the epoch to continue after: a resumed run
    reloaded at its last complete epoch, or a new one (``force``: the old run deleted
    first, through :func:`shenjing.runs.remove_run`). If this fails, the Recorder is closed
    (its hold on the run released) before the error goes on."""
    if existing and force:
        remove_run(run_path)
    if existing and resume:
        rec = Recorder(Run(run_path), net, data=dataset, loss=cfg.loss, device=dev)
    else:
        rec = Recorder(run_path, net, data=dataset, loss=cfg.loss, model_spec=spec,
                       seed=cfg.seed, config=config, device=dev)
    try:
        if existing and resume:
            return rec, _resume(rec, opt, run_path, config)
        rec.run.update_stage("train", "running", device=str(dev), epochs=cfg.epochs)
        try:
            rec.start()
        except BaseException as exc:
            record_failure(rec.run, "train", exc)
            raise
        return rec, 0
    except BaseException:
        rec.close()
        raise


def _resume(rec: Recorder, opt: torch.optim.Optimizer, run_path: Path,
            config: dict[str, Any]) -> int:
    """Reload the run at its last epoch with both a metrics line and a checkpoint (its
    optimizer state too); return that epoch (0 when only the untrained net is there)."""
    _check_same_config(rec.run, config)
    done = [r["epoch"] for r in rec.run.metrics()]
    start_epoch = max((e for e in done if e in rec.run.epochs), default=-1)
    if start_epoch < 0:
        rec.start()
        return 0
    state = load_train_state(rec.run, start_epoch)
    if start_epoch > 0 and state is None:
        raise RunError(f"{run_path}: no optimizer state for epoch {start_epoch}; "
                       "cannot resume exactly. Use --force to start over")
    rec.resume(start_epoch)
    if start_epoch > 0 and state is not None:
        try:
            opt.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(
                f"{run_path}/checkpoints/state-{start_epoch:03d}.pt does not fit this "
                f"optimizer ({exc}); resume with the run's own options, or start over "
                "with --force") from None
    return start_epoch


def _train_recorded(net: nn.Module, opt: torch.optim.Optimizer, rec: Recorder,
                    dataset: Dataset, cfg: TrainConfig, dev: torch.device, start_epoch: int,
                    progress: bool, stop_after_steps: int | None) -> Run:
    """Train from ``start_epoch`` with the train stage's status kept true: ``running``, then
    ``done``, ``interrupted`` (Ctrl-C, a test's stop) or ``failed`` with the error."""
    rec.run.update_stage("train", "running", device=str(dev), epochs=cfg.epochs)
    started = time.perf_counter()
    try:
        _fit(net, opt, rec, dataset, cfg, dev, start_epoch, progress, stop_after_steps)
    except (KeyboardInterrupt, SystemExit):
        with contextlib.suppress(ShenjingError, OSError):
            rec.run.update_stage("train", "interrupted", last_epoch=rec.epoch)
        raise
    except BaseException as exc:
        record_failure(rec.run, "train", exc)
        raise
    final = rec.run.metrics()[-1]
    rec.run.update_stage("train", "done", device=str(dev), epochs=cfg.epochs,
                         seconds=round(time.perf_counter() - started, 2),
                         test_accuracy=final.get("test_accuracy"),
                         test_loss=final.get("test_loss"))
    return rec.run


def _task_mismatch(model: str, loss: str, task: str, dataset: Dataset) -> str:
    """Why ``model`` cannot learn ``dataset`` with ``loss``, and which zoo model can."""
    from shenjing.models import MODEL_NAMES

    fits = [m for m in MODEL_NAMES
            if loss_task(train_defaults(m).loss, dataset.task) == dataset.task]
    suggestion = f"--model {fits[0]}" if fits else "another --model"
    if loss == train_defaults(model).loss:  # the model's own loss: the model is the choice
        return (f"--model {model} trains with loss {loss!r}, for {task}, but --data "
                f"{dataset.name!r} is a {dataset.task} task; train a {dataset.task} model "
                f"on it, e.g. {suggestion}")
    right = "mse" if dataset.task == "regression" else "cross_entropy"
    return (f"loss {loss!r} is for {task}, but dataset {dataset.name!r} is a "
            f"{dataset.task} task; pass loss={right!r}, or train a {dataset.task} model "
            f"on it, e.g. {suggestion}")


#: what a run recorded before a setting existed had that setting's neutral value
_OLD_RUN: dict[str, Any] = {"schedule": "constant", "shift": 0}


def _check_same_config(run: Run, config: dict[str, Any]) -> None:
    recorded = run.manifest.get("config", {})
    keys = ["model", "optimizer", "lr", "batch_size", "loss", "seed", "schedule", "shift"]
    if config["schedule"] != "constant":  # the schedule's curve spans all the epochs
        keys.append("epochs")
    was = {**_OLD_RUN, **recorded}
    diff = [k for k in keys if k in was and was[k] != config[k]]
    if diff:
        shown = ", ".join(f"{k}: run has {was[k]!r}, asked {config[k]!r}" for k in diff)
        raise RunError(f"cannot resume {run.path} with different settings ({shown}); "
                       "use the same options, or --force to start over")


def _fit(net: nn.Module, opt: torch.optim.Optimizer, rec: Recorder, dataset: Dataset,
         cfg: TrainConfig, dev: torch.device, start_epoch: int, progress: bool,
         stop_after_steps: int | None) -> None:
    """The training loop proper, from ``start_epoch + 1`` to ``cfg.epochs``."""
    from contextlib import nullcontext

    loss_fn = get_loss(cfg.loss)
    classification = dataset.task == "classification"
    x_all = dataset.train.x.to(dev)
    y_all = dataset.train.y.to(dev)
    n = x_all.shape[0]
    steps_per_epoch = cfg.passes_per_epoch * -(-n // cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    bar_ctx: Any = nullcontext()
    if progress:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )
        bar_ctx = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[n_epochs]}"),
            BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
            TimeRemainingColumn(), transient=False)
    with bar_ctx as bar:
        task = None
        for epoch in range(start_epoch + 1, cfg.epochs + 1):
            gen = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch))
            # its own stream, so a run without augmentation shuffles as it always did
            shift_gen = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch))
            torch.manual_seed(_epoch_seed(cfg.seed, epoch))
            if bar is not None:
                if task is not None:
                    bar.remove_task(task)
                task = bar.add_task("train", total=steps_per_epoch, epoch=epoch,
                                    n_epochs=cfg.epochs, loss="-")
            net.train()
            for _ in range(cfg.passes_per_epoch):
                order = torch.randperm(n, generator=gen).to(dev)
                for start in range(0, n, cfg.batch_size):
                    idx = order[start:start + cfg.batch_size]
                    x, y = random_shift(x_all[idx], cfg.shift, shift_gen), y_all[idx]
                    for group in opt.param_groups:
                        group["lr"] = cfg.lr * lr_factor(cfg.schedule, rec.steps, total_steps)
                    out = net(x)
                    loss = loss_fn(out, y)
                    _check_finite_loss(loss, epoch, rec.steps + 1, cfg)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    rec.after_backward(loss.detach(), output=out if classification else None,
                                       target=y)
                    _step(opt, epoch, cfg)
                    if bar is not None:
                        bar.update(task, advance=1, loss=f"{loss.item():.4f}")
                    if stop_after_steps is not None and rec.steps >= stop_after_steps:
                        raise KeyboardInterrupt(f"stopped after {rec.steps} steps (test hook)")
            _check_finite_weights(net, epoch, cfg)
            rec.end_epoch(optimizer=opt)


def _diverged(what: str, epoch: int, cfg: TrainConfig) -> RunError:
    lower = min(cfg.lr / 10, 1e-3)
    kept = "epoch 0" if epoch == 1 else f"epochs 0 to {epoch - 1}"
    return RunError(f"training diverged in epoch {epoch}: {what} (optimizer {cfg.optimizer}, "
                    f"lr {cfg.lr:g}); the run keeps {kept}. Lower the learning rate, e.g. "
                    f"--lr {lower:g}, and start over with --force")


def _step(opt: torch.optim.Optimizer, epoch: int, cfg: TrainConfig) -> None:
    """``opt.step()``; an update too large for the weights' dtype (torch refuses to
    convert it) is the run diverging, said as such."""
    try:
        opt.step()
    except RuntimeError as exc:
        if "overflow" not in str(exc):
            raise
        raise _diverged(f"the optimizer's update overflowed ({exc})", epoch, cfg) from None


def _check_finite_loss(loss: torch.Tensor, epoch: int, step: int, cfg: TrainConfig) -> None:
    """Stop at the first NaN/inf loss: stepping on would only write NaN weights."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise _diverged(f"the loss of step {step} is {value}", epoch, cfg)


def _check_finite_weights(net: nn.Module, epoch: int, cfg: TrainConfig) -> None:
    """Refuse to checkpoint weights that overflowed (a loss can stay finite one step more)."""
    for name, p in net.named_parameters():
        if not bool(torch.isfinite(p.detach()).all()):
            raise _diverged(f"parameter {name!r} holds NaN or inf values", epoch, cfg)
