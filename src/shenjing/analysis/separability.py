"""How well classes separate in a layer, and how faithful a 2-D map of it is.

Two different questions, kept apart on purpose:

- **separability in the original feature space**: linear-probe accuracy (logistic
  regression trained on one split, scored on another) and kNN accuracy. These say what the
  layer holds.
- **map faithfulness** of a 2-D embedding: trustworthiness (are the map's neighbours real
  neighbours?) and kNN recall (are the real neighbours kept?). A map's own kNN accuracy and
  silhouette are reported too, but they mostly reflect the embedding method; silhouette in
  particular rewards compact blobs (t-SNE makes them) rather than separation.

Wide layers (conv maps of 25,000 values) are reduced before the metrics, and the result
says how: maps are average-pooled to k×k so that channels·k² ≤ ``max_features``; other
wide vectors get a seeded Gaussian random projection to ``max_features`` dimensions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from shenjing.errors import UsageError

MAX_FEATURES = 1024


def reduce_features(x: Any, max_features: int | None = MAX_FEATURES, *,
                    random_state: int = 0, chunk: int = 2048) -> tuple[np.ndarray, str | None]:
    """``x`` (samples, *features) as float32 (samples, ≤ max_features), and how it was reduced.

    Conv maps (samples, channels, h, w) are adaptive-average-pooled to k×k (largest k with
    channels·k² ≤ max_features); anything still wider is randomly projected (Gaussian,
    seeded: the same ``random_state`` and width give the same projection, so train and test
    features stay comparable). Works chunk by chunk, so a memory map is never loaded whole.
    """
    x_arr = x if isinstance(x, np.ndarray) else np.asarray(x)
    n = x_arr.shape[0]
    d = int(np.prod(x_arr.shape[1:]))
    if max_features is None or d <= max_features:
        return np.ascontiguousarray(x_arr.reshape(n, d), dtype=np.float32), None
    notes = []
    shape = x_arr.shape[1:]
    pool_k = None
    if len(shape) == 3:
        c, h, w = shape
        k = int(np.floor(np.sqrt(max_features / c))) if c <= max_features else 0
        if k >= 1:
            pool_k = min(k, h, w)
            notes.append(f"average-pooled {c}×{h}×{w} to {c}×{pool_k}×{pool_k}")
    width = c * pool_k * pool_k if pool_k else d
    proj = None
    if width > max_features:
        gen = torch.Generator().manual_seed(random_state)
        proj = torch.randn(width, max_features, generator=gen) / np.sqrt(max_features)
        notes.append(f"random projection {width}→{max_features}")
    out = np.empty((n, proj.shape[1] if proj is not None else width), dtype=np.float32)
    for start in range(0, n, chunk):
        # writable copy of one chunk: memory maps are read-only, torch wants writable
        block = torch.from_numpy(np.require(x_arr[start:start + chunk], dtype=np.float32,
                                            requirements=["C", "W"]))
        if pool_k:
            block = torch.nn.functional.adaptive_avg_pool2d(block, pool_k)
        block = block.reshape(block.shape[0], -1)
        if proj is not None:
            block = block @ proj
        out[start:start + chunk] = block.numpy()
    return out, f"{'; '.join(notes)} ({d} values per sample)"


def _check_xy(x: Any, y: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    y_arr = np.asarray(y)
    if y_arr.ndim != 1:
        raise UsageError(f"{what} labels must be class ids of shape (samples,), got "
                         f"{y_arr.shape}; separability needs a classification task")
    if np.shape(x)[0] != y_arr.shape[0]:
        raise UsageError(f"{what} features have {np.shape(x)[0]} samples but labels have "
                         f"{y_arr.shape[0]}")
    return x, y_arr


@dataclass(frozen=True)
class Separability:
    """Linear-probe and kNN accuracy of one feature set (train split → test split)."""

    probe_accuracy: float
    probe_train_accuracy: float
    knn_accuracy: float
    k: int
    n_train: int
    n_test: int
    n_features: int
    reduction: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: the largest train matrix (samples × features) whose probe fits on one BLAS thread
SINGLE_THREAD_PROBE_SIZE = 2_000_000


def linear_probe(x_train: Any, y_train: Any, x_test: Any, y_test: Any, *, C: float = 1.0,
                 max_iter: int = 300, max_features: int | None = MAX_FEATURES,
                 random_state: int = 0) -> tuple[float, float, str | None]:
    """Test and train accuracy of a standardised multinomial logistic regression.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 3)); y = (x[:, 0] > 0).astype(int)
    >>> linear_probe(x[:150], y[:150], x[150:], y[150:])[0] > 0.9
    True
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x_train, y_train = _check_xy(x_train, y_train, "train")
    x_test, y_test = _check_xy(x_test, y_test, "test")
    a, note = reduce_features(x_train, max_features, random_state=random_state)
    b, _ = reduce_features(x_test, max_features, random_state=random_state)
    if len(np.unique(y_train)) < 2:
        raise UsageError("the probe's train split holds a single class; use more samples")
    scaler = StandardScaler().fit(a)
    a, b = scaler.transform(a), scaler.transform(b)
    clf = LogisticRegression(C=C, max_iter=max_iter, tol=1e-3)
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    # L-BFGS makes hundreds of small BLAS calls: below ~2M values, waking BLAS threads costs
    # more than they save (0.07 → 0.01 s at 1000 × 64; a recurrent view's 56 probes 12 → 2 s)
    threads = 1 if a.size <= SINGLE_THREAD_PROBE_SIZE else None
    with warnings.catch_warnings(), threadpool_limits(threads):
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(a, y_train)
    return float(clf.score(b, y_test)), float(clf.score(a, y_train)), note


