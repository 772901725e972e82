"""The units figure: one row per unit, the best input with its field box, then the top-k
crops titled with their activation and label."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.patches import Rectangle

from shenjing.analysis.units import receptive_field, top_activations
from shenjing.models.zoo import SimpleCNN
from shenjing.plot.units import plot_top_units


def _setup():
    torch.manual_seed(0)
    model = SimpleCNN(1, 8, 8, 10)
    x = torch.randn(30, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    y = torch.arange(30) % 3
    top = top_activations(model, (x, y), "conv2", k=4, units=[0, 5, 9])
    return top, x.numpy(), receptive_field(model, "conv2", (1, 8, 8))


def test_every_crop_carries_its_activation_and_label():
    top, images, rf = _setup()
    fig = plot_top_units(top, images, field=rf, classes=["a", "b", "c"], epoch=3)
    axes = fig.axes
    assert len(axes) == 3 * 5
    for r in range(3):
        row = axes[r * 5:(r + 1) * 5]
        assert row[0].get_title() == f"unit {top.units[r]}\npurity {top.purity()[r]}/4"
        boxes = [p for p in row[0].patches if isinstance(p, Rectangle)]
        assert len(boxes) == 1
        for c in range(4):
            label = "abc"[top.labels[r, c]]
            assert row[c + 1].get_title() == f"{top.values[r, c]:.3g} · {label}"
            crop = row[c + 1].get_images()[0].get_array()
            assert crop.shape == (8, 8)  # every crop at the field's full size
            want = rf.crop(images[top.indices[r, c]], top.positions[r, c])[0]
            np.testing.assert_array_equal(np.ma.filled(crop, np.nan), want)
    title = fig._suptitle.get_text()
    assert "conv2, epoch 3: top 4 of 30 inputs by mean" in title and "8×8 px" in title
    lims = {tuple(a.get_images()[0].get_clim()) for a in axes}
    assert len(lims) == 1  # one grey scale for every picture


def test_linear_layers_show_whole_inputs_and_rows_are_capped():
    torch.manual_seed(0)
    model = SimpleCNN(1, 8, 8, 10)
    x = torch.randn(12, 1, 8, 8)
    top = top_activations(model, x, "fc1", k=2)
    fig = plot_top_units(top, x.numpy(), max_units=3)
    assert len(fig.axes) == 3 * 3
    assert fig.axes[1].get_images()[0].get_array().shape == (8, 8)
    assert fig.axes[0].get_title() == f"unit {top.units[0]}"  # no labels: no purity
    assert "units shown: 3 of 128" in fig._suptitle.get_text()
    assert "whole inputs" in fig._suptitle.get_text()
