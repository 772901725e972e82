"""The GAN view's numbers against independent computations: the Fréchet distance against
``scipy.linalg.sqrtm`` and the closed form of diagonal Gaussians, class coverage on
constructed sample sets, nearest neighbours against a brute-force loop, the memorisation
check's threshold, and the classifier's outputs against a hand-set network."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from shenjing.analysis.gan import (
    GanHistory,
    class_coverage,
    classifier_outputs,
    default_min_fraction,
    evaluate_samples,
    frechet_distance,
    gaussian_frechet,
    latent_interpolation,
    memorisation_check,
    nearest_neighbours,
    real_reference,
)


def _scipy_frechet(mu1, cov1, mu2, cov2):
    covmean = scipy.linalg.sqrtm(cov1 @ cov2)
    covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1 + cov2 - 2 * covmean))


def _random_cov(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


@pytest.mark.parametrize("d", [1, 3, 8])
def test_gaussian_frechet_matches_scipy_sqrtm(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    c1, c2 = _random_cov(rng, d), _random_cov(rng, d)
    assert gaussian_frechet(mu1, c1, mu2, c2) == pytest.approx(
        _scipy_frechet(mu1, c1, mu2, c2), rel=1e-7, abs=1e-9)


def test_gaussian_frechet_closed_form_for_diagonal_covariances():
    # N(μ1, diag σ1²) vs N(μ2, diag σ2²): ‖μ1 − μ2‖² + Σ (σ1 − σ2)²
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 2.0, 0.5]), np.array([3.0, 2.0, 1.5])
    expected = float(((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum())
    assert gaussian_frechet(mu1, np.diag(s1**2), mu2, np.diag(s2**2)) == pytest.approx(
        expected, rel=1e-12)
    assert expected == pytest.approx(5.0 + 4.0 + 1.0)


def test_frechet_distance_of_samples_uses_the_sample_moments():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 4))
    b = rng.normal(loc=2.0, scale=1.5, size=(300, 4))
    expected = _scipy_frechet(a.mean(0), np.cov(a, rowvar=False), b.mean(0),
                              np.cov(b, rowvar=False))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-7)
    # one distribution: near zero; shifted by 2 and scaled by 1.5 in 4-D: about 4·(4 + 0.25)
    same = frechet_distance(a[:200], a[200:])
    assert same < 0.2
    assert frechet_distance(a, b) == pytest.approx(17.0, rel=0.15)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_refuses_mismatched_or_tiny_sets():
    with pytest.raises(ValueError, match="differ in width"):
        frechet_distance(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="≥ 2 samples"):
        frechet_distance(np.zeros((1, 2)), np.zeros((5, 2)))


def test_class_coverage_counts_constructed_sets():
    n_classes = 10
    assert default_min_fraction(n_classes) == pytest.approx(0.02)
    # every class equally: all covered
    uniform = class_coverage(np.repeat(np.arange(10), 50), n_classes)
    assert uniform.n_covered == 10 and uniform.missing == ()
    # collapse onto 3 classes: exactly those covered
    collapsed = class_coverage(np.array([1] * 300 + [4] * 150 + [7] * 50), n_classes)
    assert collapsed.covered == (1, 4, 7)
    assert collapsed.counts.tolist() == [0, 300, 0, 0, 150, 0, 0, 50, 0, 0]
    # a class at 1.8 % (9 of 500) is below the 2 % threshold, one at exactly 2 % counts
    labels = np.array([0] * 9 + [1] * 10 + [2] * 481)
    edge = class_coverage(labels, n_classes)
    assert edge.covered == (1, 2) and edge.n_covered == 2
    assert 0 in edge.missing
    custom = class_coverage(labels, n_classes, min_fraction=0.01)
    assert custom.covered == (0, 1, 2)
    conf = class_coverage(np.array([0, 1]), 2, confidences=np.array([0.5, 1.0]))
    assert conf.mean_confidence == pytest.approx(0.75)


def test_class_coverage_refuses_bad_labels_and_thresholds():
    with pytest.raises(ValueError, match="class indices"):
        class_coverage(np.array([0, 10]), 10)
    with pytest.raises(ValueError, match="min_fraction"):
        class_coverage(np.array([0, 1]), 10, min_fraction=0.0)


def test_nearest_neighbours_matches_a_brute_force_loop():
    rng = np.random.default_rng(1)
    queries = rng.normal(size=(37, 1, 3, 3))
    reference = rng.normal(size=(50, 1, 3, 3))
    dist, index = nearest_neighbours(queries, reference, chunk=8)
    for q, d, i in zip(queries.reshape(37, -1), dist, index, strict=True):
        all_d = np.sqrt(((reference.reshape(50, -1) - q) ** 2).sum(1))
        assert i == int(np.argmin(all_d))
        assert d == pytest.approx(float(all_d.min()), rel=1e-9, abs=1e-9)
    # a query equal to a reference row is found at distance 0
    dist, index = nearest_neighbours(reference[[5, 17]], reference)
    assert index.tolist() == [5, 17] and np.allclose(dist, 0.0, atol=1e-6)


def test_memorisation_check_flags_copies_and_not_new_samples():
    rng = np.random.default_rng(2)
    test_to_train = rng.uniform(1.0, 3.0, size=1000)
    copies = memorisation_check(np.full(100, 0.01), test_to_train)
    assert copies.fraction_close == 1.0 and copies.ratio < 0.01
    fresh = memorisation_check(rng.uniform(1.0, 3.0, size=1000), test_to_train)
    assert fresh.fraction_close == pytest.approx(0.05, abs=0.03)
    assert fresh.ratio == pytest.approx(1.0, abs=0.1)
    assert copies.close_threshold == pytest.approx(np.percentile(test_to_train, 5))


class _Classifier(nn.Module):
    """Two pixels → hand-set features → logits: class 0 when pixel 0 is bright, else 1."""

    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(2, 2)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(2, 2)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.eye(2))
            self.fc1.bias.zero_()
            self.fc2.weight.copy_(torch.tensor([[10.0, 0.0], [0.0, 10.0]]))
            self.fc2.bias.zero_()

    def forward(self, x):
        return self.fc2(self.relu1(self.fc1(self.flatten(x))))


def test_classifier_outputs_are_the_hand_set_features_and_softmax():
    net = _Classifier()
    x = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 0.5]]]])
    probs, features = classifier_outputs(net, x, "relu1", batch_size=1)
    assert features.tolist() == [[1.0, 0.0], [0.0, 0.5]]
    expected = torch.softmax(torch.tensor([[10.0, 0.0], [0.0, 5.0]]), 1).numpy()
    assert np.allclose(probs, expected, atol=1e-6)
    assert net.training  # its mode is given back


def test_evaluate_samples_sees_collapse_and_copies():
    net = _Classifier()
    gen = torch.Generator().manual_seed(0)
    # real data in [−1, 1]: half "class 0" (pixel 0 bright), half "class 1"
    bright0 = torch.tensor([0.7, -0.7]) + 0.1 * torch.randn(100, 2, generator=gen)
    bright1 = torch.tensor([-0.7, 0.7]) + 0.1 * torch.randn(100, 2, generator=gen)
    train = torch.cat([bright0[:50], bright1[:50]]).reshape(100, 1, 1, 2)
    test = torch.cat([bright0[50:], bright1[50:]]).reshape(100, 1, 1, 2)
    ref = real_reference(net, train, test, "relu1", 2)
    copies = evaluate_samples(train[:50], net, ref, feature_layer="relu1")
    assert copies.coverage.covered == (0,)           # collapsed onto one class
    assert copies.memorisation.fraction_close == 1.0  # exact training images
    assert np.allclose(copies.nearest_distance, 0.0, atol=1e-6)
    assert copies.nearest_index.tolist() == list(range(50))
    fresh = evaluate_samples(test, net, ref, feature_layer="relu1")
    assert fresh.coverage.covered == (0, 1)
    assert fresh.frechet < copies.frechet
    rec = fresh.record()
    assert rec["n_covered"] == 2 and rec["class_counts"] == [50, 50]


def test_latent_interpolation_walks_from_z0_to_z1():
    generator = nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Unflatten(1, (1, 1, 2)))
    with torch.no_grad():
        generator[0].weight.copy_(torch.eye(2) * 5)
        generator[0].bias.zero_()
    walk = latent_interpolation(generator, torch.tensor([1.0, -1.0]), torch.tensor([-1.0, 1.0]),
                                _Classifier(), n_steps=5)
    assert walk.alphas.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert walk.images.shape == (5, 1, 1, 2)
    assert walk.predictions[0] == 0 and walk.predictions[-1] == 1
    assert np.allclose(walk.images[2], 0.0, atol=1e-6)  # the midpoint z = 0


def test_history_from_records_keeps_epoch0_as_nan():
    base = {"class_counts": [3, 1], "frechet_floor": 0.1, "nn_median_test": 2.0,
            "min_fraction": 0.1, "n_covered": 2, "frechet": 1.0, "confidence": 0.9,
            "nn_median": 1.5}
    records = [{"epoch": 0, "loss_d": None, "loss_g": None, "d_real": None, "d_fake": None,
                **base},
               {"epoch": 1, "loss_d": 1.0, "loss_g": 2.0, "d_real": 0.6, "d_fake": 0.4,
                **base}]
    h = GanHistory.from_records(records)
    assert np.isnan(h.loss_d[0]) and h.loss_g[1] == 2.0
    assert h.class_counts.shape == (2, 2) and h.n_classes == 2
    with pytest.raises(ValueError, match="at least one"):
        GanHistory.from_records([])
