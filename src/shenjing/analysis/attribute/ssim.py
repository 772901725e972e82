"""Similarity of two maps: SSIM (Wang et al., IEEE TIP 2004) and Spearman's rank correlation.

SSIM follows the paper: local means, variances and covariance under a Gaussian window
(σ = 1.5, 11×11, or the largest odd size that fits a smaller map), constants
C1 = (0.01·L)², C2 = (0.03·L)², the map's mean SSIM over every position where the window
fits (no padding). Spearman is Pearson's correlation of the ranks, ties given their mean rank.
"""

from __future__ import annotations

import numpy as np

SIGMA = 1.5
WINDOW = 11
K1, K2 = 0.01, 0.03


def _gaussian(size: int, sigma: float) -> np.ndarray:
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(r ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def window_size(h: int, w: int) -> int:
    """11, or the largest odd size ≤ min(h, w) for small maps (an 8×8 map: 7)."""
    size = min(WINDOW, h, w)
    return size if size % 2 else size - 1


def _filter(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of ``(..., H, W)`` with the 1-D window ``g``."""
    k = len(g)
    h, w = a.shape[-2:]
    rows = sum(g[i] * a[..., i:h - k + 1 + i, :] for i in range(k))
    return sum(g[j] * rows[..., :, j:w - k + 1 + j] for j in range(k))


def ssim(a: np.ndarray, b: np.ndarray, *, data_range: float = 1.0) -> np.ndarray:
    """Mean SSIM of ``a`` and ``b`` ``(..., H, W)`` → ``(...)``.

    >>> import numpy as np
    >>> float(ssim(np.eye(8), np.eye(8)))
    1.0
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"ssim needs two maps of one shape (…, H, W); got {a.shape}, {b.shape}")
    g = _gaussian(window_size(*a.shape[-2:]), SIGMA)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    mu_a, mu_b = _filter(a, g), _filter(b, g)
    var_a = _filter(a * a, g) - mu_a ** 2
    var_b = _filter(b * b, g) - mu_b ** 2
    cov = _filter(a * b, g) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) *
                                                     (var_a + var_b + c2))
    return s.mean(axis=(-2, -1))


def _ranks(v: np.ndarray) -> np.ndarray:
    """Ranks along the last axis, ties sharing their mean rank."""
    out = np.empty_like(v, dtype=np.float64)
    for idx in np.ndindex(v.shape[:-1]):
        row = v[idx]
        order = np.argsort(row, kind="mergesort")
        sorted_row = row[order]
        ranks = np.empty(len(row), dtype=np.float64)
        start = 0
        while start < len(row):
            stop = start
            while stop + 1 < len(row) and sorted_row[stop + 1] == sorted_row[start]:
                stop += 1
            ranks[order[start:stop + 1]] = (start + stop) / 2
            start = stop + 1
        out[idx] = ranks
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rank correlation of maps ``a`` and ``b`` ``(..., H, W)`` → ``(...)``
    (pixels flattened); a constant map has no ranking: NaN."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ra = _ranks(a.reshape(*a.shape[:-2], -1))
    rb = _ranks(b.reshape(*b.shape[:-2], -1))
    ra -= ra.mean(axis=-1, keepdims=True)
    rb -= rb.mean(axis=-1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(-1) * (rb ** 2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(-1) / np.where(den > 0, den, 1), np.nan)
