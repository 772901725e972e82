"""What a GAN's generator learned, in numbers: class coverage, Fréchet distance in a
classifier's feature space, and each sample's nearest training image.

All of it is measured with a classifier shenjing trained on the same data (its accuracy is
stated next to every number, since a bad classifier makes every number here meaningless):

- **class histogram and coverage**: the classifier's predicted class of each generated
  sample; a class is *covered* when at least ``min_fraction`` of the samples are predicted
  as it (default: a fifth of the uniform share, ``0.2 / n_classes`` — 2 % of the samples for
  10 classes). Mode collapse shows as classes that are not covered.
- **confidence**: the mean of the classifier's largest softmax probability.
- **Fréchet distance in the classifier's feature space**:
  ``‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁^½ Σ₂ Σ₁^½)^½)`` between Gaussians fitted to the features
  of generated and of real test images. It is *not* FID, which is defined on Inception-v3
  features of 299×299 colour images; its scale depends on this classifier, so compare it
  only within one run, and with its floor: the same distance between two real sets (train
  and test), which a perfect generator would reach at these sample sizes.
- **memorisation check**: the pixel (L2) distance of each generated sample to its nearest
  training image, next to the typical distance of a real *test* image to its nearest
  training image. A generator that copies its training set sits far below the test images'
  distances; one that learned the distribution sits near them.

Nothing here reads a run or draws.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

#: a class is covered when it holds at least this share of the uniform share 1 / n_classes
COVERAGE_SHARE = 0.2
#: the percentile of test-to-train distances below which a sample counts as "close"
CLOSE_PERCENTILE = 5.0


# ---- Fréchet distance ------------------------------------------------------------------
def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def gaussian_frechet(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray,
                     cov2: np.ndarray) -> float:
    """The Fréchet (2-Wasserstein²) distance between N(mu1, cov1) and N(mu2, cov2).

    ``tr((Σ₁ Σ₂)^½)`` is computed as ``Σ √λᵢ`` of the symmetric ``Σ₁^½ Σ₂ Σ₁^½``, whose
    eigenvalues are those of ``Σ₁ Σ₂`` and real, so no complex square root is needed.

    >>> round(gaussian_frechet(np.zeros(2), np.eye(2), np.ones(2), 4 * np.eye(2)), 6)
    4.0
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.atleast_2d(cov1).astype(np.float64), np.atleast_2d(cov2).astype(np.float64)
    root1 = _sqrt_psd(cov1)
    middle = root1 @ cov2 @ root1
    trace_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0,
                                       None)).sum())
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_sqrt)
    return max(value, 0.0)


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(n, features)``
    (sample mean and unbiased covariance of each)."""
    a = np.asarray(features_a, np.float64).reshape(len(features_a), -1)
    b = np.asarray(features_b, np.float64).reshape(len(features_b), -1)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets differ in width: {a.shape[1]} and {b.shape[1]}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"a covariance needs ≥ 2 samples per set (got {len(a)} and {len(b)})")
    return gaussian_frechet(a.mean(0), np.cov(a, rowvar=False), b.mean(0),
                            np.cov(b, rowvar=False))


# ---- classes covered ---------------------------------------------------------------------
@dataclass(frozen=True)
class ClassCoverage:
    """How generated samples spread over the classes, as the classifier sees them.

    ``counts[k]`` samples are predicted as class ``k``; class ``k`` is covered when
    ``counts[k] / n_samples ≥ min_fraction``.

    >>> c = class_coverage(np.array([0, 0, 1, 1, 1, 2]), 4, min_fraction=0.3)
    >>> c.counts.tolist(), c.covered, c.n_covered
    ([2, 3, 1, 0], (0, 1), 2)
    """

    counts: np.ndarray
    min_fraction: float
    mean_confidence: float | None = None

    @property
    def n_samples(self) -> int:
        return int(self.counts.sum())

    @property
    def n_classes(self) -> int:
        return int(self.counts.shape[0])

    @property
    def fractions(self) -> np.ndarray:
        return self.counts / max(self.n_samples, 1)

    @property
    def covered(self) -> tuple[int, ...]:
        return tuple(int(k) for k in np.flatnonzero(self.fractions >= self.min_fraction))

    @property
    def missing(self) -> tuple[int, ...]:
        return tuple(k for k in range(self.n_classes) if k not in self.covered)

    @property
    def n_covered(self) -> int:
        return len(self.covered)


def default_min_fraction(n_classes: int) -> float:
    """A fifth of the uniform share: ``0.2 / n_classes`` (0.02 for ten classes)."""
    return COVERAGE_SHARE / n_classes


def class_coverage(predictions: np.ndarray, n_classes: int, *,
                   min_fraction: float | None = None,
                   confidences: np.ndarray | None = None) -> ClassCoverage:
    """Count the predicted class of each sample; ``min_fraction`` (default
    :func:`default_min_fraction`) is the share a class needs to count as covered."""
    predictions = np.asarray(predictions).astype(np.int64).ravel()
    if predictions.size and (predictions.min() < 0 or predictions.max() >= n_classes):
        raise ValueError(f"predictions must be class indices in 0..{n_classes - 1}")
    threshold = default_min_fraction(n_classes) if min_fraction is None else min_fraction
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"min_fraction must be in (0, 1], got {threshold}")
    counts = np.bincount(predictions, minlength=n_classes)
    confidence = None if confidences is None or not len(confidences) else \
        float(np.mean(confidences))
    return ClassCoverage(counts, float(threshold), confidence)


# ---- nearest neighbours --------------------------------------------------------------------
def nearest_neighbours(queries: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor,
                       *, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """For each query ``(n, …)``, the L2 distance to its nearest ``reference`` row
    ``(m, …)`` and that row's index (flattened; computed in float64, ``chunk`` queries at a
    time).

    >>> d, i = nearest_neighbours(np.array([[0., 0.], [3., 4.]]), np.array([[3., 4.], [0., 1.]]))
    >>> d.tolist(), i.tolist()
    ([1.0, 0.0], [1, 0])
    """
    q = torch.as_tensor(np.asarray(queries), dtype=torch.float64).reshape(len(queries), -1)
    r = torch.as_tensor(np.asarray(reference), dtype=torch.float64).reshape(len(reference), -1)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"queries and reference differ in size: {q.shape[1]} and {r.shape[1]}")
    r_sq = (r * r).sum(1)
    dists, index = [], []
    for start in range(0, q.shape[0], chunk):
        block = q[start:start + chunk]
        sq = (block * block).sum(1, keepdim=True) - 2.0 * block @ r.T + r_sq
        best, at = sq.min(dim=1)
        dists.append(best.clamp_min(0).sqrt())
        index.append(at)
    if not dists:
        return np.zeros(0), np.zeros(0, np.int64)
    return torch.cat(dists).numpy(), torch.cat(index).numpy()


@dataclass(frozen=True)
class MemorisationCheck:
    """Generated samples' nearest-training-image distances next to real test images'.

    ``fraction_close`` is the share of generated samples at most as far from a training
    image as the closest ``CLOSE_PERCENTILE`` % of test images are; a generator that copies
    its training images has it near 1, one that learned the distribution near 0.05.
    """

    median_generated: float
    median_test: float
    close_threshold: float
    fraction_close: float

    @property
    def ratio(self) -> float:
        """Median generated distance over median test distance (≈ 1: like new real data)."""
        return self.median_generated / self.median_test if self.median_test else float("nan")


def memorisation_check(generated_to_train: np.ndarray,
                       test_to_train: np.ndarray) -> MemorisationCheck:
    """Compare nearest-training-image distances of generated and of real test samples."""
    threshold = float(np.percentile(test_to_train, CLOSE_PERCENTILE))
    return MemorisationCheck(float(np.median(generated_to_train)),
                             float(np.median(test_to_train)), threshold,
                             float(np.mean(np.asarray(generated_to_train) <= threshold)))


# ---- the classifier's view -------------------------------------------------------------------
def classifier_outputs(classifier: nn.Module, x: torch.Tensor, feature_layer: str, *,
                       batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """The classifier's softmax probabilities ``(n, classes)`` and the output of
    ``feature_layer`` ``(n, features)`` for inputs ``x``, in eval mode (captured with
    :func:`shenjing.capture.capture`, hooks always removed)."""
    from shenjing.capture import capture

    device = next((p.device for p in classifier.parameters()), torch.device("cpu"))
    was_training = classifier.training
    classifier.eval()
    probs = []
    try:
        with torch.inference_mode(), capture(classifier, [feature_layer]) as acts:
            for start in range(0, x.shape[0], batch_size):
                out = classifier(x[start:start + batch_size].to(device))
                probs.append(torch.softmax(out.float(), dim=1).cpu())
    finally:
        classifier.train(was_training)
    features = acts[feature_layer].reshape(x.shape[0], -1).double().numpy()
    return torch.cat(probs).double().numpy(), features


@dataclass(frozen=True)
class RealReference:
    """What generated samples are compared with, computed once from the real data.

    ``train_pixels`` ``(n_train, pixels)`` and ``test_to_train`` (each test image's distance
    to its nearest training image) are in the generator's range [−1, 1]; ``test_features``
    are the classifier's features of the test images; ``frechet_floor`` the Fréchet
    distance between the train and test images' features.
    """

    train_pixels: np.ndarray
    test_to_train: np.ndarray
    test_features: np.ndarray
    frechet_floor: float
    n_classes: int


def real_reference(classifier: nn.Module, train_x: torch.Tensor, test_x: torch.Tensor,
                   feature_layer: str, n_classes: int) -> RealReference:
    """The :class:`RealReference` of a dataset: ``train_x``, ``test_x`` in [−1, 1]."""
    _, train_features = classifier_outputs(classifier, to_unit(train_x), feature_layer)
    _, test_features = classifier_outputs(classifier, to_unit(test_x), feature_layer)
    train_pixels = train_x.reshape(len(train_x), -1).double().numpy()
    test_to_train, _ = nearest_neighbours(test_x, train_pixels)
    return RealReference(train_pixels, test_to_train, test_features,
                         frechet_distance(train_features, test_features), n_classes)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Images in [−1, 1] → [0, 1], the scaling the classifier was trained on."""
    return (x + 1.0) / 2.0


