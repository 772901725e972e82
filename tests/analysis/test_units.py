"""Streaming top-k against an independent full computation, ties, hooks, receptive fields."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from shenjing.analysis.units import (
    load_top_units,
    receptive_field,
    top_activations,
)
from shenjing.errors import LayerNotFoundError, UsageError
from shenjing.hooks import count_hooks
from shenjing.models.zoo import SimpleCNN


def _full(model, x, layer, reduce):
    """Independent reference: every activation at once, reduced, ranked by lexsort
    (value descending, index ascending)."""
    model.eval()
    got = {}
    if layer == "output":
        with torch.no_grad():
            a = model(x)
    else:
        h = model.get_submodule(layer).register_forward_hook(
            lambda m, i, o: got.setdefault("a", o.detach().clone()))
        with torch.no_grad():
            model(x)
        h.remove()
        a = got["a"]
    a = a.double().numpy()
    if a.ndim == 4:
        flat = a.reshape(a.shape[0], a.shape[1], -1)
        vals = flat.mean(-1) if reduce == "mean" else flat.max(-1)
        where = flat.argmax(-1)
    else:
        vals, where = a, None
    return vals, where


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return SimpleCNN(1, 8, 8, 10), torch.randn(37, 1, 8, 8), torch.randint(0, 10, (37,))


@pytest.mark.parametrize("layer", ["conv1", "pool2", "fc1", "output"])
@pytest.mark.parametrize("reduce", ["mean", "max"])
def test_streaming_topk_equals_full_computation(cnn, layer, reduce):
    model, x, y = cnn
    top = top_activations(model, (x, y), layer, k=5, reduce=reduce, batch_size=8)  # 8 ∤ 37
    vals, where = _full(model, x, layer, reduce)
    assert top.n_samples == 37 and top.values.shape == (vals.shape[1], 5)
    for u in range(vals.shape[1]):
        order = np.lexsort((np.arange(37), -vals[:, u]))[:5]
        np.testing.assert_array_equal(top.indices[u], order)
        np.testing.assert_allclose(top.values[u], vals[order, u], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(top.labels[u], y.numpy()[order])
        if where is not None:
            flat = np.ravel_multi_index(tuple(top.positions[u].T), top.map_shape)
            np.testing.assert_array_equal(flat, where[order, u])
    assert count_hooks(model) == 0
    assert top.purity().max() <= 5 and top.purity().min() >= 1


def test_ties_rank_the_lower_sample_first_whatever_the_batch_size():
    net = nn.Sequential(nn.Linear(1, 1))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.zero_()
    x = torch.tensor([[1.0], [3.0], [3.0], [1.0], [3.0], [2.0]])
    for bs in (1, 2, 4, 6):
        top = top_activations(net, x, "0", k=4, batch_size=bs)
        assert top.indices[0].tolist() == [1, 2, 4, 5]
        assert top.labels is None


def test_units_subset_and_range_check(cnn):
    model, x, _ = cnn
    top = top_activations(model, x, "conv2", k=2, units=[3, 5])
    assert top.units.tolist() == [3, 5] and top.values.shape == (2, 2)
    full = top_activations(model, x, "conv2", k=2)
    np.testing.assert_array_equal(top.values, full.values[[3, 5]])
    with pytest.raises(UsageError, match=r"--channels 64 is out of range: layer 'conv2' has 64"):
        top_activations(model, x, "conv2", units=[64])
    with pytest.raises(UsageError, match="--top"):
        top_activations(model, x, "conv2", k=0)
    with pytest.raises(LayerNotFoundError, match="no layer 'conv3'"):
        top_activations(model, x, "conv3")


def test_k_larger_than_data_keeps_all(cnn):
    model, x, _ = cnn
    assert top_activations(model, x[:3], "fc2", k=9).k == 3


def test_hooks_removed_when_forward_raises():

    class Boom(nn.Module):
        def forward(self, t):
            raise RuntimeError("boom")

    net = nn.Sequential(nn.Linear(64, 4), Boom(), nn.Linear(4, 2))
    with pytest.raises(RuntimeError, match="boom"):
        top_activations(net, torch.randn(5, 64), "2")
    assert count_hooks(net) == 0
    # the layer before the failing one: the forward stops there and nothing fails
    assert top_activations(net, torch.randn(5, 64), "0", k=2).values.shape == (4, 2)
    assert count_hooks(net) == 0


def test_save_and_load_round_trip(cnn, tmp_path):
    model, x, y = cnn
    top = top_activations(model, (x, y), "conv2", k=3)
    top.save(tmp_path / "u")
    back = load_top_units(tmp_path / "u")
    np.testing.assert_array_equal(back.values, top.values)
    np.testing.assert_array_equal(back.positions, top.positions)
    assert back.map_shape == top.map_shape and back.to_dict() == top.to_dict()


@pytest.mark.parametrize(("layer", "size", "stride"), [
    ("conv1", 3, 1), ("pool1", 4, 2), ("conv2", 8, 2), ("pool2", 10, 4)])
def test_receptive_field_of_simple_cnn_is_the_analytic_one(layer, size, stride):
    torch.manual_seed(0)
    for hw in (8, 28):  # on 8×8 digits pool2's field (10) is larger than the image
        rf = receptive_field(SimpleCNN(1, hw, hw, 10), layer, (1, hw, hw))
        assert rf.size == (size, size) and rf.stride == (stride, stride)
        assert not rf.clipped


def test_receptive_field_of_strided_convs():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2))
    a = receptive_field(net, "0", (1, 33, 33))
    b = receptive_field(net, "2", (1, 33, 33))
    assert (a.size, a.stride, a.offset) == ((3, 3), (2, 2), (0, 0))
    assert (b.size, b.stride, b.offset) == ((7, 7), (4, 4), (0, 0))
    assert count_hooks(net) == 0


def test_crop_is_clipped_at_the_border_and_keeps_one_size():
    torch.manual_seed(0)
    rf = receptive_field(SimpleCNN(1, 8, 8, 10), "conv2", (1, 8, 8))
    x = np.arange(64, dtype=np.float32).reshape(1, 8, 8)
    c = rf.crop(x, (0, 0))  # starts at pixel -3: three rows and columns outside
    assert c.shape == (1, 8, 8)
    assert np.isnan(c[0, :3]).all() and np.isnan(c[0, :, :3]).all()
    np.testing.assert_array_equal(c[0, 3:, 3:], x[0, :5, :5])
    assert rf.clipped_box((0, 0), (8, 8)) == ((0, 5), (0, 5))


def test_batch_size_never_changes_the_result_over_many_batches(cnn):
    model, x, y = cnn
    ref = top_activations(model, (x, y), "conv2", k=4, batch_size=37)
    for bs in (1, 7, 13):  # many batches, none dividing 37
        got = top_activations(model, (x, y), "conv2", k=4, batch_size=bs)
        np.testing.assert_array_equal(got.indices, ref.indices)
        np.testing.assert_allclose(got.values, ref.values, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got.positions, ref.positions)
        np.testing.assert_array_equal(got.labels, ref.labels)


def test_nan_ranks_last():
    net = nn.Sequential(nn.Flatten())  # unit j = x_j exactly
    x = torch.tensor([[1.0, 0.0], [3.0, float("nan")], [3.0, 2.0], [1.0, 2.0], [3.0, 1.0]])
    for bs in (1, 2, 5):
        top = top_activations(net, x, "0", k=5, batch_size=bs)
        assert top.indices[0].tolist() == [1, 2, 4, 0, 3]
        assert top.indices[1].tolist() == [2, 3, 4, 0, 1]
        assert np.isnan(top.values[1, -1])


def test_token_layers_use_the_last_axis_as_units():
    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(3, 4)

        def forward(self, x):
            return self.proj(x).mean(1)

    net = Tokens()
    x = torch.randn(11, 5, 3, generator=torch.Generator().manual_seed(4))
    top = top_activations(net, x, "proj", k=3, reduce="max", batch_size=4)
    with torch.no_grad():
        a = net.proj(x).amax(1)  # (N, 4)
    want_v, want_i = torch.topk(a.T, 3, dim=1)
    np.testing.assert_array_equal(top.indices, want_i.numpy())
    np.testing.assert_allclose(top.values, want_v.numpy(), rtol=1e-6)
    assert top.unit_axis == 2 and top.map_shape == (5,) and top.positions.shape == (4, 3, 1)


def test_the_forward_stops_after_the_layer(cnn):
    model, x, _ = cnn
    calls: list[int] = []
    handle = model.fc1.register_forward_hook(lambda *a: calls.append(1))
    try:
        top_activations(model, x, "conv2", k=2, batch_size=5)  # 8 batches
    finally:
        handle.remove()
    assert len(calls) <= 1  # at most the key check's one dry run


def test_bad_inputs_say_what_to_do(cnn):
    model, x, _ = cnn
    with pytest.raises(LayerNotFoundError, match="conv3.*conv2"):
        top_activations(model, x, "conv3")
    with pytest.raises(UsageError, match="--top 0"):
        top_activations(model, x, "conv1", k=0)
    with pytest.raises(UsageError, match="--reduce"):
        top_activations(model, x, "conv1", reduce="median")
    assert count_hooks(model) == 0


def test_receptive_field_offsets_and_a_strided_padded_conv():
    torch.manual_seed(0)
    cnn = SimpleCNN(1, 8, 8, 10)
    assert receptive_field(cnn, "conv1", (1, 8, 8)).offset == (-1, -1)
    assert receptive_field(cnn, "conv2", (1, 8, 8)).offset == (-3, -3)
    assert receptive_field(cnn, "pool2", (1, 8, 8)).offset == (-3, -3)
    net = nn.Sequential(nn.Conv2d(1, 2, 5, stride=3, padding=2), nn.ReLU(),
                        nn.Conv2d(2, 2, (3, 1), stride=(2, 1)))
    rf = receptive_field(net, "2", (1, 20, 20))  # 5 + 2·3 = 11, stride 6; 5, 3 on axis 1
    assert (rf.size, rf.stride, rf.offset) == ((11, 5), (6, 3), (-2, -2))
