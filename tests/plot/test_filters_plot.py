"""Filter figures: RGB/grey kernels, the capped kernel grid, unit images, epochs strip."""

from __future__ import annotations

import numpy as np
import pytest

from shenjing.analysis.filters import Filters, kernel_grid, rgb_filters, unit_images
from shenjing.errors import ShapeMismatchError
from shenjing.plot.filters import (
    plot_filters,
    plot_filters_over_epochs,
    plot_kernel_grid,
    plot_unit_images,
)


def by_label(fig):
    return {ax.get_label(): ax for ax in fig.axes}


def test_rgb_first_layer_is_drawn_in_colour():
    rng = np.random.default_rng(0)
    f = Filters("features.0", rng.normal(size=(10, 3, 3, 3)), epoch=0)
    fig = plot_filters(f, max_filters=6)
    axes = by_label(fig)
    assert sorted(k for k in axes if k.startswith("filter")) == [f"filter {i}" for i in range(6)]
    np.testing.assert_allclose(axes["filter 4"].images[0].get_array(),
                               rgb_filters(f.weight, "filter")[4])
    title = fig._suptitle.get_text()
    assert "features.0 filters (10×3×3×3, epoch 0 (untrained))" in title
    assert "first 6 of 10 filters, RGB colour" in title
    shared = plot_filters(f, max_filters=6, scale="shared")
    bound = np.abs(f.weight).max()
    np.testing.assert_allclose(by_label(shared)["filter 0"].images[0].get_array(),
                               0.5 + 0.5 * f.weight[0].transpose(1, 2, 0) / bound)


def test_grey_kernels_and_refusals():
    w = np.zeros((4, 1, 3, 3))
    w[1, 0, 1, 1] = -2.0
    fig = plot_filters(Filters("conv1", w))
    ax = by_label(fig)["filter 1"]
    assert ax.images[0].get_cmap().name == "RdBu_r"
    expected = np.full((3, 3), 0.5)
    expected[1, 1] = 0.0
    np.testing.assert_allclose(ax.images[0].get_array(), expected)
    with pytest.raises(ShapeMismatchError, match="use plot_kernel_grid"):
        plot_filters(Filters("conv2", np.zeros((4, 8, 3, 3))))
    with pytest.raises(ShapeMismatchError, match="plot_unit_images"):
        plot_filters(Filters("fc1", np.zeros((4, 8))))


def test_kernel_grid_is_capped_and_labelled():
    rng = np.random.default_rng(1)
    f = Filters("conv2", rng.normal(size=(20, 12, 3, 3)), epoch=3)
    fig = plot_kernel_grid(f, max_out=4, max_in=5)
    grid = kernel_grid(f, max_out=4, max_in=5)
    axes = by_label(fig)
    assert len([k for k in axes if k.startswith("out ")]) == 20
    o, i = grid.outs[2], grid.ins[3]
    np.testing.assert_allclose(axes[f"out {o} in {i}"].images[0].get_array(),
                               grid.images[2, 3])
    title = fig._suptitle.get_text()
    assert "4 of 20 outputs × 5 of 12 inputs" in title and "epoch 3" in title
    assert fig._supxlabel.get_text() == "input channel"
    assert fig._supylabel.get_text() == "output channel"


def test_unit_images_show_what_units_look_at():
    w = np.random.default_rng(2).normal(size=(5, 64))
    imgs = unit_images(Filters("fc1", w), (1, 8, 8))
    fig = plot_unit_images(imgs, layer="fc1", epoch=4)
    axes = by_label(fig)
    np.testing.assert_allclose(axes["unit 3"].images[0].get_array(), imgs[3])
    assert "5 units as 8×8 images, epoch 4" in fig._suptitle.get_text()


def test_filters_over_epochs_share_a_scale_per_filter():
    a = np.ones((3, 1, 2, 2))
    b = 3 * np.ones((3, 1, 2, 2))
    fig = plot_filters_over_epochs([Filters("conv1", a, 0), Filters("conv1", b, 5)])
    axes = by_label(fig)
    np.testing.assert_allclose(axes["filter 1 epoch 0"].images[0].get_array(), 0.5 + 0.5 / 3)
    np.testing.assert_allclose(axes["filter 1 epoch 5"].images[0].get_array(), 1.0)
    with pytest.raises(ShapeMismatchError, match="one shape across epochs"):
        plot_filters_over_epochs([Filters("conv1", a, 0), Filters("conv1", a[:2], 1)])