@dataclass(frozen=True)
class SampleEvaluation:
    """Every number about one set of generated samples (one epoch of the generator)."""

    coverage: ClassCoverage
    frechet: float
    frechet_floor: float
    memorisation: MemorisationCheck
    predictions: np.ndarray
    confidences: np.ndarray
    nearest_index: np.ndarray
    nearest_distance: np.ndarray

    def record(self) -> dict[str, Any]:
        """The JSON numbers of this evaluation (what ``gan/history.jsonl`` stores)."""
        c, m = self.coverage, self.memorisation
        return {"class_counts": c.counts.tolist(), "n_covered": c.n_covered,
                "covered": list(c.covered), "min_fraction": c.min_fraction,
                "n_samples": c.n_samples, "confidence": c.mean_confidence,
                "frechet": self.frechet, "frechet_floor": self.frechet_floor,
                "nn_median": m.median_generated, "nn_median_test": m.median_test,
                "nn_close_threshold": m.close_threshold, "nn_fraction_close": m.fraction_close}


def evaluate_samples(samples: torch.Tensor, classifier: nn.Module, reference: RealReference,
                     *, feature_layer: str, min_fraction: float | None = None
                     ) -> SampleEvaluation:
    """Class coverage, confidence, Fréchet distance to the real test features, and the
    memorisation check of ``samples`` ``(n, channels, height, width)`` in [−1, 1]."""
    probs, features = classifier_outputs(classifier, to_unit(samples), feature_layer)
    predictions = probs.argmax(1)
    confidences = probs.max(1)
    coverage = class_coverage(predictions, reference.n_classes, min_fraction=min_fraction,
                              confidences=confidences)
    distance, index = nearest_neighbours(samples, reference.train_pixels)
    return SampleEvaluation(coverage, frechet_distance(features, reference.test_features),
                            reference.frechet_floor,
                            memorisation_check(distance, reference.test_to_train),
                            predictions, confidences, index, distance)


