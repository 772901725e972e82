"""Loss functions by name, and what kind of task each implies."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from shenjing.errors import unknown_name

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

LOSSES: dict[str, tuple[LossFn, str]] = {
    "cross_entropy": (F.cross_entropy, "classification"),
    "nll": (F.nll_loss, "classification"),  # for models ending in log_softmax
    "mse": (F.mse_loss, "regression"),
}


def get_loss(name: str) -> LossFn:
    """The loss function called ``name`` (mean over the batch).

    >>> get_loss("mse")(torch.zeros(2, 1), torch.ones(2, 1)).item()
    1.0
    """
    if name not in LOSSES:
        raise unknown_name("loss", name, LOSSES)
    return LOSSES[name][0]


def loss_task(name: str) -> str:
    """``'classification'`` or ``'regression'`` for a loss name."""
    if name not in LOSSES:
        raise unknown_name("loss", name, LOSSES)
    return LOSSES[name][1]
