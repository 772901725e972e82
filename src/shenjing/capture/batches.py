"""The batches a dataset capture reads: from a Split, a tensor, an ``(x, y)`` pair or a
DataLoader, each with its labels and positions in the source split when the data has them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from shenjing.errors import UsageError


@dataclass(frozen=True)
class Batch:
    """One batch: the model's input ``x``, labels ``y`` and positions ``indices`` (None
    when the data has none)."""

    x: Any
    y: torch.Tensor | None
    indices: torch.Tensor | None


def batches_of(data: Any, batch_size: int) -> tuple[Iterator[Batch], int | None]:
    """Batches from a Split, a tensor, an (x, y) pair or a DataLoader, plus the sample count."""
    if hasattr(data, "x") and hasattr(data, "y") and hasattr(data, "indices"):  # Split
        x, y, idx = data.x, data.y, data.indices
        n = int(x.shape[0])
        return (Batch(x[i:i + batch_size], y[i:i + batch_size], idx[i:i + batch_size])
                for i in range(0, n, batch_size)), n
    if isinstance(data, (torch.Tensor, np.ndarray)):
        x = torch.as_tensor(data)
        n = int(x.shape[0])
        return (Batch(x[i:i + batch_size], None, None) for i in range(0, n, batch_size)), n
    if (isinstance(data, tuple) and len(data) == 2
            and all(isinstance(v, (torch.Tensor, np.ndarray)) for v in data)):
        x, y = (torch.as_tensor(v) for v in data)
        n = int(x.shape[0])
        return (Batch(x[i:i + batch_size], y[i:i + batch_size], None)
                for i in range(0, n, batch_size)), n
    if isinstance(data, Iterable):
        sized: int | None = None
        dataset = getattr(data, "dataset", None)
        if dataset is not None:
            try:
                sized = len(dataset)
            except TypeError:
                sized = None

        def gen() -> Iterator[Batch]:
            for item in data:
                if isinstance(item, (tuple, list)):
                    yield Batch(item[0], item[1] if len(item) > 1 else None, None)
                elif isinstance(item, Mapping) and "x" in item:
                    yield Batch(item["x"], item.get("y"), item.get("indices"))
                else:
                    yield Batch(item, None, None)
        return gen(), sized
    raise UsageError(f"cannot capture from {type(data).__name__}; pass a Split, a tensor, "
                     "an (x, y) pair of tensors, or a DataLoader")


def n_of(x: Any) -> int:
    """The batch size of a model input: a tensor, or the first tensor of a tuple or dict."""
    if isinstance(x, torch.Tensor):
        return int(x.shape[0])
    if isinstance(x, (tuple, list)):
        return n_of(x[0])
    if isinstance(x, Mapping):
        return n_of(next(iter(x.values())))
    raise UsageError(f"cannot find the batch size of an input of type {type(x).__name__}")


def to_device(x: Any, device: torch.device, non_blocking: bool) -> Any:
    """A model input (a tensor, or tensors in tuples, lists and dicts) on ``device``."""
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=non_blocking)
    if isinstance(x, tuple):
        return tuple(to_device(v, device, non_blocking) for v in x)
    if isinstance(x, list):
        return [to_device(v, device, non_blocking) for v in x]
    if isinstance(x, Mapping):
        return {k: to_device(v, device, non_blocking) for k, v in x.items()}
    return x
