"""Deletion / insertion (Petsiuk et al. 2018) on a hand-built model where the right pixel
order is known, against a direct computation, and batched = one image at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from shenjing.analysis.attribute import attribute, deletion_insertion
from shenjing.errors import ShapeMismatchError, UsageError


def _evidence_model(h: int = 6, w: int = 6) -> tuple[nn.Sequential, np.ndarray]:
    """Class 0's logit = Σ w·x with w ≥ 0, class 1's = 2: p(class 0) = σ(Σ w·x − 2)."""
    weight = np.linspace(0.0, 1.0, h * w).reshape(h, w)[::-1].copy()
    lin = nn.Linear(h * w, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[0] = torch.from_numpy(weight.ravel()).float()
        lin.bias.copy_(torch.tensor([0.0, 2.0]))
    return nn.Sequential(nn.Flatten(), lin), weight


def _x(n: int = 5, h: int = 6, w: int = 6) -> torch.Tensor:
    return torch.rand(n, 1, h, w, generator=torch.Generator().manual_seed(0)) + 0.2


def test_the_right_order_beats_random_and_matches_a_direct_computation():
    net, weight = _evidence_model()
    x = _x()
    maps = attribute(net, x, method="integrated_gradients", target=0).maps  # = w·x exactly
    r = deletion_insertion(net, x, maps, targets=[0] * 5, fractions=12, seed=1)
    assert r.fractions.shape == (13,) and r.fractions[0] == 0 and r.fractions[-1] == 1
    assert (r.deletion_auc < r.deletion_auc_random).all()
    assert (r.insertion_auc > r.insertion_auc_random).all()
    # direct: sort contributions, zero the first k, the logistic of what remains
    contrib = (x.numpy()[:, 0] * weight).reshape(5, -1)
    for i in range(5):
        order = np.argsort(-maps[i].ravel(), kind="stable")
        for j, frac in enumerate(r.fractions):
            k = round(frac * 36)
            kept = contrib[i].copy()
            kept[order[:k]] = 0
            z = kept.sum() - 2.0
            assert r.deletion[i, j] == pytest.approx(1 / (1 + np.exp(-z)), abs=1e-6)
            z_in = contrib[i][order[:k]].sum() - 2.0
            assert r.insertion[i, j] == pytest.approx(1 / (1 + np.exp(-z_in)), abs=1e-6)
    auc = np.trapezoid(r.deletion, r.fractions, axis=1)
    np.testing.assert_allclose(r.deletion_auc, auc, atol=1e-12)
    assert "lower is better" in r.lines()[0] and r.to_dict()["baseline"] == "zeros"


def test_batched_equals_a_per_image_loop():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(108, 4)).eval()
    x = _x(n=4)
    maps = attribute(net, x, method="saliency").maps
    mean = x.mean(0)
    r = deletion_insertion(net, x, maps, targets=[0, 1, 2, 3], fractions=9, batch_size=7,
                           baseline="mean", data_mean=mean, seed=5)
    for i in range(4):
        one = deletion_insertion(net, x[i:i + 1], maps[i:i + 1], targets=[i], fractions=9,
                                 batch_size=1, baseline="mean", data_mean=mean, seed=5)
        np.testing.assert_allclose(one.deletion[0], r.deletion[i], atol=1e-6)
        np.testing.assert_allclose(one.insertion[0], r.insertion[i], atol=1e-6)
    assert r.baseline == "mean"
    again = deletion_insertion(net, x, maps, targets=[0, 1, 2, 3], fractions=9,
                               baseline="mean", data_mean=mean, seed=5)
    np.testing.assert_allclose(again.deletion_random, r.deletion_random, atol=1e-6)


def test_bad_input_fails_in_one_line():
    net, _ = _evidence_model()
    x = _x()
    maps = np.zeros((5, 6, 6))
    with pytest.raises(ShapeMismatchError, match="maps shaped"):
        deletion_insertion(net, x, maps[:, :5], targets=[0] * 5)
    with pytest.raises(ShapeMismatchError, match="4 targets for 5 inputs"):
        deletion_insertion(net, x, maps, targets=[0] * 4)
    with pytest.raises(UsageError, match="out of range"):
        deletion_insertion(net, x, maps, targets=[2] * 5)
    with pytest.raises(UsageError, match="fractions"):
        deletion_insertion(net, x, maps, targets=[0] * 5, fractions=0)
