"""How an input sample is drawn under or beside a figure's own data (maps, attention)."""

from __future__ import annotations

import numpy as np


def input_image(x: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An input sample ``(C, H, W)`` as imshow draws it, with its colour map: grey
    (channels averaged) or RGB, rescaled to [0, 1].

    >>> img, cmap = input_image(np.array([[[0.0, 2.0], [4.0, 4.0]]]))
    >>> img.tolist(), cmap
    ([[0.0, 0.5], [1.0, 1.0]], 'gray')
    """
    img = np.asarray(x, dtype=np.float64)
    if img.ndim == 3 and img.shape[0] == 3:
        img = img.transpose(1, 2, 0)
    elif img.ndim == 3:
        img = img.mean(axis=0)
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return img, (None if img.ndim == 3 else "gray")
