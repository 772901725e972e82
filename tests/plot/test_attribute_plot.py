"""Figures of the attribute view: panels, their images and the numbers in their titles."""

from __future__ import annotations

import numpy as np
import pytest

from shenjing.errors import ShapeMismatchError
from shenjing.plot.attribute import (
    plot_attribution_maps,
    plot_deletion_insertion,
    plot_randomization,
)


def _image():
    return np.arange(64, dtype=np.float32).reshape(1, 8, 8)


def test_maps_grid_has_one_row_per_method_and_titles_with_the_numbers():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(2, 2, 8, 8))
    maps[1] = np.abs(maps[1])  # Grad-CAM-like: unsigned
    fig = plot_attribution_maps(_image(), maps, methods=["ig", "gradcam"], epochs=[0, 3],
                                targets=["7", "3"], probabilities=[0.1234, 0.9876],
                                completeness={"ig": [0.0042, 0.0071]}, sample="test #5")
    axes = {ax.get_label(): ax for ax in fig.axes}
    assert sorted(axes) == ["gradcam/epoch 0", "gradcam/epoch 3", "ig/epoch 0",
                            "ig/epoch 3", "input"] or len(fig.axes) == 6
    assert len(fig.axes) == 6  # 2 methods × (input + 2 epochs)
    title = axes["ig/epoch 3"].get_title()
    assert "target 3" in title and "p 0.988" in title and "completeness err 0.71%" in title
    assert "completeness" not in axes["gradcam/epoch 0"].get_title()
    assert "p 0.123" in axes["gradcam/epoch 0"].get_title()
    # the map drawn is the one given, on a symmetric scale when signed, from 0 when not
    ig = axes["ig/epoch 3"].images[1]
    np.testing.assert_allclose(ig.get_array(), maps[0, 1])
    lo, hi = ig.get_clim()
    assert lo == pytest.approx(-hi) and hi == pytest.approx(np.abs(maps[0, 1]).max())
    cam = axes["gradcam/epoch 3"].images[1]
    assert cam.get_clim() == pytest.approx((0.0, maps[1, 1].max()))


def test_maps_refuse_a_shape_that_does_not_match_the_names():
    with pytest.raises(ShapeMismatchError, match=r"maps must be \(methods, epochs, H, W\)"):
        plot_attribution_maps(_image(), np.zeros((1, 2, 8, 8)), methods=["ig", "gradcam"],
                              epochs=[0, 1], targets=[1, 1], probabilities=[0.5, 0.5])


def test_randomization_shows_each_stage_numbers_and_the_verdict():
    maps = np.random.default_rng(1).normal(size=(4, 8, 8))
    fig = plot_randomization(_image(), maps, layers=["fc2", "fc1", "conv2"],
                             spearman=[0.8, 0.4, 0.05], ssim=[0.7, 0.3, 0.1], passed=True,
                             method="ig", rule="last ρ < 0.5")
    labels = [ax.get_label() for ax in fig.axes]
    assert labels[:4] == ["trained", "randomized fc2", "randomized fc1", "randomized conv2"]
    axes = dict(zip(labels, fig.axes, strict=True))
    assert "ρ 0.40, SSIM 0.30" in axes["randomized fc1"].get_title()
    curve = axes["similarity"]
    assert curve.get_title().startswith("PASS: Spearman 0.80 → 0.05, SSIM 0.70 → 0.10")
    np.testing.assert_allclose(curve.lines[0].get_ydata(), [0.8, 0.4, 0.05])
    fail = plot_randomization(_image(), maps, layers=["fc2", "fc1", "conv2"],
                              spearman=[1.0, 1.0, 1.0], ssim=[1.0, 1.0, 1.0], passed=False,
                              method="edges")
    assert next(a for a in fail.axes if a.get_label() == "similarity").get_title() \
        .startswith("FAIL")


def test_deletion_insertion_puts_every_auc_in_the_legend():
    fr = np.linspace(0, 1, 5)
    curves = {"ig": {"deletion": [1, .5, .2, .1, .1], "insertion": [.1, .6, .8, .9, .9],
                     "deletion_auc": 0.3125, "insertion_auc": 0.7},
              "random": {"deletion": [1, .8, .6, .4, .1], "insertion": [.1, .3, .5, .7, .9],
                         "deletion_auc": 0.6, "insertion_auc": 0.5}}
    fig = plot_deletion_insertion(fr, curves, n_samples=40)
    left, right = fig.axes
    assert [t.get_text() for t in left.get_legend().get_texts()] == [
        "ig: AUC 0.312", "random: AUC 0.600"]
    assert [t.get_text() for t in right.get_legend().get_texts()] == [
        "ig: AUC 0.700", "random: AUC 0.500"]
    np.testing.assert_allclose(right.lines[0].get_ydata(), curves["ig"]["insertion"])
    assert "40 test inputs" in fig.texts[0].get_text()
