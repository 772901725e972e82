"""The domain-gap measures against independent computations: MMD² against a direct double
loop over the kernel, CORAL against numpy's covariance, the permutation test on one
distribution vs a shifted one, the proxy A-distance on separable vs identical features, and
the gradient-reversal layer's backward."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from shenjing.analysis.domain import (
    coral_distance,
    domain_gap,
    mmd2_unbiased,
    mmd_permutation_test,
    proxy_a_distance,
)
from shenjing.errors import UsageError
from shenjing.models.dann import DANN, GradientReversal, reverse_gradient


def _direct_mmd2(x: np.ndarray, y: np.ndarray, sigmas: list[float]) -> float:
    """The unbiased estimator written out term by term (Gretton et al. 2012, eq. 3)."""

    def k(a: np.ndarray, b: np.ndarray) -> float:
        d2 = float(((a - b) ** 2).sum())
        return sum(math.exp(-d2 / (2 * s * s)) for s in sigmas) / len(sigmas)

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def _median_distance(x: np.ndarray, y: np.ndarray) -> float:
    z = np.concatenate([x, y])
    d = [float(np.linalg.norm(z[i] - z[j])) for i in range(len(z)) for j in range(i + 1, len(z))]
    return float(np.median(d))


def test_mmd2_equals_the_direct_kernel_sum_with_given_and_median_bandwidths():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(23, 4)), rng.normal(0.4, 1.3, size=(17, 4))
    sigmas = [0.7, 2.0]
    assert mmd2_unbiased(x, y, bandwidths=sigmas).mmd2 == pytest.approx(
        _direct_mmd2(x, y, sigmas), rel=1e-10, abs=1e-12)
    med = _median_distance(x, y)
    expected = [med * f for f in (0.25, 0.5, 1.0, 2.0, 4.0)]
    result = mmd2_unbiased(x, y)
    np.testing.assert_allclose(result.bandwidths, expected, rtol=1e-10)
    assert result.mmd2 == pytest.approx(_direct_mmd2(x, y, expected), rel=1e-10, abs=1e-12)


def test_coral_equals_numpy_covariance_difference():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 6)) @ rng.normal(size=(6, 6))
    y = rng.normal(size=(40, 6))
    d = 6
    expected = float(((np.cov(x, rowvar=False) - np.cov(y, rowvar=False)) ** 2).sum()) / (4 * d * d)
    assert coral_distance(x, y) == pytest.approx(expected, rel=1e-10)
    assert coral_distance(x, x) == 0.0


def test_mmd2_is_near_zero_for_one_distribution_and_positive_for_a_shift():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(150, 5)), rng.normal(size=(150, 5))
    shifted = rng.normal(0.5, 1.0, size=(150, 5))
    same = mmd_permutation_test(a, b, n_permutations=200, random_state=0)
    diff = mmd_permutation_test(a, shifted, n_permutations=200, random_state=0)
    assert abs(same.mmd2) < 0.01 and same.mmd2 < same.null_95
    assert same.p_value > 0.05
    assert diff.mmd2 > 0.02 and diff.mmd2 > diff.null_95
    assert diff.p_value == pytest.approx(1 / 201)  # no permutation reaches it
    assert same.mmd2 == pytest.approx(mmd2_unbiased(a, b).mmd2, rel=1e-12)


def test_proxy_a_distance_on_separable_and_identical_features():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(200, 8))
    separable = proxy_a_distance(a, a + np.r_[5.0, np.zeros(7)])
    assert separable.accuracy == 1.0 and separable.proxy_a == 2.0
    assert (separable.n_train, separable.n_test) == (200, 200)
    same = proxy_a_distance(a, rng.normal(size=(200, 8)))
    assert abs(same.accuracy - 0.5) < 0.1 and abs(same.proxy_a) < 0.4
    assert same.proxy_a == pytest.approx(2 * (1 - 2 * (1 - same.accuracy)))


def test_domain_gap_collects_the_three_measures():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(60, 3)), rng.normal(2.0, 1.0, size=(60, 3))
    gap = domain_gap(x, y)
    assert gap.mmd2 == pytest.approx(mmd2_unbiased(x, y).mmd2)
    assert gap.coral == pytest.approx(coral_distance(x, y))
    assert gap.domain_accuracy > 0.9
    assert set(gap.record()) == {"mmd2", "bandwidths", "coral", "domain_accuracy", "proxy_a"}


def test_the_measures_refuse_mismatched_or_broken_features():
    with pytest.raises(UsageError, match="different widths"):
        mmd2_unbiased(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(UsageError, match="NaN or inf"):
        coral_distance(np.full((5, 2), np.nan), np.zeros((5, 2)))
    with pytest.raises(UsageError, match="at least 2 rows"):
        mmd2_unbiased(np.zeros((1, 2)), np.zeros((5, 2)))


def test_gradient_reversal_backward_is_minus_lambda_times_the_gradient():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(4, 3, dtype=torch.float64)
    (reverse_gradient(x, 0.3) * weights).sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, -0.3 * weights, rtol=0, atol=1e-15)
    # the Jacobian autograd builds from the backward is −λ·I, while the forward is the
    # identity (its finite-difference Jacobian is I) …
    t = torch.randn(3, 2, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: reverse_gradient(v, 0.7), t)
    torch.testing.assert_close(jac.reshape(6, 6), -0.7 * torch.eye(6, dtype=torch.float64))
    eps = 1e-6
    numeric = torch.stack([(reverse_gradient(t + eps * e.reshape(3, 2), 0.7)
                            - reverse_gradient(t - eps * e.reshape(3, 2), 0.7)).ravel()
                           / (2 * eps) for e in torch.eye(6, dtype=torch.float64)], 1)
    torch.testing.assert_close(numeric, torch.eye(6, dtype=torch.float64))
    # … so gradcheck (analytic vs numerical) passes exactly when −λ = 1, and fails otherwise
    assert torch.autograd.gradcheck(lambda v: GradientReversal.apply(v, -1.0),
                                    (t.clone().requires_grad_(),))
    assert not torch.autograd.gradcheck(lambda v: GradientReversal.apply(v, 0.7),
                                        (t.clone().requires_grad_(),), raise_exception=False)
    forward = reverse_gradient(x, 5.0)
    torch.testing.assert_close(forward, x)


def test_the_dann_domain_head_pushes_the_features_the_other_way():
    """Through the network: the feature extractor's gradient from the domain loss is −λ
    times what it would be without the reversal."""
    torch.manual_seed(0)
    net = DANN((1, 4, 4), n_classes=3).double()
    x = torch.randn(6, 1, 4, 4, dtype=torch.float64)
    domains = torch.tensor([0, 0, 0, 1, 1, 1])

    def feature_grad(lam: float, reverse: bool) -> torch.Tensor:
        net.zero_grad()
        f = net.feature(x.flatten(1))
        head_in = reverse_gradient(f, lam) if reverse else f
        torch.nn.functional.cross_entropy(net.domain_classifier(head_in), domains).backward()
        return net.feature[0].weight.grad.clone()

    torch.testing.assert_close(feature_grad(0.1, True), -0.1 * feature_grad(0.1, False))
