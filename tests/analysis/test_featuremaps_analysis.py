"""Feature maps: exact activations of hand-set nets, scales, ordering, change, hooks, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn

from shenjing.analysis.featuremaps import (
    FeatureMaps,
    channel_order,
    compare_feature_maps,
    dead_channels,
    feature_maps,
    grid_shape,
    layer_output,
    normalise_maps,
    require_spatial,
    select_channels,
    top_channels,
)
from shenjing.errors import LayerNotFoundError, ShapeMismatchError, UsageError
from shenjing.hooks import count_hooks


def hand_net() -> nn.Module:
    """conv(1→3, 1×1) with weights 1, −1, 2 and biases 0, 0, −1, then ReLU, then linear."""
    conv = nn.Conv2d(1, 3, kernel_size=1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0, 2.0]).view(3, 1, 1, 1))
        conv.bias.copy_(torch.tensor([0.0, 0.0, -1.0]))
    fc = nn.Linear(3 * 2 * 2, 2)
    with torch.no_grad():
        fc.weight.fill_(1.0)
        fc.bias.zero_()
    return nn.Sequential(conv, nn.ReLU(), nn.Flatten(), fc).eval()


X = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # one 1×2×2 input


def test_conv_maps_equal_hand_computation():
    net = hand_net()
    fm = feature_maps(net, X, "0", epoch=3, index=7, label="seven")
    expected = np.stack([X[0].numpy(), -X[0].numpy(), 2 * X[0].numpy() - 1])
    np.testing.assert_allclose(fm.values, expected, rtol=0, atol=1e-6)
    assert fm.spatial and fm.n_channels == 3
    assert (fm.epoch, fm.index, fm.label) == (3, 7, "seven")
    np.testing.assert_array_equal(fm.input, X.numpy())
    post = feature_maps(net, X, "1")
    np.testing.assert_allclose(post.values, np.maximum(expected, 0), atol=1e-6)
    np.testing.assert_array_equal(post.dead(), [False, True, False])


def test_conv_output_is_kept_before_an_inplace_relu():
    """VGG16 uses ReLU(inplace=True): the conv output must be copied, not referenced."""
    net = hand_net()
    net[1] = nn.ReLU(inplace=True)
    fm = feature_maps(net, X, "0")
    assert fm.values.min() < 0
    np.testing.assert_allclose(fm.values[1], -X[0].numpy(), atol=1e-6)


def test_vector_layer_gives_vector_not_image():
    net = hand_net()
    fm = feature_maps(net, X, "3")
    assert not fm.spatial and fm.values.shape == (2,)
    relu = np.maximum(np.stack([X[0].numpy(), -X[0].numpy(), 2 * X[0].numpy() - 1]), 0)
    np.testing.assert_allclose(fm.values, [relu.sum(), relu.sum()], rtol=1e-6)
    with pytest.raises(ShapeMismatchError, match=r"vector of 2 features.*--view vector"):
        require_spatial(fm)


def test_no_hook_left_also_when_forward_raises():
    class Boom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 1)

        def forward(self, x):
            self.conv(x)
            raise RuntimeError("boom inside forward")

    net = Boom()
    with pytest.raises(RuntimeError, match="boom"):
        layer_output(net, X.unsqueeze(0), "conv")
    assert count_hooks(net) == 0
    good = hand_net()
    feature_maps(good, X, "0")
    assert count_hooks(good) == 0


def test_unknown_layer_suggests_names():
    with pytest.raises(LayerNotFoundError, match=r"no layer 'conv' in Sequential.*Layers: 0, 1"):
        feature_maps(hand_net(), X, "conv")


def test_layer_that_does_not_run_is_explained():
    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Linear(4, 2)
            self.spare = nn.Linear(4, 2)

        def forward(self, x):
            return self.used(x.flatten(1))

    with pytest.raises(UsageError, match="'spare' did not run"):
        layer_output(Unused(), X.unsqueeze(0), "spare")


def test_scalar_input_refused():
    with pytest.raises(ShapeMismatchError, match="one input sample"):
        feature_maps(hand_net(), torch.tensor(1.0), "0")


@pytest.mark.parametrize(("n", "shape"), [(32, (4, 8)), (64, (8, 8)), (10, (2, 5)),
                                          (7, (2, 4)), (512, (16, 32)), (1, (1, 1)),
                                          (3, (1, 3)), (13, (3, 5))])
def test_grid_shape(n, shape):
    rows, cols = grid_shape(n)
    assert (rows, cols) == shape
    assert rows * cols >= n


def test_normalise_scales():
    a = np.array([[[0.0, 1.0]], [[0.0, 4.0]]])  # 2 channels of 1×2, non-negative
    stack = np.stack([a, 2 * a])                  # 2 panels
    shared, lo, hi = normalise_maps(stack, "shared")
    np.testing.assert_allclose(hi, [[4, 4], [8, 8]])
    np.testing.assert_allclose(shared[0, 0, 0], [0, 0.25])
    per, lo, hi = normalise_maps(stack, "channel")
    np.testing.assert_allclose(per[:, :, 0, 1], 1.0)
    glob, lo, hi = normalise_maps(stack, "global")
    np.testing.assert_allclose(hi, 8.0)
    np.testing.assert_allclose(glob[0, 1, 0], [0, 0.5])
    signed, lo, hi = normalise_maps(np.array([[[-1.0, 3.0]]]), "shared")
    np.testing.assert_allclose([lo[0, 0], hi[0, 0]], [-3, 3])
    np.testing.assert_allclose(signed[0, 0], [1 / 3, 1.0])
    flat, _, _ = normalise_maps(np.ones((1, 2, 3)), "channel")
    np.testing.assert_array_equal(flat, 0.0)
    with pytest.raises(UsageError, match="scale 'log' is not one of shared, channel, global"):
        normalise_maps(stack, "log")  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, (2, 3, 4), elements=st.floats(-1e3, 1e3)),
       st.sampled_from(["shared", "channel", "global"]))
def test_normalised_maps_stay_in_unit_range_and_keep_order(x, scale):
    normed, lo, hi = normalise_maps(x, scale)
    assert normed.min() >= -1e-12 and normed.max() <= 1 + 1e-12
    # an affine, increasing map per channel: order of values within a channel is kept
    for p in range(2):
        for c in range(3):
            if hi[p, c] > lo[p, c]:
                np.testing.assert_allclose(normed[p, c] * (hi[p, c] - lo[p, c]) + lo[p, c],
                                           x[p, c], atol=1e-9 * max(1, np.abs(x).max()))


def test_ordering_top_k_and_dead():
    values = np.zeros((4, 2, 2))
    values[0] = 1.0
    values[1] = -1.0
    values[2, 0, 0] = 10.0   # mean 2.5, max 10
    values[3] = 3.0          # mean 3, max 3
    np.testing.assert_array_equal(channel_order(values, "layer"), [0, 1, 2, 3])
    np.testing.assert_array_equal(channel_order(values, "mean"), [3, 2, 0, 1])
    np.testing.assert_array_equal(channel_order(values, "max"), [2, 3, 0, 1])
    np.testing.assert_array_equal(top_channels(values, 2), [3, 2])
    np.testing.assert_array_equal(select_channels(values, top_k=10), [0, 1, 2, 3])
    np.testing.assert_array_equal(dead_channels(values), [False, True, False, False])
    with pytest.raises(UsageError, match="top-k must be at least 1, got 0"):
        top_channels(values, 0)
    with pytest.raises(UsageError, match="order 'size' is not one of layer, mean, max"):
        channel_order(values, "size")  # type: ignore[arg-type]


def test_compare_against_numpy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 3, 3)).astype(np.float32)
    b = a + rng.normal(scale=[[[0.1]], [[2.0]], [[0.0]], [[0.5]], [[1.0]]], size=(5, 3, 3))
    change = compare_feature_maps(FeatureMaps("c", a, epoch=0), FeatureMaps("c", b, epoch=5),
                                  top=3)
    assert change.epochs == (0, 5)
    assert change.mean_abs_change == pytest.approx(np.abs(b - a).mean(), rel=1e-9)
    assert change.relative_change == pytest.approx(np.abs(b - a).mean() / np.abs(a).mean())
    np.testing.assert_allclose(change.per_channel, np.abs(b - a).mean(axis=(1, 2)))
    assert change.top == (1, 4, 3)
    row = change.table()[0]
    assert row["channel"] == 1
    assert row["mean_before"] == pytest.approx(a[1].mean())
    assert row["mean_after"] == pytest.approx(b[1].mean())
    assert change.to_dict()["top_changed"][0]["channel"] == 1
    with pytest.raises(ShapeMismatchError, match="cannot compare maps shaped"):
        compare_feature_maps(FeatureMaps("c", a), FeatureMaps("c", a[:2]))


def test_runs_on_the_model_device_and_in_eval_mode():
    net = hand_net()
    out = layer_output(net, X.unsqueeze(0).double().float(), "2")
    assert out.device.type == "cpu" and out.shape == (1, 12)
    assert not out.requires_grad
