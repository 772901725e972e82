"""2-D maps of layer features: t-SNE (openTSNE), PCA (scikit-learn), UMAP (optional extra).

Same ``random_state`` → same coordinates. A sequence of maps of the *same samples* (one
per epoch, or per layer) is **aligned** by :func:`embed_sequence`: each t-SNE/UMAP map
starts from the previous map's coordinates, and each PCA map is rotated/reflected onto the
previous one (orthogonal Procrustes), so clusters can be followed instead of jumping.

Optionally the features are first reduced to ``pca_dims`` (50) principal components before
t-SNE/UMAP: cheaper neighbour search, same neighbourhoods up to noise.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from shenjing.errors import UsageError, unknown_name
from shenjing.filenames import EMBEDDING_METHODS

METHODS = EMBEDDING_METHODS  # one list: the embedding file names parse these back


@dataclass(frozen=True, repr=False)
class Embedding:
    """A 2-D (or k-D) map of ``n`` samples.

    ``coords`` (n, n_components) float32; ``labels``/``indices`` (n,) when known;
    ``params`` the settings that made it (method, seed, perplexity, pca_dims, aligned_to…);
    ``metrics`` map-quality numbers (trustworthiness, kNN recall, …) once computed.
    """

    coords: np.ndarray
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    labels: np.ndarray | None = None
    indices: np.ndarray | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return int(self.coords.shape[0])

    def with_metrics(self, **metrics: Any) -> Embedding:
        """A copy with ``metrics`` added."""
        return replace(self, metrics={**self.metrics, **metrics})

    def __repr__(self) -> str:
        nums = ", ".join(f"{k}={v:.3f}" for k, v in self.metrics.items()
                         if isinstance(v, float))
        return (f"Embedding({self.method}, n_samples={self.n_samples}"
                + (f", {nums}" if nums else "") + ")")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the map atomically as ``.npz``: ``coords``, ``indices``, ``metrics`` and
        ``params`` (JSON), and ``labels`` when known; :func:`load_embedding` reads it."""
        from shenjing import _io

        arrays: dict[str, Any] = {"coords": self.coords, "indices": self.indices,
                                  "metrics": self.metrics, "params": self.params}
        if self.labels is not None:
            arrays["labels"] = self.labels
        return _io.save_npz(path, **arrays)


def load_embedding(path: str | os.PathLike[str]) -> Embedding:
    """The map :meth:`Embedding.save` wrote (its method is read from its ``params``)."""
    with np.load(path, allow_pickle=False) as z:
        params = json.loads(str(z["params"]))
        return Embedding(coords=z["coords"], method=params["method"], params=params,
                         labels=z["labels"] if "labels" in z.files else None,
                         indices=z["indices"], metrics=json.loads(str(z["metrics"])))


_TINY, _HUGE = 1e-6, 1e6  # activation scales outside these are rescaled before distances


def _as_2d(features: Any) -> np.ndarray:
    x = np.asarray(features)
    if x.ndim < 2:
        raise UsageError(f"features must be (samples, features), got shape {x.shape}")
    x = x.reshape(x.shape[0], -1)
    if not np.issubdtype(x.dtype, np.floating) or x.dtype == np.float16:
        x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise UsageError("features contain NaN or infinity; the model's activations "
                         "overflowed or the checkpoint is broken")
    return np.ascontiguousarray(unit_scale(x))


def unit_scale(x: np.ndarray) -> np.ndarray:
    """``x`` divided by its largest |value| when that is below 1e-6 or above 1e6, else ``x``.

    A deep untrained net's activations can be ~1e-28: their squared distances underflow
    float32 and every map collapses to one point. Maps, neighbours and trustworthiness do not
    depend on the overall scale, so it is brought to 1 first (ordinary scales are left as
    they are, bit for bit).

    >>> unit_scale(np.array([[2e-28, -1e-28]], dtype=np.float32)).tolist()
    [[1.0, -0.5]]
    """
    peak = float(np.abs(x).max()) if x.size else 0.0
    if 0.0 < peak < _TINY or peak > _HUGE:
        return x / np.asarray(peak, dtype=x.dtype)
    return x


def reduce_pca(x: np.ndarray, n_dims: int | None, random_state: int = 0) -> np.ndarray:
    """The first ``n_dims`` principal components of ``x`` (x itself if already narrower)."""
    if not n_dims or x.shape[1] <= n_dims or x.shape[0] <= n_dims:
        return x
    from sklearn.decomposition import PCA

    return PCA(n_dims, random_state=random_state).fit_transform(x).astype(np.float32)


def _n_jobs(n_jobs: int) -> int:
    return (os.cpu_count() or 1) if n_jobs in (-1, 0) else int(n_jobs)


