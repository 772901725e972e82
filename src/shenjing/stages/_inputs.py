"""What stages read from a run before computing: a split, the layers, the loss, a subset."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from shenjing.errors import UsageError
from shenjing.runs import Run


def run_loss(run: Run) -> str:
    """The loss the run was trained with (its config, else the model's seed default)."""
    cfg = run.manifest.get("config", {}) or {}
    if cfg.get("loss"):
        return str(cfg["loss"])
    from shenjing.models import train_defaults

    name = run.manifest.get("model", {}).get("name", "")
    loss = train_defaults(name).loss
    if run.task != "classification" and loss != "mse":
        return "mse"
    return loss


def fixed_samples(run: Run, n: int | None, seed: int, split: str
             ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """A fixed subset of ``n`` samples of the split (options validated by the caller)."""
    data = getattr(run.data, split).subset(n, seed=seed)
    return data.x, data.y, data.indices.cpu().numpy()


def split_of(run: Run, split: str) -> Any:
    from shenjing._checks import choice

    choice("--split", split, ("test", "train"))
    return getattr(run.data, split)


def layer_names(layers: str | Sequence[str]) -> list[str]:
    """The layers a stage was asked for, as a list: one string is one layer name (or
    pattern), never its characters.

    >>> layer_names("relu1"), layer_names(("fc1", "relu1"))
    (['relu1'], ['fc1', 'relu1'])
    """
    return [layers] if isinstance(layers, str) else list(layers)


def resolve_epochs(run: Run, epochs: Sequence[int | str] | str) -> list[int]:
    """Epoch words/numbers → existing epochs, in the order given, without repeats.

    ``'all'`` means every saved epoch.
    """
    if isinstance(epochs, str):
        epochs = run.epochs if epochs == "all" else [epochs]
    out: list[int] = []
    for e in epochs:
        values = run.epochs if e == "all" else [run.resolve_epoch(e)]
        out += [v for v in values if v not in out]
    if not out:
        raise UsageError(f"run {run.name!r} has no epochs to show; train it first")
    return out
