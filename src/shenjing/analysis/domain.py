"""How far apart two domains' features are: multi-kernel MMD², CORAL distance, a domain
classifier's held-out accuracy and the proxy A-distance, and a permutation test for MMD².

- **MMD²** (Gretton et al. 2012): the unbiased estimator (diagonal terms left out, so two
  samples of one distribution give ≈ 0, and it can be slightly negative), with a mean of
  Gaussian kernels ``exp(−‖x − y‖² / (2σ²))`` at σ = σ_med × (0.25, 0.5, 1, 2, 4), σ_med
  the median distance between distinct points of the pooled sample (the median heuristic).
  The bandwidths are returned with the value, so every number can say which ones it used.
- **CORAL** (Sun & Saenko 2016): ``‖C_s − C_t‖²_F / (4 d²)``, unbiased covariances.
- **Domain classifier / proxy A-distance** (Ben-David et al. 2010): a linear classifier
  (standardised features, logistic regression) is trained to tell the domains apart on half
  of the samples and tested on the other half; ``A = 2 (1 − 2·err)``: 0 when it cannot tell
  them apart (err 0.5), 2 when it always can.

The kernel and covariance cores are the ones the training's penalties use
(:mod:`shenjing.training.dann`), evaluated here in float64 on numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from shenjing.errors import UsageError
from shenjing.training.dann import (
    BANDWIDTH_FACTORS,
    coral_torch,
    mean_gaussian_kernel,
    median_bandwidths,
    mmd2_from_kernel,
    squared_distances,
)


def _pair(x: Any, y: Any, *, need: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(len(x), -1))
    b = torch.as_tensor(np.asarray(y, dtype=np.float64).reshape(len(y), -1))
    if a.shape[1] != b.shape[1]:
        raise UsageError(f"the two samples have different widths ({a.shape[1]} and "
                         f"{b.shape[1]} features); compare features of the same layer")
    if a.shape[0] < need or b.shape[0] < need:
        raise UsageError(f"each sample needs at least {need} rows (got {a.shape[0]} and "
                         f"{b.shape[0]})")
    if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
        raise UsageError("the features hold NaN or inf; measure finite features")
    return a, b


@dataclass(frozen=True)
class MMDResult:
    """Unbiased multi-kernel MMD² and the kernel bandwidths σ it used."""

    mmd2: float
    bandwidths: tuple[float, ...]

    def __float__(self) -> float:
        return self.mmd2


def mmd2_unbiased(x: Any, y: Any, *, bandwidths: Any = None) -> MMDResult:
    """Unbiased MMD² between samples ``x`` (m, …) and ``y`` (n, …) with the mean of Gaussian
    kernels at ``bandwidths`` (None: the median heuristic × 0.25 … 4).

    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=(200, 3)), rng.normal(size=(200, 3))
    >>> abs(mmd2_unbiased(a, b).mmd2) < 0.01, mmd2_unbiased(a, b + 1).mmd2 > 0.1
    (True, True)
    """
    a, b = _pair(x, y)
    sigmas = None if bandwidths is None else torch.as_tensor(
        np.asarray(bandwidths, dtype=np.float64).ravel())
    pooled = torch.cat([a, b])
    sq = squared_distances(pooled, pooled)
    if sigmas is None:
        sigmas = median_bandwidths(sq, BANDWIDTH_FACTORS)
    value = mmd2_from_kernel(mean_gaussian_kernel(sq, sigmas), a.shape[0])
    return MMDResult(float(value), tuple(float(s) for s in sigmas))


@dataclass(frozen=True)
class PermutationTest:
    """MMD² of the two samples as given, its p-value among ``n_permutations`` random
    relabellings of the pooled sample (same kernel), and the null values' 95th percentile."""

    mmd2: float
    p_value: float
    null_95: float
    n_permutations: int
    bandwidths: tuple[float, ...]