def _tsne(x: np.ndarray, *, n_components: int, perplexity: float, random_state: int,
          init: np.ndarray | None, n_jobs: int, n_iter: int, early_exaggeration_iter: int,
          ) -> np.ndarray:
    from openTSNE import TSNE
    from openTSNE.initialization import rescale

    if x.shape[0] - 1 < 3 * perplexity:
        raise UsageError(f"perplexity must be < n_samples / 3 (got perplexity={perplexity}, "
                         f"n_samples={x.shape[0]}); lower --perplexity or use more samples")
    initialization: Any = "pca"
    if init is not None:
        # start from the previous map; early exaggeration would reshuffle it, so skip it
        initialization = rescale(np.asarray(init, dtype=np.float64))
        early_exaggeration_iter = 0
    tsne = TSNE(n_components=n_components, perplexity=perplexity, initialization=initialization,
                n_jobs=_n_jobs(n_jobs), random_state=random_state, n_iter=n_iter,
                early_exaggeration_iter=early_exaggeration_iter,
                negative_gradient_method="auto" if n_components <= 2 else "bh",
                verbose=False)
    coords = np.asarray(tsne.fit(x), dtype=np.float64)
    if init is not None:
        coords = _procrustes_onto(coords, np.asarray(init, np.float64))
    return coords.astype(np.float32)


