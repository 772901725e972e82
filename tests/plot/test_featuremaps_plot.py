"""Feature-map figures: the arrays drawn are the normalised maps; titles and marks say so."""

from __future__ import annotations

import numpy as np
import pytest

from shenjing.analysis.featuremaps import FeatureMaps, compare_feature_maps, normalise_maps
from shenjing.errors import ShapeMismatchError, UsageError
from shenjing.plot.featuremaps import (
    plot_feature_map_strip,
    plot_feature_maps,
    plot_feature_vector,
)


def maps_pair(channels: int = 6):
    rng = np.random.default_rng(0)
    a = np.abs(rng.normal(size=(channels, 4, 5))).astype(np.float32)
    a[2] = 0.0                                   # dead at epoch 0
    b = a * np.arange(1, channels + 1)[:, None, None] + 0.1
    x = rng.random((1, 4, 5)).astype(np.float32)
    return (FeatureMaps("conv1", a, epoch=0, index=3, label="7", input=x),
            FeatureMaps("conv1", b, epoch=5, index=3, label="7", input=x))


def by_label(fig):
    return {ax.get_label(): ax for ax in fig.axes}


def test_grid_images_equal_normalised_maps_shared_scale():
    a, b = maps_pair()
    change = compare_feature_maps(a, b)
    fig = plot_feature_maps([a, b], change=change)
    axes = by_label(fig)
    normed, _, _ = normalise_maps(np.stack([a.values, b.values]), "shared")
    for p, title in enumerate(["epoch 0 (untrained)", "epoch 5"]):
        for c in range(6):
            ax = axes[f"{title} channel {c}"]
            drawn = ax.images[0].get_array()
            np.testing.assert_allclose(drawn, normed[p, c], atol=1e-12)
            assert ax.images[0].get_clim() == (0, 1)
            assert ax.get_title() == (f"{c} off" if (p, c) == (0, 2) else str(c))
    np.testing.assert_allclose(axes["input"].images[0].get_array(),
                               (a.input[0] - a.input.min()) / np.ptp(a.input))
    text = fig._suptitle.get_text()
    assert "conv1 feature maps" in text and "input #3, label 7" in text
    assert "one colour scale per panel, shared by its channels" in text
    assert f"{change.mean_abs_change:.4g}" in fig._supxlabel.get_text()
    sub_titles = [sf._suptitle.get_text() for sf in fig.subfigs if sf._suptitle]
    assert any("1 of 6 channels off" in t and "colour 0 …" in t for t in sub_titles)
    dead_ax = axes["epoch 0 (untrained) channel 2"]
    assert dead_ax.spines["left"].get_linewidth() == 2


def test_channel_scale_top_k_and_sorting():
    a, b = maps_pair(channels=10)
    fig = plot_feature_maps([a, b], scale="channel", top_k=3)
    axes = by_label(fig)
    top = np.argsort(-b.values.reshape(10, -1).mean(axis=1), kind="stable")[:3]
    shown = sorted(int(k.rsplit(" ", 1)[1]) for k in axes if k.startswith("epoch 5 channel"))
    assert shown == sorted(top.tolist())
    c = int(top[0])
    ch = b.values[c]
    np.testing.assert_allclose(axes[f"epoch 5 channel {c}"].images[0].get_array(),
                               (ch - ch.min()) / (ch.max() - ch.min()), atol=1e-6)
    assert "top 3 of 10 channels by mean activation" in fig._suptitle.get_text()
    assert "each channel scaled to its own range" in fig._suptitle.get_text()
    sorted_fig = plot_feature_maps([b], order="mean", show_input=False)
    labels = [ax.get_label() for ax in sorted_fig.axes if ax.get_label().startswith("epoch")]
    order = [int(lab.rsplit(" ", 1)[1]) for lab in labels]
    assert order[:3] == top.tolist()
    assert "input" not in by_label(sorted_fig)