def knn_accuracy(x_train: Any, y_train: Any, x_test: Any, y_test: Any, *, k: int = 5,
                 max_features: int | None = MAX_FEATURES, random_state: int = 0) -> float:
    """Accuracy of a k-nearest-neighbour vote (Euclidean) from train to test samples."""
    from sklearn.neighbors import KNeighborsClassifier

    x_train, y_train = _check_xy(x_train, y_train, "train")
    x_test, y_test = _check_xy(x_test, y_test, "test")
    a, _ = reduce_features(x_train, max_features, random_state=random_state)
    b, _ = reduce_features(x_test, max_features, random_state=random_state)
    clf = KNeighborsClassifier(n_neighbors=min(k, a.shape[0]), algorithm="brute", n_jobs=-1)
    clf.fit(a, y_train)
    return float(clf.score(b, y_test))


def separability(x_train: Any, y_train: Any, x_test: Any, y_test: Any, *, k: int = 5,
                 max_features: int | None = MAX_FEATURES, random_state: int = 0
                 ) -> Separability:
    """Probe and kNN accuracy of features in their own space (train split → test split)."""
    x_train, y_train = _check_xy(x_train, y_train, "train")
    x_test, y_test = _check_xy(x_test, y_test, "test")
    a, note = reduce_features(x_train, max_features, random_state=random_state)
    b, _ = reduce_features(x_test, max_features, random_state=random_state)
    probe, probe_train, _ = linear_probe(a, y_train, b, y_test, max_features=None)
    knn = knn_accuracy(a, y_train, b, y_test, k=k, max_features=None)
    return Separability(probe_accuracy=probe, probe_train_accuracy=probe_train,
                        knn_accuracy=knn, k=k, n_train=int(a.shape[0]),
                        n_test=int(b.shape[0]), n_features=int(np.prod(np.shape(x_train)[1:])),
                        reduction=note)


# ---- map faithfulness --------------------------------------------------------------------
def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = (a * a).sum(1, keepdim=True) - 2 * a @ b.T + (b * b).sum(1)[None, :]
    return d.clamp_min_(0)


def knn_indices(x: Any, k: int, *, chunk: int = 1024) -> np.ndarray:
    """Each sample's ``k`` nearest other samples (Euclidean), shape (samples, k), exact."""
    t = torch.from_numpy(np.ascontiguousarray(np.asarray(x).reshape(np.shape(x)[0], -1),
                                              dtype=np.float64))
    n = t.shape[0]
    if k >= n:
        raise UsageError(f"n_neighbors must be < n_samples (got {k}, n_samples={n})")
    out = np.empty((n, k), dtype=np.int64)
    for s in range(0, n, chunk):
        d = _sq_dists(t[s:s + chunk], t)
        rows = torch.arange(d.shape[0])
        d[rows, rows + s] = float("inf")
        out[s:s + chunk] = torch.topk(d, k, largest=False, sorted=True).indices.numpy()
    return out