def _procrustes_onto(coords: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Rotate/reflect ``coords`` (centred) onto ``ref``: same shape, same orientation."""
    from scipy.linalg import orthogonal_procrustes

    a = coords - coords.mean(0)
    r, _ = orthogonal_procrustes(a, ref - ref.mean(0))
    return a @ r


_UMAP_CACHE_READY = False


def _import_umap() -> Any:
    """Import umap-learn with its numba functions compiled once and cached on disk.

    umap-learn leaves most functions uncached, so every new process pays ~40 s of JIT;
    enabling numba's on-disk cache on them makes only the first process on a machine pay.
    """
    global _UMAP_CACHE_READY
    from shenjing._optional import require

    cache = Path(os.environ.get("SHENJING_CACHE", Path.home() / ".cache" / "shenjing"))
    os.environ.setdefault("NUMBA_CACHE_DIR", str(cache / "numba"))
    umap = require("umap", extra="umap", purpose="method='umap'")
    if not _UMAP_CACHE_READY:
        import importlib

        for mod_name in ("umap.umap_", "umap.layouts", "umap.utils", "umap.spectral",
                         "umap.distances", "pynndescent.pynndescent_", "pynndescent.utils",
                         "pynndescent.distances", "pynndescent.rp_trees"):
            try:
                mod = importlib.import_module(mod_name)
            except ImportError:
                continue
            for obj in list(vars(mod).values()):
                enable = getattr(obj, "enable_caching", None)
                if callable(enable) and not getattr(obj, "_cache", None).__class__.__name__ \
                        .endswith("FunctionCache"):
                    # a function numba cannot cache stays as it is
                    with contextlib.suppress(Exception):
                        enable()
        _UMAP_CACHE_READY = True
    return umap


def _umap(x: np.ndarray, *, n_components: int, random_state: int, init: np.ndarray | None,
          n_neighbors: int, min_dist: float, n_jobs: int) -> np.ndarray:
    umap = _import_umap()
    if x.shape[0] <= n_neighbors:
        raise UsageError(f"n_neighbors must be < n_samples (got n_neighbors={n_neighbors}, "
                         f"n_samples={x.shape[0]})")
    # exact neighbours from one batched torch call replace pynndescent, whose numba code
    # cannot be cached and so costs JIT time in every process
    knn_idx, knn_dist = _knn_with_self(x, n_neighbors)
    reducer = umap.UMAP(n_components=n_components, n_neighbors=n_neighbors,
                        min_dist=min_dist, random_state=random_state,
                        init="spectral" if init is None else np.asarray(init, np.float64),
                        n_jobs=1 if random_state is not None else _n_jobs(n_jobs),
                        precomputed_knn=(knn_idx, knn_dist, None))
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*precomputed_knn.*")
        warnings.filterwarnings("ignore", message=".*Cannot cache compiled function.*")
        warnings.filterwarnings("ignore", message=".*n_jobs value.*")
        coords = reducer.fit_transform(x)
    return np.asarray(coords, dtype=np.float32)


def _knn_with_self(x: np.ndarray, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(samples, k) indices and Euclidean distances of the k nearest points, self first."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    sq = (t * t).sum(1)
    idx = np.empty((t.shape[0], k), dtype=np.int64)
    dist = np.empty((t.shape[0], k), dtype=np.float32)
    for s in range(0, t.shape[0], chunk):
        d = (sq[s:s + chunk, None] - 2 * t[s:s + chunk] @ t.T + sq[None, :]).clamp_min_(0)
        rows = torch.arange(d.shape[0])
        d[rows, rows + s] = -1.0  # self first, at distance 0
        top = torch.topk(d, k, largest=False, sorted=True)
        idx[s:s + chunk] = top.indices.numpy()
        dist[s:s + chunk] = top.values.clamp_min(0).sqrt().numpy()
    return idx, dist


def _pca(x: np.ndarray, *, n_components: int, random_state: int,
         init: np.ndarray | None) -> np.ndarray:
    from sklearn.decomposition import PCA

    coords = PCA(n_components, random_state=random_state).fit_transform(x)
    if init is not None:  # rotate/reflect onto the previous map (same samples)
        coords = _procrustes_onto(coords, np.asarray(init, np.float64))
    return np.asarray(coords, dtype=np.float32)


def embed(features: Any, method: str = "tsne", *, n_components: int = 2,
          pca_dims: int | None = 50, random_state: int = 0, perplexity: float = 30.0,
          n_neighbors: int = 15, min_dist: float = 0.1, init: np.ndarray | None = None,
          n_jobs: int = -1, n_iter: int = 400, early_exaggeration_iter: int = 200,
          labels: Any = None, indices: Any = None) -> Embedding:
    """Map ``features`` (samples, …) to ``n_components`` dimensions.

    ``method``: ``'tsne'`` (openTSNE, FFT gradients, all cores), ``'pca'`` or ``'umap'``
    (needs ``pip install "shenjing[umap]"``). ``pca_dims`` reduces the features to that
    many principal components first (t-SNE/UMAP only; None to skip). ``init`` (samples,
    n_components) starts the map from given coordinates (t-SNE/UMAP) or aligns it to them
    (PCA): this is how :func:`embed_sequence` keeps maps comparable. t-SNE runs
    ``early_exaggeration_iter`` + ``n_iter`` = 200 + 400 iterations (openTSNE: 250 + 500): on
    10,000 MNIST features the maps' 2-D kNN accuracy was the same (0.941 vs 0.941) in 20 %
    less time (bench/embed.py). ``n_jobs=-1`` uses all cores; on a machine shared with
    other busy jobs, ``n_jobs=1`` avoids oversubscription.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(60, 5))
    >>> embed(x, "pca").coords.shape
    (60, 2)
    """
    if method not in METHODS:
        raise unknown_name("embedding method", method, METHODS)
    x = _as_2d(features)
    n = x.shape[0]
    if n < 3:
        raise UsageError(f"an embedding needs at least 3 samples, got {n}")
    if init is not None and np.shape(init) != (n, n_components):
        raise UsageError(f"init must have shape {(n, n_components)} (one row per sample), "
                         f"got {np.shape(init)}")
    params: dict[str, Any] = {"method": method, "n_components": n_components,
                              "random_state": random_state, "n_features": int(x.shape[1]),
                              "aligned": init is not None}
    if method == "umap":
        _import_umap()  # the pip line before any other work
    if method == "pca":
        coords = _pca(x, n_components=n_components, random_state=random_state, init=init)
    else:
        reduced = reduce_pca(x, pca_dims, random_state)
        params["pca_dims"] = int(reduced.shape[1]) if reduced is not x else None
        if method == "tsne":
            params.update(perplexity=perplexity, n_iter=n_iter,
                          early_exaggeration_iter=early_exaggeration_iter)
            coords = _tsne(reduced, n_components=n_components, perplexity=perplexity,
                           random_state=random_state, init=init, n_jobs=n_jobs, n_iter=n_iter,
                           early_exaggeration_iter=early_exaggeration_iter)
        else:
            params.update(n_neighbors=n_neighbors, min_dist=min_dist)
            coords = _umap(reduced, n_components=n_components, random_state=random_state,
                           init=init, n_neighbors=n_neighbors, min_dist=min_dist,
                           n_jobs=n_jobs)
    return Embedding(coords=coords, method=method, params=params,
                     labels=None if labels is None else np.asarray(labels),
                     indices=None if indices is None else np.asarray(indices))


def embed_sequence(features: Sequence[Any] | Mapping[Any, Any], method: str = "tsne", *,
                   align: bool = True, **kwargs: Any) -> list[Embedding]:
    """Embed several feature sets of the same samples (epochs, layers), aligned in order.

    With ``align`` each map after the first is initialised from (t-SNE, UMAP) or rotated
    onto (PCA) the previous map, so the same sample stays roughly in place. Aligned t-SNE
    maps skip early exaggeration (it would reshuffle the starting layout) and are finally
    rotated/reflected onto the previous map (orthogonal Procrustes).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> maps = embed_sequence([rng.normal(size=(50, 4)), rng.normal(size=(50, 6))], "pca")
    >>> [m.params["aligned"] for m in maps]
    [False, True]
    """
    items = list(features.values()) if isinstance(features, Mapping) else list(features)
    out: list[Embedding] = []
    for feats in items:
        out.append(embed_after(feats, method, out[-1] if out else None, align=align,
                               **kwargs))
    return out


def embed_after(features: Any, method: str = "tsne",
                previous: Embedding | np.ndarray | None = None, *, align: bool = True,
                **kwargs: Any) -> Embedding:
    """The next map of a sequence (:func:`embed_sequence`, one step): with ``align`` and a
    ``previous`` map (an :class:`Embedding` or its coordinates), initialised from it
    (t-SNE, UMAP) or rotated onto it (PCA), so the same samples stay roughly in place.

    For a caller that makes the maps one at a time (the embed stage reuses maps already on
    disk and captures one epoch at a time); ``kwargs`` go to :func:`embed`.
    """
    init = previous.coords if isinstance(previous, Embedding) else previous
    return embed(features, method, init=init if align else None, **kwargs)
