"""Filters: weights read from state dicts, RGB kernels, capped kernel grids, unit images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shenjing.analysis.filters import (
    Filters,
    conv_layers,
    filter_change,
    first_conv_layer,
    kernel_grid,
    layer_filters,
    normalise_filters,
    rgb_filters,
    unit_images,
)
from shenjing.errors import LayerNotFoundError, ShapeMismatchError, UsageError
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
    with pytest.raises(ShapeMismatchError, match=r"'bn' has a weight shaped \(4,\)"):
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
    with pytest.raises(ShapeMismatchError, match=r"takes 64 features, which is not an image of "
                                                 r"shape \(1, 28, 28\)"):
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
