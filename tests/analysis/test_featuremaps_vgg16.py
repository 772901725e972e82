"""Seed 003 on torchvision's real VGG16 (runs only where torchvision imports).

Our CPU machines cannot install torchvision; the same path is tested on a VGG16-shaped
model in tests/stages/test_maps_stage.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shenjing.analysis.filters import first_conv_layer, layer_filters, rgb_filters
from shenjing.analysis.maps import compare_feature_maps, feature_maps
from shenjing.hooks import count_hooks

try:
    import torchvision  # noqa: F401  (used by build_model("vgg16"))
except Exception:  # not installed, or built for another torch ("torchvision::nms ...")
    pytest.skip("torchvision is not installed or does not import here (see "
                "docs/data.md#torchvision)", allow_module_level=True)


@pytest.mark.slow
def test_vgg16_first_middle_last_conv_and_rgb_filters():
    from shenjing.models import build_model
    from shenjing.plot.filters import plot_filters
    from shenjing.plot.maps import plot_feature_maps

    torch.manual_seed(0)
    model = build_model("vgg16", (3, 64, 64), 10).eval()
    x = torch.rand(3, 64, 64)
    shapes = {}
    for layer in ("features.0", "features.14", "features.28"):
        fm = feature_maps(model, x, layer, epoch=0)
        shapes[layer] = fm.values.shape
        assert count_hooks(model) == 0
    assert shapes == {"features.0": (64, 64, 64), "features.14": (256, 16, 16),
                      "features.28": (512, 4, 4)}
    last = feature_maps(model, x, "features.28", epoch=0)
    fig = plot_feature_maps(last, top_k=32)
    assert "top 32 of 512 channels" in fig._suptitle.get_text()
    state = model.state_dict()
    assert first_conv_layer(state) == "features.0"
    filters = layer_filters(state, "features.0")
    assert filters.weight.shape == (64, 3, 3, 3)
    fig = plot_filters(filters)
    ax = {a.get_label(): a for a in fig.axes}["filter 0"]
    np.testing.assert_allclose(ax.images[0].get_array(), rgb_filters(filters.weight)[0])
    changed = compare_feature_maps(last, feature_maps(model, x * 0.5, "features.28", epoch=1))
    assert changed.mean_abs_change >= 0
