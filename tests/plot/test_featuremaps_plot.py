"""Feature-map figures: the arrays drawn are the normalised maps; titles and marks say so;
heat maps of sequences, tokens and 1-D signals draw the values with their axes kept."""

from __future__ import annotations

import numpy as np
import pytest

from shenjing.analysis.maps import FeatureMaps, compare_feature_maps, normalise_maps
from shenjing.errors import ShapeMismatchError, UsageError
from shenjing.plot.maps import (
    plot_feature_heatmap,
    plot_feature_map_strip,
    plot_feature_maps,
    plot_feature_vector,
)

RELU = "output of ReLU"


def maps_pair(channels: int = 6):
    rng = np.random.default_rng(0)
    a = np.abs(rng.normal(size=(channels, 4, 5))).astype(np.float32)
    a[2] = 0.0                                   # dead at epoch 0
    b = a * np.arange(1, channels + 1)[:, None, None] + 0.1
    x = rng.random((1, 4, 5)).astype(np.float32)
    return (FeatureMaps("relu1", a, epoch=0, index=3, label="7", input=x, off_rule=RELU),
            FeatureMaps("relu1", b, epoch=5, index=3, label="7", input=x, off_rule=RELU))


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
    assert "relu1 feature maps" in text and "input #3, label 7" in text
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
    with pytest.raises(ShapeMismatchError, match=r"outputs a sequence.*--view heatmap"):
        plot_feature_maps(FeatureMaps("lstm", np.zeros((3, 4)), view="sequence"))


def test_vector_view_draws_values_not_images():
    a = FeatureMaps("relu3", np.array([0.0, 2.0, 1.0, 0.0]), epoch=0, index=1, off_rule=RELU)
    b = FeatureMaps("relu3", np.array([1.0, 4.0, 0.0, 3.0]), epoch=5, index=1, off_rule=RELU)
    fig = plot_feature_vector([a, b], change=compare_feature_maps(a, b))
    axes = by_label(fig)
    strip = axes["epoch 5 strip"].images[0].get_array()
    assert strip.shape == (1, 4)
    np.testing.assert_allclose(strip[0], b.values / 4.0)
    bars = axes["epoch 0 (untrained) bars"]
    heights = [p.get_height() for p in bars.patches]
    np.testing.assert_allclose(heights, a.values)
    assert "2 of 4 shown are off" in bars.get_xlabel()
    assert "(a vector)" in fig._suptitle.get_text()
    top = plot_feature_vector([b], top_k=2)
    np.testing.assert_allclose([p.get_height() for p in by_label(top)["epoch 5 bars"].patches],
                               [4.0, 3.0])
    with pytest.raises(ShapeMismatchError, match="use plot_feature_maps"):
        plot_feature_vector(maps_pair()[0])


def test_strip_rows_are_channels_with_one_scale_each():
    a, b = maps_pair()
    c = FeatureMaps("relu1", b.values * 2, epoch=9)
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
    panels = [FeatureMaps("relu1", b.values * k, epoch=k, input=a.input) for k in range(5)]
    fig = plot_feature_maps(panels, panels_per_row=2)
    axes = by_label(fig)
    assert all(f"epoch {k} channel 3" in axes for k in range(1, 5))
    fig.canvas.draw()  # the layout engine places subfigures at draw time
    rows = {round(axes[f"epoch {k} channel 0"].get_window_extent().y0) for k in range(1, 5)}
    assert len(rows) == 3          # epochs 0-1, 2-3 and 4 on three rows
    assert fig.get_figwidth() < 4.0 * 5


# ---- "off" only where it means something (issue 12, item 12) -----------------------------
def test_off_is_not_marked_where_it_is_not_counted():
    a, _ = maps_pair()
    conv = FeatureMaps("conv1", a.values, epoch=0, module_type="Conv2d")  # pre-activation
    fig = plot_feature_maps(conv)
    axes = by_label(fig)
    assert axes["epoch 0 (untrained) channel 2"].get_title() == "2"      # all zero, not "off"
    assert axes["epoch 0 (untrained) channel 2"].spines["left"].get_linewidth() != 2
    assert any("'off' not counted for Conv2d outputs" in sf._suptitle.get_text()
               for sf in fig.subfigs if sf._suptitle)
    tanh = FeatureMaps("tanh", np.array([0.0, -1.0, 0.5]), epoch=1, module_type="Tanh")
    bars = by_label(plot_feature_vector(tanh))["epoch 1 bars"]
    colours = {tuple(p.get_facecolor()) for p in bars.patches}
    assert len(colours) == 1 and not bars.lines            # no red bars, no "off" crosses
    assert "'off' not counted for Tanh outputs" in bars.get_xlabel()


