"""Linear CKA (Kornblith et al., 2019): how similar two layers' representations are.

``CKA(X, Y) = ‖YcᵀXc‖²_F / (‖XcᵀXc‖_F ‖YcᵀYc‖_F)`` for column-centred X (n, p), Y (n, q).
It is 1 for identical representations, invariant to rotations and isotropic scaling.

Computed streaming: the cross-products ``XᵢᵀXⱼ`` are accumulated over sample chunks (float64),
so a memory-mapped capture is read once and no n×n matrix is built. No D×D matrix is
built for a wide layer either: layers wider than ``max_features`` are pooled (conv maps)
or randomly projected first (:func:`shenjing.analysis.separability.reduce_features`),
and the result records it. With ``max_features=None`` nothing is reduced and wide layers use
the n×n Gram form instead (exact; memory n² per layer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from shenjing.analysis.separability import reduce_features
from shenjing.errors import ResourceError, UsageError

DEFAULT_MAX_FEATURES = 1024


@dataclass(frozen=True, repr=False)
class CKAResult:
    """A symmetric matrix of linear CKA between named feature sets, with their reductions."""

    matrix: np.ndarray
    names: list[str]
    reductions: dict[str, str | None] = field(default_factory=dict)
    n_samples: int = 0

    def __getitem__(self, pair: tuple[str, str]) -> float:
        a, b = pair
        return float(self.matrix[self.names.index(a), self.names.index(b)])

    def __repr__(self) -> str:
        return f"CKAResult({len(self.names)}×{len(self.names)}, n_samples={self.n_samples})"


def _items(features: Mapping[str, Any] | Sequence[Any]) -> list[tuple[str, Any]]:
    if isinstance(features, Mapping):
        return [(str(k), v) for k, v in features.items()]
    return [(str(i), v) for i, v in enumerate(features)]


def cka_matrix(features: Mapping[str, Any] | Sequence[Any], *,
               max_features: int | None = DEFAULT_MAX_FEATURES, chunk: int = 4096,
               random_state: int = 0, max_gram_bytes: int = 2 * 1024**3) -> CKAResult:
    """Linear CKA between every pair of feature sets of the same samples.

    ``features``: name → array (samples, *features) (e.g. layers, or one layer at several
    epochs, or two runs' layers). Returns a :class:`CKAResult` (matrix (k, k)).

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(100, 5))
    >>> r = cka_matrix({"a": x, "b": 3 * x, "c": x ** 2})
    >>> round(r["a", "b"], 6)
    1.0
    """
    items = _items(features)
    if not items:
        raise UsageError("cka_matrix needs at least one feature set")
    n = int(np.shape(items[0][1])[0])
    for name, x in items:
        if np.shape(x)[0] != n:
            raise UsageError(f"CKA compares the same samples: {items[0][0]!r} has {n} samples, "
                             f"{name!r} has {np.shape(x)[0]}")
    reduced, notes = [], {}
    for name, x in items:
        r, note = reduce_features(x, max_features, random_state=random_state)
        reduced.append(r)
        notes[name] = note
    widths = [r.shape[1] for r in reduced]
    k = len(items)
    if max(widths) <= max(n, DEFAULT_MAX_FEATURES):
        hsic = _feature_route(reduced, n, chunk)
    else:
        need = k * n * n * 8
        if need > max_gram_bytes:
            raise ResourceError(
                f"exact CKA of layers up to {max(widths)} wide over {n} samples needs "
                f"{need / 1024**3:.1f} GiB of Gram matrices; pass max_features=1024 to pool or "
                "project wide layers first, or use fewer samples")
        hsic = _gram_route(reduced, n, chunk)
    diag = np.sqrt(np.clip(np.diag(hsic), 0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        m = hsic / np.outer(diag, diag)
    m = np.where(np.outer(diag, diag) > 0, m, np.nan)
    return CKAResult(matrix=m.astype(np.float64), names=[name for name, _ in items],
                     reductions=notes, n_samples=n)


def _feature_route(xs: list[np.ndarray], n: int, chunk: int) -> np.ndarray:
    """HSIC_ij = ‖XᵢcᵀXⱼc‖²_F from cross-products accumulated over sample chunks."""
    k = len(xs)
    sums = [torch.zeros(x.shape[1], dtype=torch.float64) for x in xs]
    cross: dict[tuple[int, int], torch.Tensor] = {
        (i, j): torch.zeros(xs[i].shape[1], xs[j].shape[1], dtype=torch.float64)
        for i in range(k) for j in range(i, k)}
    for s in range(0, n, chunk):
        blocks = [torch.from_numpy(np.asarray(x[s:s + chunk], dtype=np.float64)) for x in xs]
        for i, b in enumerate(blocks):
            sums[i] += b.sum(0)
        for (i, j), acc in cross.items():
            acc += blocks[i].T @ blocks[j]
    hsic = np.zeros((k, k))
    for (i, j), acc in cross.items():
        centred = acc - torch.outer(sums[i], sums[j]) / n  # XᵢᵀXⱼ − n μᵢμⱼᵀ
        hsic[i, j] = hsic[j, i] = float((centred * centred).sum())
    return hsic


def _gram_route(xs: list[np.ndarray], n: int, chunk: int) -> np.ndarray:
    """HSIC_ij = ⟨HKᵢH, HKⱼH⟩ with each Gram matrix built over feature chunks."""
    grams = []
    for x in xs:
        g = torch.zeros(n, n, dtype=torch.float64)
        for s in range(0, x.shape[1], chunk):
            b = torch.from_numpy(np.asarray(x[:, s:s + chunk], dtype=np.float64))
            b = b - b.mean(0)
            g += b @ b.T
        grams.append(g)
    k = len(xs)
    hsic = np.zeros((k, k))
    for i in range(k):
        for j in range(i, k):
            hsic[i, j] = hsic[j, i] = float((grams[i] * grams[j]).sum())
    return hsic


def linear_cka(x: Any, y: Any, *, max_features: int | None = DEFAULT_MAX_FEATURES) -> float:
    """Linear CKA of two feature sets of the same samples (see :func:`cka_matrix`)."""
    return cka_matrix({"x": x, "y": y}, max_features=max_features)["x", "y"]
