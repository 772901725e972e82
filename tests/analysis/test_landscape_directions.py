"""Directions: Gaussian, filter-normalized with a recorded 1-D policy, lines, trajectory PCA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from shenjing.analysis.landscape import (
    ParamLayout,
    flat_params,
    line_direction,
    normalize_direction,
    plane,
    random_directions,
    trajectory_pca,
)
from shenjing.errors import CheckpointError, UsageError


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 5)).eval()


def test_directions_are_gaussian_not_uniform():
    net = nn.Linear(200, 100)
    d = random_directions(net, 1, seed=3, norm="none", ignore_1d=True)
    w = d.vectors[0][:20000]
    assert (w < 0).float().mean() == pytest.approx(0.5, abs=0.02)  # U[0,1) is all positive
    assert float(w.mean()) == pytest.approx(0.0, abs=0.02)
    assert float(w.std()) == pytest.approx(1.0, abs=0.02)
    kurt = float(((w - w.mean()) ** 4).mean() / w.var() ** 2)
    assert kurt == pytest.approx(3.0, abs=0.15)  # normal: 3, uniform: 1.8


def test_filter_normalization_matches_each_filter_norm():
    net = _cnn()
    d = random_directions(net, 2, seed=0, norm="filter")
    layout = ParamLayout.of(net)
    for vec in d.vectors:
        parts = layout.split(vec)
        for name, p in net.named_parameters():
            if p.ndim <= 1:
                assert torch.count_nonzero(parts[name]) == 0, name  # 1-D held at θ*
                continue
            dn = parts[name].reshape(p.shape[0], -1).norm(dim=1)
            wn = p.detach().reshape(p.shape[0], -1).norm(dim=1)
            torch.testing.assert_close(dn, wn, rtol=1e-5, atol=1e-7)
    assert d.info["norm"] == "filter" and d.info["ignore"] == "biasbn"
    assert "held at θ*" in d.info["one_d_policy"]


def test_include_1d_normalizes_each_1d_tensor_as_one_filter():
    net = _cnn()
    d = random_directions(net, 1, seed=0, norm="filter", ignore_1d=False)
    parts = ParamLayout.of(net).split(d.vectors[0])
    for name, p in net.named_parameters():
        if p.ndim == 1:
            assert float(parts[name].norm()) == pytest.approx(float(p.detach().norm()), rel=1e-5)
    assert d.info["ignore"] == "none"


def test_layer_and_none_normalization():
    w = torch.randn(6, 3, 3, 3)
    g = torch.randn(6, 3, 3, 3)
    assert float(normalize_direction(g, w, "layer").norm()) == pytest.approx(float(w.norm()),
                                                                              rel=1e-6)
    assert torch.equal(normalize_direction(g, w, "none"), g)
    with pytest.raises(UsageError, match="unknown normalization 'filters'"):
        normalize_direction(g, w, "filters")  # type: ignore[arg-type]


def test_directions_are_seeded_and_on_the_models_device():
    net = _cnn()
    a = random_directions(net, 2, seed=5)
    b = random_directions(net, 2, seed=5)
    c = random_directions(net, 2, seed=6)
    assert torch.equal(a.vectors, b.vectors) and not torch.equal(a.vectors, c.vectors)
    assert a.vectors.device == next(net.parameters()).device
    assert a.sha256() == b.sha256() != c.sha256()


def test_surface_is_scale_invariant_under_filter_normalization():
    """ReLU net: fc1·c, fc2/c computes the same function; filter-normalized surfaces agree."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    scaled = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    c = 7.5
    with torch.no_grad():
        scaled[0].weight.copy_(net[0].weight * c)
        scaled[0].bias.copy_(net[0].bias * c)
        scaled[2].weight.copy_(net[2].weight / c)
        scaled[2].bias.copy_(net[2].bias)
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    kw = dict(loss="cross_entropy", steps=7, range_=(-1.0, 1.0), seed=2, device="cpu",
              engine="loop", batch_size=64, dtype="float64")
    a = plane(net, x, y, **kw)
    b = plane(scaled, x, y, **kw)
    np.testing.assert_allclose(b.loss, a.loss, rtol=1e-5)
    # without normalization the two pictures differ: the trap the seed worried about
    a0 = plane(net, x, y, norm="none", **kw)
    b0 = plane(scaled, x, y, norm="none", **kw)
    assert np.max(np.abs(a0.loss - b0.loss) / a0.loss) > 1e-2


def test_line_direction_endpoints_and_architecture_mismatch():
    a, b = _cnn(), _cnn()
    with torch.no_grad():
        for p in b.parameters():
            p.add_(1.0)
    center, d = line_direction(a, b)
    assert torch.equal(center, flat_params(b))
    torch.testing.assert_close(center - d.vectors[0], flat_params(a))
    other = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 6 * 6, 5))
    with pytest.raises(CheckpointError, match=r"mismatched shapes: 0.weight \(8, 1, 3, 3\)"):
        line_direction(dict(other.named_parameters()), dict(b.named_parameters()),
                       layout=ParamLayout.of(b))
    with pytest.raises(CheckpointError,
                       match=r"missing parameters: 0.bias, 1.weight, 1.bias, 4.weight"):
        line_direction({"0.weight": torch.zeros(4, 1, 3, 3)}, b)


def test_trajectory_pca_matches_scikit_learn():
    from sklearn.decomposition import PCA

    net = nn.Linear(5, 4)
    layout = ParamLayout.of(net)
    gen = torch.Generator().manual_seed(0)
    states = []
    walk = torch.zeros(layout.size)
    for _ in range(6):
        walk = walk + torch.randn(layout.size, generator=gen) * torch.linspace(3, 0.1,
                                                                                layout.size)
        states.append(layout.split(walk.clone()))
    pca = trajectory_pca(states, list(range(6)), layout)
    flats = torch.stack([layout.flatten(s) for s in states]).double().numpy()
    offsets = flats - flats[-1]
    sk = PCA(n_components=2).fit(offsets)
    for i in range(2):
        cos = abs(float(np.dot(sk.components_[i], pca.directions.vectors[i].double().numpy())))
        assert cos == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(pca.explained, sk.explained_variance_ratio_, rtol=1e-6)
    np.testing.assert_allclose(np.abs(pca.coords), np.abs(offsets @ sk.components_.T),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pca.coords[-1], 0.0, atol=1e-12)  # θ* at the origin
    with pytest.raises(UsageError, match="at least 3 checkpoints"):
        trajectory_pca(states[:2], [0, 1], layout)
