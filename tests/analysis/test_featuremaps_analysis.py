"""Feature maps: exact activations of hand-set nets, scales, ordering, change, hooks, errors;
the views that keep the axes of sequences, tokens and 1-D signals; when "off" is counted."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn

from shenjing.analysis.maps import (
    FeatureMaps,
    as_vector,
    channel_order,
    compare_feature_maps,
    dead_channels,
    feature_maps,
    grid_shape,
    layer_output,
    normalise_maps,
    off_rule_of,
    output_view,
    require_spatial,
    select_channels,
    top_channels,
)
from shenjing.errors import LayerNotFoundError, NotApplicableError, ShapeMismatchError, UsageError
from shenjing.hooks import count_hooks

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: user_models
import user_models


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


# ---- views: sequences, tokens and 1-D signals keep their axes (issue 12, item 12) ------
DIGIT = torch.linspace(-1, 1, 64).reshape(1, 8, 8)


def test_lstm_sequence_output_keeps_time_and_hidden_axes():
    model = user_models.build("lstm")
    fm = feature_maps(model, DIGIT, "lstm")
    assert fm.view == "sequence" and fm.axes == ("time step", "hidden unit")
    assert fm.key == "lstm.0" and fm.module_type == "LSTM"
    with torch.no_grad():
        seq, (_, c) = model.lstm(DIGIT.reshape(1, 8, 8))
    np.testing.assert_allclose(fm.values, seq[0].numpy(), atol=1e-6)
    assert fm.values.shape == (8, 24) and fm.n_channels == 24 and fm.unit_axis == 1
    # the keys `shenjing layers` prints are accepted (issue 12, item 8)
    assert feature_maps(model, DIGIT, "lstm.0").key == "lstm.0"
    state = feature_maps(model, DIGIT, "lstm.1.1")
    assert state.view == "vector" and state.axes == ("hidden unit",)
    np.testing.assert_allclose(state.values, c[0, 0].numpy(), atol=1e-6)
    # tanh-bounded LSTM outputs: a zero is a value, not "off"
    assert fm.off_rule is None and "LSTM output" in fm.off_reason()


def test_lstm_not_batch_first_moves_the_batch_dimension_first():
    class TimeMajor(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(4, 6)  # batch_first=False: (time, batch, hidden)

        def forward(self, x):
            return self.lstm(x.transpose(0, 1))[0][-1]

    torch.manual_seed(0)
    net = TimeMajor().eval()
    x = torch.randn(5, 4)
    fm = feature_maps(net, x, "lstm.0")
    with torch.no_grad():
        expected = net.lstm(x[:, None, :])[0][:, 0]
    assert fm.view == "sequence" and fm.values.shape == (5, 6)
    np.testing.assert_allclose(fm.values, expected.numpy(), atol=1e-6)


def test_transformer_tokens_keep_token_and_feature_axes():
    model = user_models.build("vit")
    for layer in ("encoder.layers.0", "encoder.layers.0.self_attn", "encoder.layers.0.norm1",
                  "encoder.layers.0.linear1", "to_tokens"):
        fm = feature_maps(model, DIGIT, layer)
        assert fm.view == "tokens", layer
        assert fm.axes == ("token", "feature")
        assert fm.off_rule is None
    assert feature_maps(model, DIGIT, "encoder.layers.0").values.shape == (17, 16)
    assert feature_maps(model, DIGIT, "encoder.layers.0.self_attn").key == \
        "encoder.layers.0.self_attn.0"
    assert feature_maps(model, DIGIT, "norm").view == "vector"  # LayerNorm of the CLS token


def test_conv1d_outputs_are_signals_and_relu_after_them_counts_off():
    model = user_models.build("conv1d")
    conv = feature_maps(model, DIGIT, "features.0")
    relu = feature_maps(model, DIGIT, "features.1")
    assert conv.view == relu.view == "signal"
    assert conv.axes == ("channel", "position") and conv.values.shape == (8, 64)
    with torch.no_grad():
        expected = model.features[0](DIGIT.reshape(1, 1, 64))[0]
    np.testing.assert_allclose(conv.values, expected.numpy(), atol=1e-6)
    assert conv.off_rule is None and "Conv1d output" in conv.off_reason()
    assert relu.off_rule == "output of ReLU" and relu.off_reason() is None
    np.testing.assert_array_equal(relu.dead(), (expected.numpy() <= 0).all(axis=1))
    assert feature_maps(model, DIGIT, "features").view == "signal"  # container: its last


@pytest.mark.parametrize(("module", "counted"), [
    (nn.ReLU(), True), (nn.ReLU6(), True), (nn.Hardtanh(0.0, 1.0), True),
    (nn.Threshold(0.0, 0.0), True), (nn.Hardtanh(), False), (nn.LeakyReLU(), False),
    (nn.Tanh(), False), (nn.GELU(), False), (nn.LayerNorm(4), False), (nn.Linear(4, 4), False),
    (nn.ELU(), False), (nn.Sigmoid(), False)])
def test_off_is_counted_only_after_a_hard_zero(module, counted):
    out = module(torch.randn(3, 4, requires_grad=True))
    assert (off_rule_of(module, out) is not None) is counted


def test_off_seen_through_a_block_that_ends_in_relu_and_through_pooling():
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 3, 3, padding=1)

        def forward(self, x):
            return F.relu(self.conv(x) + x)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = Block()
            self.pool = nn.MaxPool2d(2)
            self.drop = nn.Dropout()
            self.tanh = nn.Tanh()

        def forward(self, x):
            return self.tanh(self.drop(self.pool(self.block(x))).flatten(1))

    net = Net().eval()
    x = torch.randn(1, 6, 6)
    assert feature_maps(net, x, "block").off_rule == "output of Block, which ends in relu"
    assert feature_maps(net, x, "pool").off_rule is not None
    assert feature_maps(net, x, "drop").off_rule is not None
    assert feature_maps(net, x, "block.conv").off_rule is None
    assert feature_maps(net, x, "tanh").off_rule is None


def test_shared_block_calls_are_selected_by_key():
    model = user_models.build("shared")
    x = torch.randn(64)
    first = feature_maps(model, x, "block#0")
    second = feature_maps(model, x, "block#1")
    assert feature_maps(model, x, "block").key == "block#0"
    with torch.no_grad():
        h = F.relu(model.inp(x[None]))
        h1 = model.block(h)
        h2 = model.block(h1)
    np.testing.assert_allclose(first.values, h1[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(second.values, h2[0].numpy(), atol=1e-6)
    assert feature_maps(model, x, "block.1#1").off_rule == "output of ReLU"
    with pytest.raises(LayerNotFoundError, match=r"'block' \(Sequential\) gives the outputs "
                                                 r"block#0, block#1"):
        feature_maps(model, x, "block#2")
    with pytest.raises(LayerNotFoundError, match=r"no layer 'blok#1'.*Did you mean 'block'"):
        feature_maps(model, x, "blok#1")
    assert count_hooks(model) == 0


def test_layer_without_float_output_does_not_apply():
    class Argmax(nn.Module):
        def forward(self, x):
            return x.flatten(1).argmax(1)

    net = nn.Sequential(nn.Linear(4, 3), Argmax())
    with pytest.raises(NotApplicableError, match="returns no floating-point tensor"):
        feature_maps(net, torch.randn(4), "1")


def test_output_view_rules_and_vector_fallbacks():
    assert output_view(nn.Conv2d(1, 1, 1), "", 3) == ("spatial", ("channel", "height", "width"))
    assert output_view(nn.GELU(), "", 2, "tokens")[0] == "tokens"
    assert output_view(nn.ReLU(), "", 2, "signal")[0] == "signal"
    assert output_view(nn.Linear(2, 2), "", 2, None)[0] == "tokens"
    assert output_view(nn.LSTM(2, 2), ".1.0", 2) == ("sequence", ("layer", "hidden unit"))
    assert output_view(nn.MultiheadAttention(4, 1), ".1", 2)[1] == ("query token", "key token")
    net = nn.Sequential(nn.Conv3d(1, 2, 1))
    fm = feature_maps(net, torch.randn(1, 2, 3, 3), "0")
    assert fm.view == "vector" and fm.flattened_from == (2, 2, 3, 3)
    seq = feature_maps(user_models.build("lstm"), DIGIT, "lstm")
    flat = as_vector(seq)
    assert flat.view == "vector" and flat.values.shape == (192,)
    assert flat.flattened_from == (8, 24)


def test_change_of_a_sequence_is_per_hidden_unit_and_per_time_step():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(5, 4))
    b = a.copy()
    b[:, 2] += 1.0       # hidden unit 2 moves at every step
    b[4, :] += 0.5       # and the last step moves for every unit
    before = FeatureMaps("lstm", a, epoch=0, view="sequence")
    after = FeatureMaps("lstm", b, epoch=3, view="sequence")
    change = compare_feature_maps(before, after, top=2)
    np.testing.assert_allclose(change.per_channel, np.abs(b - a).mean(axis=0))
    np.testing.assert_allclose(change.per_position, np.abs(b - a).mean(axis=1))
    assert change.top[0] == 2 and change.top_positions[0] == 4
    record = change.to_dict()
    assert record["unit"] == "hidden unit" and record["position"] == "time step"
    assert record["top_changed_positions"][0]["position"] == 4
    np.testing.assert_allclose(change.mean_before, a.mean(axis=0))


def test_input_that_does_not_fit_the_model_is_explained():
    with pytest.raises(ShapeMismatchError, match=r"does not fit Sequential: its first weighted "
                                                 r"layer '0' \(Conv2d\) takes 1 channels"):
        feature_maps(hand_net(), torch.zeros(3, 2, 2), "0")


def test_a_vanished_signal_gets_no_astronomical_relative_change():
    """A deep untrained net's layer 58 outputs ~1e-28: the change is stated, the relative
    change is not (it would read 2e29 %)."""
    from torch import nn

    from shenjing.analysis.maps import compare_feature_maps, feature_maps

    net = nn.Sequential(nn.Linear(4, 3))
    x = torch.ones(4)
    with torch.no_grad():
        net[0].weight.fill_(1e-30)
        net[0].bias.zero_()
    before = feature_maps(net, x, "0", epoch=0)
    with torch.no_grad():
        net[0].weight.fill_(0.25)
    after = feature_maps(net, x, "0", epoch=1)
    change = compare_feature_maps(before, after)
    assert change.mean_abs_change == pytest.approx(1.0)
    assert change.relative_text() == ("no relative change: the activations at epoch 0 are "
                                      "nearly zero (mean |activation| 4e-30)")
    assert change.to_dict()["relative_change"] > 1e29  # finite: kept, the text explains
    still = compare_feature_maps(after, after)
    assert still.relative_text() == "0% of mean |activation| at epoch 1"
