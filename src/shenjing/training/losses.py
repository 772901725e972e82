"""Loss functions by name, and what kind of task each implies."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from shenjing.errors import UsageError, unknown_name

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

LOSSES: dict[str, tuple[LossFn, str]] = {
    "cross_entropy": (F.cross_entropy, "classification"),
    "nll": (F.nll_loss, "classification"),  # for models ending in log_softmax
    "mse": (F.mse_loss, "regression"),
}


def get_loss(name: str) -> LossFn:
    """The loss function called ``name`` (mean over the batch), or a user's
    ``pkg.module:function`` taking ``(prediction, target)``.

    >>> get_loss("mse")(torch.zeros(2, 1), torch.ones(2, 1)).item()
    1.0
    """
    if name in LOSSES:
        return LOSSES[name][0]
    if ":" in name:
        from shenjing.models.spec import resolve_factory

        fn = resolve_factory(name)
        if not callable(fn):
            raise UsageError(f"loss {name!r} is not callable")
        return fn  # type: ignore[no-any-return]
    raise unknown_name("loss", name, LOSSES)


def loss_task(name: str, default: str = "classification") -> str:
    """``'classification'`` or ``'regression'`` for a built-in loss name; a user's
    ``module:function`` loss gives ``default`` (the task the caller knows from the data)."""
    if name in LOSSES:
        return LOSSES[name][1]
    if ":" in name:
        return default
    raise unknown_name("loss", name, LOSSES)
