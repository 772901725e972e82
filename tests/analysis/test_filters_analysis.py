"""Filters: weights read from state dicts, RGB kernels, capped kernel grids, unit images,
Conv1d kernels as signals, and the layers filters do not apply to."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from shenjing.analysis.filters import (
    Filters,
    conv_layers,
    filter_change,
    filters_to_follow,
    first_conv_layer,
    kernel_grid,
    kernel_signals,
    layer_filters,
    normalise_filters,
    not_applicable_reason,
    reference_change,
    rgb_filters,
    unit_images,
)
from shenjing.errors import (
    LayerNotFoundError,
    NotApplicableError,
    ShapeMismatchError,
    UsageError,
)
from shenjing.models import build_model


def test_layer_filters_reads_state_dict_and_finds_first_conv():
    state = build_model("simple_cnn", (1, 8, 8)).state_dict()
    assert conv_layers(state) == ["conv1", "conv2"]
    assert first_conv_layer(state) == "conv1"
    f = layer_filters(state, "conv1", epoch=2)
    assert f.kind == "conv" and f.weight.shape == (32, 1, 3, 3) and f.epoch == 2
    np.testing.assert_array_equal(f.weight, state["conv1.weight"].numpy())
    assert layer_filters(state, "fc1").kind == "linear"


def test_missing_layer_and_bad_shapes():
    state = {"features.0.weight": torch.zeros(4, 3, 3, 3), "bn.weight": torch.ones(4)}
    with pytest.raises(LayerNotFoundError, match=r"no weights for layer 'features\.1'.*"
                                                 r"Did you mean 'features\.0'"):
        layer_filters(state, "features.1")
    with pytest.raises(NotApplicableError, match=r"filters: 'bn' is a layer with a per-channel "
                                                 r"weight shaped \(4,\).*Conv1d/Conv2d kernels"):
        layer_filters(state, "bn")
    with pytest.raises(UsageError, match="no conv layer.*--layer fc1"):
        first_conv_layer({"fc1.weight": torch.zeros(3, 4)})


def test_normalise_filters_symmetric_scales():
    w = np.array([[[[2.0, -1.0]]], [[[0.5, 0.0]]]])  # (2, 1, 1, 2)
    shared = normalise_filters(w, "shared")
    np.testing.assert_allclose(shared.ravel(), [1.0, 0.25, 0.625, 0.5])
    per = normalise_filters(w, "filter")
    np.testing.assert_allclose(per.ravel(), [1.0, 0.25, 1.0, 0.5])
    with pytest.raises(UsageError, match="filter scale 'x'"):
        normalise_filters(w, "x")  # type: ignore[arg-type]


def test_rgb_filters_put_input_channels_last():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3, 3, 3))
    rgb = rgb_filters(w, "filter")
    assert rgb.shape == (4, 3, 3, 3)
    bound = np.abs(w[2]).max()
    np.testing.assert_allclose(rgb[2, 1, 0, :], 0.5 + 0.5 * w[2, :, 1, 0] / bound)
    with pytest.raises(ShapeMismatchError, match=r"RGB filters need weights shaped \(out, 3"):
        rgb_filters(w[:, :1], "filter")


def test_kernel_grid_caps_by_norm_and_keeps_index_order():
    w = np.zeros((5, 4, 3, 3))
    w[3] = 1.0
    w[1, :, 0, 0] = 0.5
    w[:, 2] *= 3
    grid = kernel_grid(Filters("conv2", w), max_out=2, max_in=2)
    assert grid.outs == (1, 3)
    assert 2 in grid.ins and len(grid.ins) == 2
    assert grid.bound == pytest.approx(3.0)
    r, c = grid.outs.index(3), grid.ins.index(2)
    np.testing.assert_allclose(grid.images[r, c], 1.0)
    assert grid.images.shape == (2, 2, 3, 3) and grid.shape == (5, 4, 3, 3)
    first = kernel_grid(Filters("conv2", w), max_out=3, max_in=1, by="index")
    assert first.outs == (0, 1, 2) and first.ins == (0,)
    with pytest.raises(ShapeMismatchError, match="is linear; a kernel grid needs a conv"):
        kernel_grid(Filters("fc", np.zeros((2, 3))))


def test_unit_images_are_rows_reshaped_to_the_input():
    w = np.arange(3 * 64, dtype=np.float64).reshape(3, 64) - 90
    imgs = unit_images(Filters("fc1", w), (1, 8, 8), scale="filter")
    assert imgs.shape == (3, 8, 8)
    bound = np.abs(w[1]).max()
    np.testing.assert_allclose(imgs[1], 0.5 + 0.5 * w[1].reshape(8, 8) / bound)
    two = unit_images(Filters("fc1", w), (8, 8), max_units=2)
    assert two.shape == (2, 8, 8)
    rgb = unit_images(Filters("fc1", np.ones((2, 48))), (3, 4, 4))
    assert rgb.shape == (2, 4, 4, 3)
    with pytest.raises(NotApplicableError, match=r"'fc2' takes 64 features, which is not the "
                                                 r"whole image input \(1, 28, 28\)"):
        unit_images(Filters("fc2", w), (1, 28, 28))
    with pytest.raises(ShapeMismatchError, match="is a conv layer"):
        unit_images(Filters("c", np.zeros((2, 1, 3, 3))), (1, 8, 8))


def test_filter_change_against_numpy():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(6, 2, 3, 3))
    b = a.copy()
    b[4] *= 3.0
    b[1] += 0.1
    out = filter_change(Filters("c", a, 0), Filters("c", b, 5), top=2)
    per = np.linalg.norm((b - a).reshape(6, -1), axis=1) / np.linalg.norm(a.reshape(6, -1), axis=1)
    np.testing.assert_allclose(out["per_filter_change"], per)
    assert [r["filter"] for r in out["top_changed"]] == [4, 1]
    assert out["relative_change"] == pytest.approx(np.linalg.norm(b - a) / np.linalg.norm(a))
    assert out["epochs"] == [0, 5]


def test_filter_change_of_a_zero_filter_that_moved_is_infinite():
    a = np.zeros((2, 1, 2, 2))
    a[0] = 1.0
    b = a.copy()
    b[1, 0, 0, 0] = 0.5
    np.testing.assert_array_equal(reference_change(Filters("c", a), Filters("c", b)),
                                  [0.0, np.inf])


# ---- Conv1d kernels and the layers without kernels (issue 12, item 3) -------------------
def test_conv1d_weights_are_kernels_and_found_as_the_first_conv_layer():
    state = {"features.0.weight": torch.randn(8, 1, 5), "features.0.bias": torch.zeros(8),
             "fc.weight": torch.randn(10, 8)}
    assert conv_layers(state) == ["features.0"]
    assert first_conv_layer(state) == "features.0"
    f = layer_filters(state, "features.0", epoch=3)
    assert f.kind == "conv1d" and f.weight.shape == (8, 1, 5) and (f.n_out, f.n_in) == (8, 1)


def test_kernel_signals_order_by_change_since_the_reference():
    rng = np.random.default_rng(4)
    before = rng.normal(size=(6, 4, 5))
    after = before.copy()
    after[3] *= 3.0               # filter 3 changes most, then 0, then 5
    after[0] += 0.5
    after[5] += 0.1
    after[:, 1] *= 0.01           # input 1 carries almost nothing
    after[:, 1] = before[:, 1]
    ks = kernel_signals(Filters("conv", after, 7), Filters("conv", before, 0), max_out=3,
                        max_in=2)
    per = (np.linalg.norm((after - before).reshape(6, -1), axis=1)
           / np.linalg.norm(before.reshape(6, -1), axis=1))
    assert ks.outs == tuple(int(i) for i in np.argsort(-per, kind="stable")[:3])
    assert ks.outs[0] == 3
    norms = np.sqrt((after ** 2).sum(axis=2)).sum(axis=0)
    assert ks.ins == tuple(sorted(int(i) for i in np.argsort(-norms, kind="stable")[:2]))
    np.testing.assert_allclose(ks.change, per[list(ks.outs)])
    np.testing.assert_array_equal(ks.weights, after[np.ix_(ks.outs, ks.ins)])
    np.testing.assert_array_equal(ks.reference, before[np.ix_(ks.outs, ks.ins)])
    assert ks.bound == pytest.approx(max(np.abs(ks.weights).max(), np.abs(ks.reference).max()))
    alone = kernel_signals(Filters("conv", after), max_out=2)
    largest = np.argsort(-np.sqrt((after ** 2).sum(axis=2)).sum(axis=1), kind="stable")[:2]
    assert alone.outs == tuple(int(i) for i in largest) and alone.change is None
    with pytest.raises(ShapeMismatchError, match=r"kernel signals need a Conv1d weight"):
        kernel_signals(Filters("c", np.zeros((2, 1, 3, 3))))
    with pytest.raises(UsageError, match="max_out and max_in must be ≥ 1"):
        kernel_signals(Filters("conv", after), max_in=0)


def test_filters_to_follow_keeps_the_most_changed_when_capped():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(40, 1, 3, 3))
    b = a * (1 + np.arange(40))[:, None, None, None] / 40
    history = [Filters("c", a, 0), Filters("c", b, 9)]
    np.testing.assert_array_equal(filters_to_follow(history, 64), np.arange(40))
    change = reference_change(history[0], history[1])
    np.testing.assert_array_equal(filters_to_follow(history, 5),
                                  np.argsort(-change, kind="stable")[:5])


def _state(module: nn.Module, name: str) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v for k, v in module.state_dict().items()}


@pytest.mark.parametrize(("module", "type_name", "guess"), [
    (nn.LSTM(8, 24, batch_first=True), "LSTM", r"a recurrent layer \(RNN/LSTM/GRU"),
    (nn.GRU(8, 4), "GRU", r"a recurrent layer"),
    (nn.LayerNorm(16), "LayerNorm", r"per-channel weight shaped \(16,\)"),
    (nn.MultiheadAttention(16, 2), "MultiheadAttention", r"an attention layer"),
    (nn.Conv3d(1, 2, 3), "Conv3d", r"a weight shaped \(2, 1, 3, 3, 3\)"),
])
def test_layers_without_kernels_do_not_apply_and_say_why(module, type_name, guess):
    state = _state(module, "layer")
    with pytest.raises(NotApplicableError, match=rf"filters: 'layer' is .*{guess}.*filters are "
                                                 r"drawn for Conv1d/Conv2d kernels and for a "
                                                 r"first Linear layer that reads the whole input"):
        layer_filters(state, "layer")
    named = not_applicable_reason(state, "layer", type_name)
    article = "an" if type_name == "LSTM" else "a"  # an LSTM, a GRU, a LayerNorm …
    assert named is not None and named.startswith(f"filters: 'layer' is {article} {type_name}")


def test_embedding_and_containers_are_named_from_the_layer_table():
    state = {"embed.weight": torch.randn(100, 16), "body.0.weight": torch.randn(4, 4)}
    assert not_applicable_reason(state, "embed") is None           # shape alone: a linear
    reason = not_applicable_reason(state, "embed", "Embedding")
    assert reason is not None and "'embed' is an Embedding (weight shaped (100, 16))" in reason
    assert "a container: name one of its layers, e.g. body.0" in str(
        not_applicable_reason(state, "body", "Sequential"))
    assert "'act' is a ReLU and has no weights" in str(not_applicable_reason(state, "act",
                                                                               "ReLU"))
    assert not_applicable_reason(state, "nothing") is None          # unknown: not judged here
    with pytest.raises(LayerNotFoundError, match="no weights for layer 'nothing'"):
        layer_filters(state, "nothing")
