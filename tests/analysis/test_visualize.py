"""Feature visualization (shenjing.analysis.visualize) against cases whose answer is known:
a linear unit on [0, 1] inputs (optimum: 1 where w > 0, 0 where w < 0), 90° rotation vs
torch.rot90, the Fourier image's shape and spectrum, determinism, hooks removed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from shenjing.analysis.visualize import (
    FourierImage,
    affine_transform,
    colour_matrix,
    frequency_scale,
    load_feature_visualization,
    visualize_units,
)
from shenjing.errors import UsageError
from shenjing.hooks import count_hooks


def linear_units(seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """``Flatten → Linear(16, 2)``: unit k computes w_k · x, on 1×4×4 inputs."""
    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    w = torch.randn(2, 16, generator=gen)
    with torch.no_grad():
        net[1].weight.copy_(w)
        net[1].bias.zero_()
    return net, w


def test_linear_unit_reaches_its_known_optimum():
    """Without transforms the optimum of w·x over x in [0, 1] is x = [w > 0]; 300 steps get
    every pixel with |w| > 0.3 within 0.1 of it, and the activation within 5 % of the
    optimum Σ max(w, 0), above every one of 500 random real inputs in [0, 1]."""
    net, w = linear_units()
    data = torch.rand(500, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    fv = visualize_units(net, "1", [0, 1], input_shape=(1, 4, 4), steps=300, lr=0.1,
                         transforms=None, data=data)
    optimum = (w > 0).float()
    clear = w.abs() > 0.3
    got = torch.as_tensor(fv.pixels).reshape(2, 16)
    assert (got - optimum)[clear].abs().max() < 0.1
    best = torch.clamp(w, min=0).sum(1).numpy()
    np.testing.assert_allclose(fv.reached, best, rtol=0.05)
    assert (fv.reached >= fv.best_real).all()
    # the best real input, computed here independently
    real = (data.reshape(500, 16) @ w.T).numpy()
    np.testing.assert_allclose(fv.best_real, real.max(0), rtol=1e-5)
    np.testing.assert_array_equal(fv.best_index, real.argmax(0))
    assert (fv.reached > fv.noise + 1.0).all()
    assert np.isfinite(fv.ratio()).all() and (fv.ratio() >= 1).all()


def test_pixel_range_is_the_datas():
    """Images live in [black, white] of the data's scaling: here (-0.5, 2.0)."""
    net, _ = linear_units()
    fv = visualize_units(net, "output", [0], input_shape=(1, 4, 4), steps=5,
                         pixel_range=(-0.5, 2.0))
    assert fv.images.min() >= -0.5 and fv.images.max() <= 2.0
    np.testing.assert_allclose(fv.images, -0.5 + 2.5 * fv.pixels, atol=1e-6)


@pytest.mark.parametrize("mode,tol", [("nearest", 0.0), ("bilinear", 1e-5)])
def test_rotation_by_90_matches_rot90(mode, tol):
    x = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    turned = affine_transform(x, angle=90.0, mode=mode)
    assert (turned - torch.rot90(x, 1, dims=(-2, -1))).abs().max() <= tol
    back = affine_transform(x, angle=-90.0, mode=mode)
    assert (back - torch.rot90(x, -1, dims=(-2, -1))).abs().max() <= tol


def test_shift_moves_by_whole_pixels():
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 1.0
    moved = affine_transform(x, shift=(1.0, -2.0), mode="nearest")  # right 1, up 2
    assert moved[0, 0, 0, 3] == 1.0 and moved.sum() == 1.0


def test_fourier_image_is_real_with_the_right_shape():
    img = FourierImage(3, (1, 7, 9), generator=torch.Generator().manual_seed(0))
    raw = img.raw()
    assert raw.shape == (3, 1, 7, 9) and raw.dtype == torch.float32
    out = img()
    assert ((out > 0) & (out < 1)).all()
    scale = frequency_scale(7, 9)
    assert scale.shape == (7, 5)
    assert scale[0, 0] == scale.max() and scale[0, 1] > scale[0, 4]  # 1/f: low frequencies big


def test_colour_matrix_is_the_square_root_of_the_covariance():
    gen = torch.Generator().manual_seed(0)
    mix = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.5, 0.5, 0.7]])
    x = torch.einsum("dc,nchw->ndhw", mix, torch.randn(200, 3, 4, 4, generator=gen))
    root = colour_matrix(x)
    cov = np.cov(x.movedim(1, 0).reshape(3, -1).numpy().astype(np.float64))
    scaled = root @ root.T
    np.testing.assert_allclose(scaled / scaled[0, 0], cov / cov[0, 0], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(root, root.T, atol=1e-12)


def test_deterministic_for_a_seed_and_different_across_seeds(tmp_path):
    conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 3))
    kw = dict(input_shape=(1, 8, 8), steps=20)
    a = visualize_units(conv, "2", [0, 2], seed=3, **kw)
    b = visualize_units(conv, "2", [0, 2], seed=3, **kw)
    c = visualize_units(conv, "2", [0, 2], seed=4, **kw)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.trace, b.trace)
    assert not np.allclose(a.images, c.images)
    assert (a.reached > a.noise).all()
    back = load_feature_visualization(a.save(tmp_path, "v")[0])
    np.testing.assert_array_equal(back.images, a.images)
    assert back.per_unit() == a.per_unit() and back.transforms == a.transforms


def test_model_left_as_it_was():
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Dropout(0.5), nn.Flatten(), nn.Linear(72, 3))
    before = [p.detach().clone() for p in conv.parameters()]
    conv.train()
    visualize_units(conv, "0", [1], input_shape=(1, 8, 8), steps=3)
    assert conv.training and count_hooks(conv) == 0
    assert all(p.grad is None for p in conv.parameters())
    assert all(torch.equal(p, q) for p, q in zip(conv.parameters(), before, strict=True))


class Breaks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls > 1:  # the probe that finds the layer passes; the optimisation fails
            raise RuntimeError("boom")
        return self.fc(x)


def test_hooks_removed_when_forward_raises():
    net = Breaks()
    with pytest.raises(RuntimeError, match="boom"):
        visualize_units(net, "fc", [0], input_shape=(4,), steps=2)
    assert count_hooks(net) == 0


def test_bad_units_and_options_are_one_line_errors():
    net, _ = linear_units()
    with pytest.raises(UsageError, match=r"--channels 5 is out of range.*2 units"):
        visualize_units(net, "1", [5], input_shape=(1, 4, 4), steps=2)
    with pytest.raises(UsageError, match="--steps"):
        visualize_units(net, "1", [0], input_shape=(1, 4, 4), steps=0)
    with pytest.raises(UsageError, match="--lr"):
        visualize_units(net, "1", [0], input_shape=(1, 4, 4), lr=0.0)


def test_rgb_inputs_are_decorrelated_by_the_datas_covariance():
    gen = torch.Generator().manual_seed(0)
    grey = torch.rand(50, 1, 6, 6, generator=gen)
    data = torch.cat([grey, 0.9 * grey + 0.1, grey * 0.8], dim=1)  # strongly correlated
    net = nn.Sequential(nn.Conv2d(3, 2, 3))
    fv = visualize_units(net, "0", [0, 1], input_shape=(3, 6, 6), steps=3, colour_from=data)
    np.testing.assert_allclose(fv.colour, colour_matrix(data))
    assert "colours decorrelated" in fv.parametrisation
    plain = visualize_units(nn.Sequential(nn.Conv2d(1, 2, 3)), "0", [0],
                            input_shape=(1, 6, 6), steps=1)
    assert plain.colour is None and "no colour decorrelation" in plain.parametrisation
