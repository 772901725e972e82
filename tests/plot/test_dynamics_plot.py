"""Dynamics, weight and GIF figures: the lines and images drawn are the data given."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shenjing.analysis.dynamics import layer_status, read_dynamics
from shenjing.analysis.weights import weight_history
from shenjing.errors import UsageError
from shenjing.plot.animate import read_gif, save_gif
from shenjing.plot.dynamics import plot_layer_dynamics, plot_layer_status, plot_training_curves
from shenjing.plot.weights import plot_weight_histograms, plot_weight_stats


def records():
    out = []
    for e in range(4):
        out.append({
            "epoch": e, "train_loss": None if e == 0 else 1.0 / e, "test_loss": 2.0 / (e + 1),
            "train_accuracy": None if e == 0 else 0.8, "test_accuracy": 0.2 * e + 0.1,
            "layers": {name: {"weight_norm": 1.0 + e * k, "update_ratio":
                              None if e == 0 else 0.1 / e ** (2 * k), "grad_norm":
                              None if e == 0 else 0.5 * k, "dist_from_init": 0.1 * e,
                              "cos_to_init": 1.0 - 0.05 * e}
                       for k, name in ((1, "fc1"), (2, "fc2"))},
            "dead_units": {"relu1": 0.2 * e}})
    return out


def by_label(fig):
    return {ax.get_label(): ax for ax in fig.axes}


def lines(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_training_curves():
    dyn = read_dynamics(records())
    fig = plot_training_curves(dyn)
    axes = by_label(fig)
    loss = lines(axes["loss"])
    np.testing.assert_allclose(loss["test"].get_ydata(), [2.0, 1.0, 2 / 3, 0.5])
    assert np.isnan(loss["train"].get_ydata()[0])
    assert axes["loss"].get_yscale() == "log"
    np.testing.assert_allclose(lines(axes["accuracy"])["test"].get_ydata(), [0.1, 0.3, 0.5, 0.7])


def test_layer_dynamics_panels_and_log_scales():
    dyn = read_dynamics(records())
    fig = plot_layer_dynamics(dyn)
    axes = by_label(fig)
    assert {"weight_norm", "update_ratio", "grad_norm", "dist_from_init", "cos_to_init",
            "dead_units"} <= set(axes)
    ratio = lines(axes["update_ratio"])
    np.testing.assert_allclose(ratio["fc2"].get_ydata()[1:], [0.1, 0.1 / 16, 0.1 / 81])
    assert axes["update_ratio"].get_yscale() == "log"
    assert axes["weight_norm"].get_yscale() == "linear"
    np.testing.assert_allclose(lines(axes["dead_units"])["relu1"].get_ydata(), [0, .2, .4, .6])


def test_status_heatmap_is_log10_of_the_update_ratio():
    dyn = read_dynamics(records())
    status = layer_status(dyn, dead_above=0.5)
    fig = plot_layer_status(dyn, status)
    ax = by_label(fig)["update_ratio_log10"]
    drawn = np.asarray(ax.images[0].get_array())
    expected = np.log10(dyn.layer_metric("update_ratio"))
    np.testing.assert_allclose(drawn[:, 1:], expected[:, 1:])
    assert np.isnan(drawn[:, 0]).all()
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks == ["fc1  [moving]", "fc2  [settled]"]
    assert "moving: fc1; settled: fc2" in ax.get_title()
    assert "relu1: 60% of units are dead" in fig._supxlabel.get_text()


def test_weight_figures():
    a = {"fc.weight": torch.linspace(-1, 1, 50), "out.weight": torch.ones(3, 2)}
    b = {"fc.weight": 2 * torch.linspace(-1, 1, 50), "out.weight": 2 * torch.ones(3, 2)}
    h = weight_history({0: a, 4: b}, bins=10)
    fig = plot_weight_histograms(h)
    ax = by_label(fig)["fc"]
    steps = [p for p in ax.patches]
    assert [s.get_label() for s in steps] == ["epoch 0", "epoch 4"]
    np.testing.assert_array_equal(steps[1].get_data().values, h.counts["fc"][1])
    assert ax.get_yscale() == "log" and "‖w‖" in ax.get_title()
    stats = plot_weight_stats(h)
    np.testing.assert_allclose(lines(by_label(stats)["norm"])["out"].get_ydata(),
                               [np.sqrt(6), 2 * np.sqrt(6)])


def test_gif_frames_round_trip(tmp_path):
    import matplotlib.pyplot as plt

    frames = []
    for k in range(3):
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.imshow(np.full((4, 4), k), vmin=0, vmax=2, cmap="gray")
        frames.append(fig)
    big = np.zeros((10, 20, 3), dtype=np.uint8)
    path = save_gif([*frames, big], tmp_path / "a.gif", duration_ms=100)
    got = read_gif(path)
    assert len(got) == 4
    assert got[0].shape == got[3].shape
    assert got[0].mean() < got[2].mean()        # the frames differ as drawn (dark → light)
    with pytest.raises(UsageError, match="at least one frame"):
        save_gif([], tmp_path / "b.gif")
    assert not (tmp_path / "b.gif").exists()