# ---- heat maps of sequences, tokens and signals -------------------------------------------
def sequence_pair():
    rng = np.random.default_rng(1)
    a = np.tanh(rng.normal(size=(8, 24)))               # (time, hidden)
    b = a.copy()
    b[:, 5] = -0.9                                      # hidden unit 5 changes most
    b[:, 17] += 0.6
    kw = {"view": "sequence", "index": 0, "label": "3", "module_type": "LSTM", "key": "lstm.0"}
    return FeatureMaps("lstm", a, epoch=0, **kw), FeatureMaps("lstm", b, epoch=4, **kw)


def test_sequence_heatmap_draws_hidden_units_over_time_with_change_and_traces():
    a, b = sequence_pair()
    change = compare_feature_maps(a, b)
    fig = plot_feature_heatmap([a, b], change=change)
    axes = by_label(fig)
    for fm, name in ((a, "epoch 0 (untrained) heatmap"), (b, "epoch 4 heatmap")):
        img = axes[name].images[0]
        np.testing.assert_allclose(img.get_array(), fm.values.T)      # rows = hidden units
        bound = max(np.abs(a.values).max(), np.abs(b.values).max())
        np.testing.assert_allclose(img.get_clim(), (-bound, bound))
        assert axes[name].get_xlabel() == "time step"
    assert axes["epoch 0 (untrained) heatmap"].get_ylabel() == "hidden unit"
    delta = axes["change heatmap"].images[0]
    np.testing.assert_allclose(delta.get_array(), (b.values - a.values).T)
    assert change.top[0] == 5
    trace = axes["hidden unit 5 trace"]
    np.testing.assert_allclose(trace.lines[0].get_ydata(), a.values[:, 5])
    np.testing.assert_allclose(trace.lines[1].get_ydata(), b.values[:, 5])
    assert len([k for k in axes if k.endswith(" trace")]) == 4
    title = fig._suptitle.get_text()
    assert "lstm: sequence (time step × hidden unit)" in title
    assert "all 24 hidden units" in title and "'off' not counted for LSTM outputs" in title
    assert "most changed hidden units: 5, 17" in fig._supxlabel.get_text()
    legend = fig.subfigs[1].legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["epoch 0 (untrained)", "epoch 4"]


def test_heatmap_caps_units_and_thins_epochs_and_refuses_other_views():
    rng = np.random.default_rng(2)
    panels = [FeatureMaps("enc", rng.normal(size=(5, 300)) * k, epoch=k, view="tokens")
              for k in range(1, 10)]
    change = compare_feature_maps(panels[0], panels[-1])
    fig = plot_feature_heatmap(panels, change=change, max_units=40)
    axes = by_label(fig)
    drawn = [k for k in axes if k.endswith(" heatmap") and k != "change heatmap"]
    assert len(drawn) == 6 and "epoch 1 heatmap" in axes and "epoch 9 heatmap" in axes
    units = np.sort(np.argsort(-change.per_channel, kind="stable")[:40])
    np.testing.assert_allclose(axes["epoch 9 heatmap"].images[0].get_array(),
                               panels[-1].values.T[units])
    title = fig._suptitle.get_text()
    assert "40 of 300 features (most changed, in index order)" in title
    assert "6 of 9 epochs shown, evenly spaced" in title
    assert not [k for k in axes if k.endswith(" trace")]             # tokens: no traces
    with pytest.raises(ShapeMismatchError, match="use plot_feature_maps"):
        plot_feature_heatmap(maps_pair()[0])


def test_signal_heatmap_marks_off_channels_after_a_relu():
    values = np.array([[0.0, 0.0, 0.0, 0.0], [0.5, 0.0, 1.0, 2.0], [0.0, 3.0, 0.0, 0.0]])
    fm = FeatureMaps("relu", values, epoch=2, view="signal", off_rule=RELU)
    fig = plot_feature_heatmap(fm, traces=2)
    axes = by_label(fig)
    np.testing.assert_allclose(axes["epoch 2 heatmap"].images[0].get_array(), values)
    assert axes["epoch 2 heatmap"].images[0].get_cmap().name == "viridis"
    assert "1 of 3 channels off for this input" in axes["epoch 2 heatmap"].get_title()
    # no change given: traces follow the most active channels
    assert {"channel 1 trace", "channel 2 trace"} <= set(axes)
    assert axes["epoch 2 heatmap"].get_xlabel() == "position"


def test_many_epochs_are_thinned_to_a_bounded_grid():
    a, b = maps_pair(channels=4)
    panels = [FeatureMaps("relu1", b.values * k, epoch=k, input=a.input) for k in range(40)]
    fig = plot_feature_maps(panels)
    shown = {k.split(" channel")[0] for k in by_label(fig) if " channel " in k}
    assert len(shown) == 6 and "epoch 0 (untrained)" in shown and "epoch 39" in shown
    assert "6 of 40 epochs shown, evenly spaced" in fig._suptitle.get_text()
    width, height = fig.get_size_inches()
    assert width <= 16 and height <= 12
