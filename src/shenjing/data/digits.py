"""scikit-learn's 1,797 real 8×8 handwritten digits: the embedded default dataset."""

from __future__ import annotations

import numpy as np
import torch

from shenjing.data.mnist import stratified_split
from shenjing.data.scaling import (
    PixelScale,
    check_normalize,
    note,
    pixel_range,
    scale_pixels,
    spec_entries,
)
from shenjing.data.types import Dataset, Split

# The pixels are counts 0..16 (the 4×4 blocks of a 32×32 bitmap, UCI optical digits); mean
# and std of all 1,797 images divided by 16, for normalize="standard".
DIGITS_SCALE = PixelScale(max_value=16.0, mean=0.3053, std=0.3760)


def load_digits_dataset(*, seed: int = 0, test_fraction: float = 0.25,
                        normalize: str = "unit") -> Dataset:
    """The UCI optical digits shipped inside scikit-learn, as (n, 1, 8, 8) float32.

    ``normalize``: ``"unit"`` (the default, as always) divides the 0..16 counts by 16, in
    [0, 1]; ``"standard"`` then standardises, ``(x − 0.3053) / 0.3760``; ``"none"`` keeps
    the raw 0..16. The split is stratified and seeded, so the same seed always gives the
    same samples.
    """
    from sklearn.datasets import load_digits

    check_normalize(normalize)
    bunch = load_digits()
    images = scale_pixels(bunch.images, normalize, DIGITS_SCALE)
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = stratified_split(labels, test_fraction, seed=seed)
    x = torch.from_numpy(images).unsqueeze(1)
    y = torch.from_numpy(labels)

    def split(idx: np.ndarray) -> Split:
        t = torch.from_numpy(idx)
        return Split(x[t], y[t], t)

    spec: dict[str, object] = {"name": "digits", "seed": seed,
                               **spec_entries(normalize, DIGITS_SCALE)}
    if test_fraction != 0.25:
        spec["test_fraction"] = test_fraction
    return Dataset(name="digits", train=split(train_idx), test=split(test_idx),
                   classes=tuple(str(d) for d in range(10)), spec=spec,
                   notes=(note(normalize, DIGITS_SCALE),),
                   pixel_range=pixel_range(normalize, DIGITS_SCALE))
