"""The feature-visualization figure: one image per unit, each titled with its numbers."""

from __future__ import annotations

import numpy as np
from torch import nn

from shenjing.analysis.visualize import visualize_units
from shenjing.plot.visualize import plot_visualization, unit_title


def made(data=True):
    import torch

    net = nn.Sequential(nn.Conv2d(1, 5, 3), nn.ReLU())
    x = torch.rand(40, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    return visualize_units(net, "0", [0, 2, 4], input_shape=(1, 6, 6), steps=4,
                           data=x if data else None)


def test_one_image_per_unit_titled_with_reached_best_and_ratio():
    fv = made()
    fig = plot_visualization(fv, columns=2)
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 3 and len(fig.axes) == 3  # the empty 4th cell is removed
    for i, ax in enumerate(axes):
        title = ax.get_title()
        row = fv.per_unit()[i]
        assert title.startswith(f"unit {row['unit']}\n")
        assert f"reached {row['reached']:.3g}" in title
        assert f"best real {row['best_real']:.3g}" in title
        ratio = row["ratio"]
        assert (f"×{ratio:.2f}" if ratio is not None else "×?") in title
        shown = np.asarray(ax.images[0].get_array())
        np.testing.assert_allclose(shown, fv.pixels[i, 0], atol=1e-6)
        assert ax.images[0].get_clim() == (0.0, 1.0)
    assert "would like to see" in fig._suptitle.get_text()


def test_without_data_the_title_gives_the_noise_activation():
    fv = made(data=False)
    assert unit_title(fv, 1) == (f"unit 2\nreached {fv.reached[1]:.3g}\n"
                                 f"(noise {fv.noise[1]:.3g})")
