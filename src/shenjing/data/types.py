"""The in-memory form of every dataset: two splits of tensors plus what they mean."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, TensorDataset

Task = Literal["classification", "regression"]


@dataclass(frozen=True, repr=False)
class Split:
    """One split of a dataset.

    ``x`` is float32, shaped ``(n, channels, height, width)`` for images or ``(n, features)``;
    ``y`` is int64 class labels ``(n,)`` for classification or float32 ``(n, outputs)`` for
    regression; ``indices`` are the samples' positions in the source files, so a figure can
    always name the exact sample it shows.

    >>> import torch
    >>> split = Split(torch.zeros(5, 2), torch.arange(5), torch.arange(10, 15))
    >>> split, split.subset(3, seed=0).indices.tolist()
    (Split(n=5, x=(5, 2), y=(5,)), [10, 11, 14])
    """

    x: torch.Tensor
    y: torch.Tensor
    indices: torch.Tensor

    def __post_init__(self) -> None:
        n = self.x.shape[0]
        if self.y.shape[0] != n or self.indices.shape[0] != n:
            raise ValueError(
                f"split arrays disagree in length: x has {n}, y has {self.y.shape[0]}, "
                f"indices has {self.indices.shape[0]}"
            )

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __repr__(self) -> str:
        return f"Split(n={len(self)}, x={tuple(self.x.shape)}, y={tuple(self.y.shape)})"

    def subset(self, n: int | None = None, *, seed: int = 0) -> Split:
        """A fixed random subset of ``n`` samples (the whole split if ``n`` is None or ≥ len)."""
        if n is None or n >= len(self):
            return self
        gen = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(self), generator=gen)[:n].sort().values
        return Split(self.x[pick], self.y[pick], self.indices[pick])

    def tensor_dataset(self) -> TensorDataset:
        """The split as a ``TensorDataset`` of ``(x, y)``."""
        return TensorDataset(self.x, self.y)

    def loader(self, batch_size: int = 256, *, shuffle: bool = False,
               generator: torch.Generator | None = None) -> DataLoader:
        """A DataLoader over ``(x, y)``; deterministic when ``shuffle`` uses ``generator``."""
        return DataLoader(self.tensor_dataset(), batch_size=batch_size, shuffle=shuffle,
                          generator=generator)


@dataclass(frozen=True, repr=False)
class Dataset:
    """A dataset as two splits, class names, and the spec that reloads it exactly.

    >>> from shenjing.data import load_dataset
    >>> digits = load_dataset("digits")
    >>> digits.input_shape, digits.n_classes, digits.output_dim
    ((1, 8, 8), 10, 10)
    """

    name: str
    train: Split
    test: Split
    classes: tuple[str, ...]
    task: Task = "classification"
    spec: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    pixel_range: tuple[float, float] = (0.0, 1.0)  # values of black and white pixels in x

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample, e.g. ``(1, 28, 28)`` or ``(2,)``."""
        return tuple(self.train.x.shape[1:])

    @property
    def n_classes(self) -> int:
        """Number of classes (0 for regression)."""
        return len(self.classes)

    @property
    def output_dim(self) -> int:
        """Width of the model output this dataset needs (classes, or regression targets)."""
        if self.task == "classification":
            return self.n_classes
        return int(self.train.y.shape[1]) if self.train.y.ndim > 1 else 1

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, task={self.task}, input_shape={self.input_shape}, "
                f"train={len(self.train)}, test={len(self.test)}, classes={self.n_classes})")
