"""Evaluate a model on a split: mean loss, accuracy, and dead ReLU units."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from shenjing._imports import where
from shenjing.data.types import Split
from shenjing.errors import ShenjingError, UsageError
from shenjing.hooks import forward_hooks
from shenjing.training.losses import LossFn

RELU_FAMILY = (nn.ReLU, nn.ReLU6)


@dataclass(frozen=True)
class Evaluation:
    """Mean loss, accuracy (None for regression) and dead-unit fractions on one split."""

    loss: float
    accuracy: float | None
    n_samples: int
    dead_units: dict[str, float] = field(default_factory=dict)


def relu_layers(model: nn.Module) -> list[str]:
    """Names of the ReLU-family modules of ``model``."""
    return [name for name, m in model.named_modules() if isinstance(m, RELU_FAMILY) and name]


def _unit_fired(out: torch.Tensor) -> torch.Tensor:
    """Which units fired (> 0) for any sample: a unit is a channel of an (N, C, …) output."""
    fired = out > 0
    if fired.ndim > 2:
        fired = fired.flatten(2).any(dim=2)
    return fired.any(dim=0)


@torch.inference_mode()
def evaluate(model: nn.Module, split: Split, loss_fn: LossFn, *, batch_size: int = 1000,
             device: torch.device | str = "cpu", classification: bool = True,
             dead_units: bool = True) -> Evaluation:
    """Mean loss and accuracy of ``model`` on ``split`` in eval mode; restores the mode after.

    Dead units: the fraction of each ReLU layer's units (channels for conv outputs) that
    output zero for every sample of the split.

    >>> import torch
    >>> from torch import nn
    >>> from shenjing.data.types import Split
    >>> from shenjing.training.losses import get_loss
    >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    >>> net[0].weight.data, net[0].bias.data = torch.eye(2), torch.tensor([0.0, -9.0])
    >>> split = Split(torch.tensor([[1.0, 0.0], [2.0, 1.0]]), torch.tensor([0, 0]),
    ...               torch.arange(2))
    >>> result = evaluate(net, split, get_loss("cross_entropy"))
    >>> result.accuracy, result.dead_units
    (1.0, {'1': 0.5})
    """
    was_training = model.training
    model.eval()
    fired: dict[str, torch.Tensor] = {}

    def make_hook(name: str):
        def hook(_m: nn.Module, _a: tuple, out: torch.Tensor) -> None:
            now = _unit_fired(out)
            fired[name] = now if name not in fired else fired[name] | now
        return hook

    hooks = {name: make_hook(name) for name in relu_layers(model)} if dead_units else {}
    total_loss = 0.0
    correct = 0
    n = len(split)
    try:
        with forward_hooks(model, hooks):
            for batch, start in enumerate(range(0, n, batch_size), start=1):
                x = split.x[start:start + batch_size].to(device)
                y = split.y[start:start + batch_size].to(device)
                try:
                    out = model(x)
                    total_loss += float(loss_fn(out, y)) * x.shape[0]
                except ShenjingError:
                    raise
                except Exception as exc:
                    raise _model_failed(model, exc, batch, start, x.shape[0], n) from None
                if classification:
                    correct += int((out.argmax(dim=1) == y).sum())
    finally:
        model.train(was_training)
    dead = {name: float(1.0 - f.float().mean()) for name, f in fired.items()}
    return Evaluation(loss=total_loss / max(n, 1),
                      accuracy=correct / n if classification and n else None,
                      n_samples=n, dead_units=dead)


def _model_failed(model: nn.Module, exc: Exception, batch: int, start: int, size: int,
                  n: int) -> UsageError:
    """One line for a forward (or loss) that raised on one batch of the evaluation split:
    the model's own error, where it happened, and which samples it was given."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return UsageError(
        f"the model {type(model).__name__} raised {type(exc).__name__}: {text}{where(exc)} "
        f"while evaluating test batch {batch} (samples {start} to {start + size - 1} of {n}); "
        "the error is the model's own: fix its forward so it runs on every batch")