# ---- latent interpolation --------------------------------------------------------------------
@dataclass(frozen=True)
class Interpolation:
    """Images along the straight line from ``z0`` to ``z1`` and the classifier's verdict on
    each: ``images`` ``(steps, channels, height, width)`` in [−1, 1]."""

    alphas: np.ndarray
    images: np.ndarray
    predictions: np.ndarray
    confidences: np.ndarray
    epoch: int


def latent_interpolation(generator: nn.Module, z0: torch.Tensor, z1: torch.Tensor,
                         classifier: nn.Module, *, n_steps: int = 10,
                         epoch: int = 0) -> Interpolation:
    """Generate ``(1 − α) z0 + α z1`` for ``n_steps`` evenly spaced α in [0, 1]."""
    alphas = torch.linspace(0.0, 1.0, n_steps, dtype=z0.dtype)
    z = (1 - alphas[:, None]) * z0[None, :] + alphas[:, None] * z1[None, :]
    generator.eval()
    with torch.inference_mode():
        images = generator(z).cpu()
    probs = torch.softmax(classifier.eval()(to_unit(images)).float(), dim=1).detach()
    return Interpolation(alphas.numpy(), images.numpy(), probs.argmax(1).numpy(),
                         probs.max(1).values.numpy(), epoch)


# ---- the history of a run --------------------------------------------------------------------
@dataclass(frozen=True)
class GanHistory:
    """Per-epoch numbers of a GAN run, as arrays (epoch 0 = the untrained generator, which
    has no training numbers: NaN there)."""

    epochs: np.ndarray
    loss_d: np.ndarray
    loss_g: np.ndarray
    d_real: np.ndarray
    d_fake: np.ndarray
    n_covered: np.ndarray
    frechet: np.ndarray
    frechet_floor: float
    confidence: np.ndarray
    class_counts: np.ndarray  # (epochs, classes)
    nn_median: np.ndarray
    nn_median_test: float
    n_classes: int
    min_fraction: float

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]]) -> GanHistory:
        """From the lines of ``gan/history.jsonl``."""
        if not records:
            raise ValueError("a GAN history needs at least one epoch's record")

        def column(key: str) -> np.ndarray:
            return np.array([np.nan if r.get(key) is None else float(r[key])
                             for r in records])

        counts = np.array([r["class_counts"] for r in records], dtype=np.int64)
        last = records[-1]
        return cls(np.array([int(r["epoch"]) for r in records]), column("loss_d"),
                   column("loss_g"), column("d_real"), column("d_fake"),
                   column("n_covered").astype(np.int64), column("frechet"),
                   float(last["frechet_floor"]), column("confidence"), counts,
                   column("nn_median"), float(last["nn_median_test"]), counts.shape[1],
                   float(last["min_fraction"]))