def trustworthiness(x_high: Any, x_low: Any, n_neighbors: int = 10, *,
                    chunk: int = 256) -> float:
    """Trustworthiness of a map (Venna & Kaski): 1 = every map neighbour is a true neighbour.

    Same definition as :func:`sklearn.manifold.trustworthiness`, computed row-block by
    row-block so 10,000 samples never need an n×n matrix in memory.
    """
    hi = torch.from_numpy(np.ascontiguousarray(
        np.asarray(x_high).reshape(np.shape(x_high)[0], -1), dtype=np.float64))
    n = hi.shape[0]
    k = n_neighbors
    if k >= n / 2:
        raise UsageError(f"n_neighbors ({k}) must be < n_samples / 2 ({n / 2:g}) for "
                         "trustworthiness")
    low_nn = torch.from_numpy(knn_indices(x_low, k))
    total = 0.0
    for s in range(0, n, chunk):
        d = _sq_dists(hi[s:s + chunk], hi)
        rows = torch.arange(d.shape[0])
        d[rows, rows + s] = float("inf")
        dj = torch.gather(d, 1, low_nn[s:s + chunk])                    # (b, k)
        ranks = (d[:, None, :] < dj[:, :, None]).sum(-1) + 1            # 1 = nearest
        total += float((ranks - k).clamp_min(0).sum())
    return 1.0 - total * 2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0))


def knn_recall(x_high: Any, x_low: Any, n_neighbors: int = 10) -> float:
    """Mean fraction of each sample's k nearest neighbours (original space) kept in the map."""
    a = knn_indices(x_high, n_neighbors)
    b = knn_indices(x_low, n_neighbors)
    hits = sum(len(np.intersect1d(a[i], b[i], assume_unique=True)) for i in range(a.shape[0]))
    return hits / (a.shape[0] * n_neighbors)


def loo_knn_accuracy(x: Any, labels: Any, k: int = 5) -> float:
    """Leave-one-out kNN accuracy within one set (majority vote of the k nearest others)."""
    y = np.asarray(labels)
    nn_idx = knn_indices(x, k)
    votes = y[nn_idx]
    n_classes = int(y.max()) + 1
    counts = np.zeros((y.shape[0], n_classes), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(y.shape[0]), k), votes.ravel()), 1)
    return float((counts.argmax(1) == y).mean())


SILHOUETTE_NOTE = ("silhouette of the 2-D map rewards compact, well-spaced blobs (which "
                   "t-SNE produces by design), not separability of the layer")


def map_quality(x_high: Any, coords: Any, labels: Any = None, *, n_neighbors: int = 10,
                k: int = 5, max_features: int | None = MAX_FEATURES,
                random_state: int = 0) -> dict[str, Any]:
    """Faithfulness (trustworthiness, kNN recall) and 2-D class numbers of one map.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(80, 2))
    >>> round(map_quality(x, x)["trustworthiness"], 6)
    1.0
    """
    from shenjing.analysis.embed import unit_scale

    hi, note = reduce_features(x_high, max_features, random_state=random_state)
    hi = unit_scale(hi)  # distances of ~1e-28 activations underflow (see unit_scale)
    out: dict[str, Any] = {
        "trustworthiness": trustworthiness(hi, coords, n_neighbors),
        "knn_recall": knn_recall(hi, coords, n_neighbors),
        "n_neighbors": n_neighbors,
        "reduction": note,
    }
    if labels is not None:
        from sklearn.metrics import silhouette_score

        y = np.asarray(labels)
        out["knn_accuracy_2d"] = loo_knn_accuracy(coords, y, k)
        if len(np.unique(y)) > 1:
            out["silhouette_2d"] = float(silhouette_score(
                coords, y, sample_size=min(len(y), 5000), random_state=random_state))
            out["silhouette_note"] = SILHOUETTE_NOTE
    return out
