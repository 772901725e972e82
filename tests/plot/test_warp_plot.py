"""Figures of the warping study: warped grid lines, points, titles, probe values, boundary."""

from __future__ import annotations

import numpy as np
import torch

from shenjing.analysis.warp import decision_map, warp_layers
from shenjing.models import build_model
from shenjing.plot.warp import (
    layer_title,
    plot_decision_boundary,
    plot_probe_accuracy,
    plot_warp,
    plot_warp_layer,
)


def _warp():
    torch.manual_seed(0)
    net = build_model("mlp", (2,), 2, hidden=(6,)).eval()
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    x = rng.normal(size=(120, 2)) + y[:, None]
    return net, x, y, warp_layers(net, x[:90], y[:90], x[90:], y[90:], n_lines=4, n_per_line=5)


def test_plot_warp_layer_draws_grid_lines_and_points():
    grid = np.arange(2 * 3 * 4 * 2, dtype=float).reshape(2, 3, 4, 2)
    data = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    fig = plot_warp_layer(data, grid, np.array([0, 1, 1]), title="t")
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == 6
    np.testing.assert_allclose(lines[4].get_xydata(), grid[1, 1])
    offsets = [c.get_offsets() for c in ax.collections]
    np.testing.assert_allclose(offsets[0], data[:1])
    np.testing.assert_allclose(offsets[1], data[1:])
    assert ax.get_title() == "t"


def test_plot_warp_one_panel_per_layer_with_probe_in_title():
    _, _, _, w = _warp()
    fig = plot_warp(w, ncols=2)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == len(w.layers) == 4
    for ax, layer in zip(visible, w.layers, strict=True):
        assert ax.get_title().startswith(layer.name)
        assert f"probe {layer.probe_test_accuracy:.2f}" in ax.get_title()
    assert "relu1 (post-activation)" in visible[2].get_title()
    assert "PCA, " in visible[2].get_title()
    assert "fc1 (pre-activation)" in visible[1].get_title()
    # the drawn grid of relu1 is the warp's grid for that layer
    np.testing.assert_allclose(visible[2].get_lines()[0].get_xydata(), w["relu1"].grid_2d[0, 0])


def test_layer_title():
    assert layer_title("input", "input", "2-D", 0.5) == "input\n2-D · probe 0.50"
    assert layer_title("fc2", "output", "2-D", None) == "fc2 (output (logits))\n2-D"


def test_plot_probe_accuracy_values_and_chance():
    fig = plot_probe_accuracy(["input", "fc1", "relu1"], [0.5, 0.5, 0.97],
                              train_accuracy=[0.52, 0.52, 0.99],
                              kinds=["input", "linear", "activation"], chance=0.5)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["probe, test points"].get_ydata(), [0.5, 0.5, 0.97])
    np.testing.assert_allclose(lines["chance (0.50)"].get_ydata(), [0.5, 0.5])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["input\ninput", "fc1\npre-activation",
                                                           "relu1\npost-activation"]
    assert ax.get_ylabel() == "linear-probe accuracy"


def test_plot_decision_boundary_field_and_points():
    net, x, y, _ = _warp()
    dm = decision_map(net, ((-3, 4), (-3, 4)), resolution=30)
    fig = plot_decision_boundary(dm.xs, dm.ys, dm.proba, x, y, title="boundary")
    ax = fig.axes[0]
    assert ax.get_title() == "boundary"
    assert ax.get_xlabel() == "x₁"
    points = np.concatenate([c.get_offsets() for c in ax.collections
                             if hasattr(c, "get_offsets") and len(c.get_offsets()) > 0
                             and c.get_label().startswith("class")])
    assert len(points) == len(x)
    assert fig.axes[1].get_ylabel() == "P(class 1)"  # the colour bar