def mmd_permutation_test(x: Any, y: Any, *, n_permutations: int = 200,
                         random_state: int = 0) -> PermutationTest:
    """Is MMD²(x, y) larger than it would be if both were samples of one distribution?
    ``p = (1 + #{null ≥ observed}) / (1 + n_permutations)``; the kernel (median bandwidths
    of the pooled sample) is fixed across permutations, so only the labelling changes."""
    a, b = _pair(x, y)
    pooled = torch.cat([a, b])
    sq = squared_distances(pooled, pooled)
    sigmas = median_bandwidths(sq, BANDWIDTH_FACTORS)
    k = mean_gaussian_kernel(sq, sigmas)
    m = a.shape[0]
    observed = float(mmd2_from_kernel(k, m))
    gen = torch.Generator().manual_seed(random_state)
    null = np.empty(n_permutations)
    for i in range(n_permutations):
        p = torch.randperm(k.shape[0], generator=gen)
        null[i] = float(mmd2_from_kernel(k[p][:, p], m))
    p_value = (1.0 + float((null >= observed).sum())) / (1.0 + n_permutations)
    return PermutationTest(observed, p_value, float(np.quantile(null, 0.95)),
                           n_permutations, tuple(float(s) for s in sigmas))


def coral_distance(x: Any, y: Any) -> float:
    """``‖C_x − C_y‖²_F / (4 d²)`` for samples ``x`` (m, d) and ``y`` (n, d).

    >>> rng = np.random.default_rng(0)
    >>> round(coral_distance(rng.normal(size=(500, 2)), 3 * rng.normal(size=(500, 2))), 1)
    9.0
    """
    a, b = _pair(x, y)
    return float(coral_torch(a, b))


@dataclass(frozen=True)
class DomainClassifier:
    """A linear domain classifier's accuracy on held-out samples and the proxy
    A-distance ``2 (1 − 2·err)``; ``n_train``/``n_test`` samples (both domains)."""

    accuracy: float
    proxy_a: float
    n_train: int
    n_test: int


def proxy_a_distance(x: Any, y: Any, *, random_state: int = 0) -> DomainClassifier:
    """Train a logistic regression (standardised features) to tell ``x`` (source) from
    ``y`` (target) on a stratified half of the samples; its accuracy on the other half, and
    the proxy A-distance (Ben-David et al. 2010).

    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(200, 4))
    >>> proxy_a_distance(a, a + 10).proxy_a
    2.0
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    a, b = _pair(x, y, need=4)
    features = torch.cat([a, b]).numpy()
    domain = np.r_[np.zeros(len(a), np.int64), np.ones(len(b), np.int64)]
    f_train, f_test, d_train, d_test = train_test_split(
        features, domain, test_size=0.5, stratify=domain, random_state=random_state)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    clf.fit(f_train, d_train)
    accuracy = float((clf.predict(f_test) == d_test).mean())
    return DomainClassifier(accuracy, 2.0 * (1.0 - 2.0 * (1.0 - accuracy)),
                            len(d_train), len(d_test))


@dataclass(frozen=True)
class DomainGap:
    """Every measure of how far apart two samples of features are, for one layer."""

    mmd2: float
    bandwidths: tuple[float, ...]
    coral: float
    domain_accuracy: float
    proxy_a: float

    def record(self) -> dict[str, Any]:
        return {"mmd2": self.mmd2, "bandwidths": list(self.bandwidths), "coral": self.coral,
                "domain_accuracy": self.domain_accuracy, "proxy_a": self.proxy_a}


def domain_gap(x: Any, y: Any, *, random_state: int = 0) -> DomainGap:
    """MMD², CORAL and the held-out domain classifier for source ``x`` and target ``y``."""
    mmd = mmd2_unbiased(x, y)
    clf = proxy_a_distance(x, y, random_state=random_state)
    return DomainGap(mmd.mmd2, mmd.bandwidths, coral_distance(x, y), clf.accuracy,
                     clf.proxy_a)


__all__ = ["DomainClassifier", "DomainGap", "MMDResult", "PermutationTest", "coral_distance",
           "domain_gap", "mmd2_unbiased", "mmd_permutation_test", "proxy_a_distance"]