def test_signed_maps_use_a_diverging_map_and_fixed_limits():
    a = FeatureMaps("conv1", np.array([[[-2.0, 1.0]], [[0.5, 2.0]]]), epoch=1)
    fig = plot_feature_maps(a)
    ax = by_label(fig)["epoch 1 channel 0"]
    assert ax.images[0].get_cmap().name == "RdBu_r"
    np.testing.assert_allclose(ax.images[0].get_array(), [[0.0, 0.75]])
    assert "0 at the middle colour" in fig._suptitle.get_text()
    fixed = plot_feature_maps(a, limits=(-4.0, 4.0), channels=[1])
    ax = by_label(fixed)["epoch 1 channel 1"]
    np.testing.assert_allclose(ax.images[0].get_array(), [[0.5625, 0.75]])
    assert "fixed colour scale -4 … 4" in fixed._suptitle.get_text()
    with pytest.raises(UsageError, match=r"channels \[5\] out of range"):
        plot_feature_maps(a, channels=[5])


def test_grid_refuses_vectors_and_mixed_layers():
    v = FeatureMaps("fc1", np.arange(5.0), epoch=0)
    with pytest.raises(ShapeMismatchError, match="--view vector"):
        plot_feature_maps(v)
    a, _ = maps_pair()
    with pytest.raises(UsageError, match="one figure shows one layer"):
        plot_feature_maps([a, FeatureMaps("conv2", a.values)])


def test_vector_view_draws_values_not_images():
    a = FeatureMaps("relu3", np.array([0.0, 2.0, 1.0, 0.0]), epoch=0, index=1)
    b = FeatureMaps("relu3", np.array([1.0, 4.0, 0.0, 3.0]), epoch=5, index=1)
    fig = plot_feature_vector([a, b], change=compare_feature_maps(a, b))
    axes = by_label(fig)
    strip = axes["epoch 5 strip"].images[0].get_array()
    assert strip.shape == (1, 4)
    np.testing.assert_allclose(strip[0], b.values / 4.0)
    bars = axes["epoch 0 (untrained) bars"]
    heights = [p.get_height() for p in bars.patches]
    np.testing.assert_allclose(heights, a.values)
    assert "2 of 4 shown are ≤ 0" in bars.get_xlabel()
    assert "(a vector)" in fig._suptitle.get_text()
    top = plot_feature_vector([b], top_k=2)
    np.testing.assert_allclose([p.get_height() for p in by_label(top)["epoch 5 bars"].patches],
                               [4.0, 3.0])
    with pytest.raises(ShapeMismatchError, match="use plot_feature_maps"):
        plot_feature_vector(maps_pair()[0])


def test_strip_rows_are_channels_with_one_scale_each():
    a, b = maps_pair()
    c = FeatureMaps("conv1", b.values * 2, epoch=9)
    fig = plot_feature_map_strip([a, b, c], [1, 4])
    axes = by_label(fig)
    row = np.stack([m.values[4] for m in (a, b, c)])
    np.testing.assert_allclose(axes["channel 4 epoch 9"].images[0].get_array(),
                               (row[2] - row.min()) / (row.max() - row.min()), atol=1e-6)
    assert len([k for k in axes if k.startswith("channel")]) == 6
    with pytest.raises(UsageError, match=r"channels \[6\] out of range"):
        plot_feature_map_strip([a], [6])


def test_many_epochs_wrap_onto_rows():
    a, b = maps_pair(channels=4)
    panels = [FeatureMaps("conv1", b.values * k, epoch=k, input=a.input) for k in range(5)]
    fig = plot_feature_maps(panels, panels_per_row=2)
    axes = by_label(fig)
    assert all(f"epoch {k} channel 3" in axes for k in range(1, 5))
    fig.canvas.draw()  # the layout engine places subfigures at draw time
    rows = {round(axes[f"epoch {k} channel 0"].get_window_extent().y0) for k in range(1, 5)}
    assert len(rows) == 3          # epochs 0-1, 2-3 and 4 on three rows
    assert fig.get_figwidth() < 4.0 * 5
