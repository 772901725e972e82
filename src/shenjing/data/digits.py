"""scikit-learn's 1,797 real 8×8 handwritten digits: the embedded default dataset."""

from __future__ import annotations

import numpy as np
import torch

from shenjing.data.mnist import stratified_split
from shenjing.data.types import Dataset, Split


def load_digits_dataset(*, seed: int = 0, test_fraction: float = 0.25) -> Dataset:
    """The UCI optical digits shipped inside scikit-learn, as (n, 1, 8, 8) in [0, 1].

    The split is stratified and seeded, so the same seed always gives the same samples.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0  # pixel values are 0..16
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = stratified_split(labels, test_fraction, seed=seed)
    x = torch.from_numpy(images).unsqueeze(1)
    y = torch.from_numpy(labels)

    def split(idx: np.ndarray) -> Split:
        t = torch.from_numpy(idx)
        return Split(x[t], y[t], t)

    return Dataset(name="digits", train=split(train_idx), test=split(test_idx),
                   classes=tuple(str(d) for d in range(10)),
                   spec={"name": "digits", "seed": seed})
