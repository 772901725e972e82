"""SSIM and Spearman against direct computations; the cascading randomization test: an
edge detector (model-independent) fails, saliency and IG on a small trained net pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shenjing.analysis.attribute import (
    THRESHOLD,
    parameter_layers,
    randomization_test,
    spearman,
    ssim,
)
from shenjing.analysis.attribute.ssim import SIGMA, window_size


# ---- SSIM (Wang et al. 2004) by a direct loop over windows ----------------------------------
def _ssim_direct(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Every window position separately: Gaussian-weighted means, variances, covariance."""
    k = window_size(*a.shape)
    r = np.arange(k) - (k - 1) / 2
    g2 = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * SIGMA ** 2))
    g2 /= g2.sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vals = []
    for i in range(a.shape[0] - k + 1):
        for j in range(a.shape[1] - k + 1):
            pa, pb = a[i:i + k, j:j + k], b[i:i + k, j:j + k]
            ma, mb = (g2 * pa).sum(), (g2 * pb).sum()
            va, vb = (g2 * (pa - ma) ** 2).sum(), (g2 * (pb - mb) ** 2).sum()
            cov = (g2 * (pa - ma) * (pb - mb)).sum()
            vals.append((2 * ma * mb + c1) * (2 * cov + c2)
                        / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


@pytest.mark.parametrize("shape", [(8, 8), (16, 13), (28, 28)])
def test_ssim_matches_a_direct_window_by_window_computation(shape):
    rng = np.random.default_rng(0)
    a = rng.random(shape)
    b = np.clip(a + 0.3 * rng.standard_normal(shape), 0, 1)
    assert float(ssim(a, b)) == pytest.approx(_ssim_direct(a, b), abs=1e-10)
    batch = ssim(np.stack([a, b]), np.stack([b, b]))
    np.testing.assert_allclose(batch, [_ssim_direct(a, b), 1.0], atol=1e-10)


def test_ssim_properties():
    rng = np.random.default_rng(1)
    a = rng.random((12, 12))
    assert float(ssim(a, a)) == pytest.approx(1.0)
    assert float(ssim(a, 1 - a)) < 0          # inverted structure
    assert window_size(8, 8) == 7 and window_size(28, 28) == 11 and window_size(6, 9) == 5
    with pytest.raises(ValueError, match="one shape"):
        ssim(a, a[:5])


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(2)
    a = rng.integers(0, 5, (3, 6, 6)).astype(float)    # many ties
    b = a + rng.standard_normal((3, 6, 6))
    got = spearman(a, b)
    for i in range(3):
        assert got[i] == pytest.approx(stats.spearmanr(a[i].ravel(), b[i].ravel())[0],
                                       abs=1e-12)
    assert np.isnan(spearman(np.ones((4, 4)), a[0, :4, :4]))


# ---- the randomization test --------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(digits):
    """A small CNN trained on the digits train split (≈ 1 s), and 8 test inputs."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(16 * 16, 10))
    x, y = digits.train.x, digits.train.y
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(3):
        for s in range(0, len(x), 64):
            opt.zero_grad()
            F.cross_entropy(net(x[s:s + 64]), y[s:s + 64]).backward()
            opt.step()
    net.eval()
    xt, yt = digits.test.x[:8], digits.test.y[:8]
    with torch.no_grad():
        acc = float((net(digits.test.x).argmax(1) == digits.test.y).float().mean())
    assert acc > 0.8
    return net, xt, yt


def _edges(_model: nn.Module, x: torch.Tensor, _targets: torch.Tensor) -> torch.Tensor:
    """|vertical| + |horizontal| differences of the input: ignores the model."""
    dy = F.pad((x[:, :, 1:] - x[:, :, :-1]).abs(), (0, 0, 0, 1))
    dx = F.pad((x[..., 1:] - x[..., :-1]).abs(), (0, 1, 0, 0))
    return (dy + dx).sum(1)


def test_stages_are_the_parameter_layers_top_down(trained):
    net, x, y = trained
    assert parameter_layers(net, x) == ["0", "3", "6"]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    r = randomization_test(net, x, method="saliency", targets=y)
    assert r.stages == ("6", "3", "0")
    assert r.spearman.shape == r.ssim.shape == (3, 8)
    assert r.randomized.shape == (3, 8, 8, 8) and r.original.shape == (8, 8, 8)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), "the model itself must not change"
    # the numbers are the stated ones: Spearman and SSIM of |maps| scaled to [0, 1]
    top = np.abs(r.original).max(axis=(1, 2), keepdims=True)
    cur = np.abs(r.randomized[1]) / np.abs(r.randomized[1]).max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(r.ssim[1], ssim(np.abs(r.original) / top, cur), atol=1e-6)
    assert len(r.stage_lines()) == 3 and "down to 6" in r.stage_lines()[0]
    d = r.to_dict()
    assert d["absolute_values"] and d["passed"] == r.passed and len(d["spearman_mean"]) == 3


def test_an_edge_detector_fails(trained):
    net, x, y = trained
    r = randomization_test(net, x, method=_edges, targets=y)
    np.testing.assert_allclose(r.spearman, 1.0, atol=1e-12)
    np.testing.assert_allclose(r.ssim, 1.0, atol=1e-12)
    assert not r.passed and "FAILED" in r.verdict and "do not explain" in r.verdict


@pytest.mark.parametrize("method", ["saliency", "smoothgrad", "integrated_gradients"])
def test_gradient_methods_on_a_trained_net_pass(trained, method):
    net, x, y = trained
    r = randomization_test(net, x, method=method, targets=y, steps=16, n_noise=5, seed=3)
    assert r.passed and "passed" in r.verdict, r.verdict
    assert r.final_ssim < THRESHOLD
    if method == "integrated_gradients":
        # IG from a zero baseline is x · (path gradient): the digit's support (half the
        # pixels are 0) keeps the rank order, while the structure decorrelates
        assert r.final_spearman > THRESHOLD and "rank order still follows" in r.verdict
    else:
        assert r.rank_decorrelated and r.final_spearman < 0.4
    again = randomization_test(net, x, method=method, targets=y, steps=16, n_noise=5, seed=3)
    np.testing.assert_array_equal(again.spearman, r.spearman)   # seeded


@pytest.mark.parametrize(("spearman", "ssim", "outcome", "word"), [
    (0.1, 0.2, "pass", "passed —"), (0.9, 0.3, "partial", "passed in part"),
    (0.3, 0.9, "partial", "passed in part"), (0.9, 0.8, "fail", "FAILED")])
def test_the_verdict_is_pass_partial_or_fail_by_the_two_measures(spearman, ssim, outcome,
                                                                 word):
    from shenjing.analysis.attribute import RandomizationResult

    maps = np.zeros((2, 3, 3))
    result = RandomizationResult(
        method="m", stages=("fc2", "fc1"), spearman=np.array([[0.95, 0.95], [spearman] * 2]),
        ssim=np.array([[0.9, 0.9], [ssim] * 2]), original=maps, randomized=np.stack([maps] * 2))
    assert result.outcome == outcome
    assert result.passed is (outcome != "fail")
    assert word in result.verdict and result.to_dict()["outcome"] == outcome
