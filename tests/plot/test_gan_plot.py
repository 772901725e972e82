"""The GAN view's figures hold what they claim: the tiled images, the numbers in titles and
labels, the marks of uncovered classes, the curves' data and the Fréchet floor."""

from __future__ import annotations

import numpy as np
import pytest

from shenjing.analysis.gan import GanHistory, Interpolation
from shenjing.plot.gan import (
    plot_class_histogram,
    plot_gan_curves,
    plot_gan_quality,
    plot_interpolation,
    plot_nearest_training,
    plot_sample_grid,
    plot_samples_over_epochs,
    shown_rows,
    tile,
)


def _history(n_epochs: int = 3) -> GanHistory:
    counts = np.zeros((n_epochs, 4), dtype=np.int64)
    counts[:, 0] = 10
    counts[-1] = [3, 3, 3, 1]  # last epoch: class 3 at 10 %, below 20 %
    nan = np.nan
    return GanHistory(
        epochs=np.arange(n_epochs), loss_d=np.array([nan] + [1.2] * (n_epochs - 1)),
        loss_g=np.array([nan] + [0.8] * (n_epochs - 1)),
        d_real=np.array([nan] + [0.6] * (n_epochs - 1)),
        d_fake=np.array([nan] + [0.4] * (n_epochs - 1)),
        n_covered=np.array([1] * (n_epochs - 1) + [3]),
        frechet=np.linspace(50, 5, n_epochs), frechet_floor=0.25,
        confidence=np.full(n_epochs, 0.8), class_counts=counts,
        nn_median=np.full(n_epochs, 3.0), nn_median_test=2.0, n_classes=4, min_fraction=0.2)


def test_tile_places_each_image_with_padding():
    images = np.arange(4 * 1 * 2 * 2, dtype=float).reshape(4, 1, 2, 2)
    mosaic = tile(images, 2, pad=1)
    assert mosaic.shape == (5, 5)
    assert np.array_equal(mosaic[0:2, 0:2], images[0, 0])
    assert np.array_equal(mosaic[3:5, 3:5], images[3, 0])
    assert (mosaic[2, :] == -1).all() and (mosaic[:, 2] == -1).all()


def test_sample_grid_shows_the_samples_and_their_predicted_classes():
    rng = np.random.default_rng(0)
    samples = rng.uniform(-1, 1, size=(4, 1, 3, 3))
    fig = plot_sample_grid(samples, predictions=np.array([0, 1, 2, 3]),
                           confidences=np.array([0.9, 0.8, 0.7, 0.6]),
                           classes=("a", "b", "c", "d"), n_cols=2, title="epoch 5")
    ax = fig.axes[0]
    image = ax.images[0]
    assert image.get_clim() == (-1, 1)
    assert np.array_equal(image.get_array(), tile(samples, 2, top=2))
    assert [t.get_text() for t in ax.texts] == ["a 0.90", "b 0.80", "c 0.70", "d 0.60"]
    assert ax.get_title() == "epoch 5"


def test_samples_over_epochs_title_each_grid_with_its_numbers():
    h = _history()
    grids = {e: np.full((64, 1, 2, 2), e / 3.0) for e in (0, 2)}
    fig = plot_samples_over_epochs(grids, h)
    titles = [a.get_title() for a in fig.axes]
    assert titles == ["epoch 0\n1/4 classes, Fréchet 50.00", "epoch 2\n3/4 classes, Fréchet 5.00"]
    assert np.allclose(fig.axes[1].images[0].get_array()[:2, :2], 2 / 3.0)


def test_class_histogram_marks_the_classes_not_covered():
    h = _history()
    fig = plot_class_histogram(h, classes=("a", "b", "c", "d"), accuracy=0.95)
    ax = fig.axes[0]
    shares = ax.images[0].get_array()
    assert np.allclose(shares[-1], [0.3, 0.3, 0.3, 0.1])
    assert np.allclose(shares[0], [1, 0, 0, 0])
    crosses = [t for t in ax.texts if t.get_text() == "×"]
    # epochs 0, 1: three classes empty each; epoch 2: class d at 10 % < 20 %
    assert len(crosses) == 3 + 3 + 1
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0 (1/4)", "1 (1/4)", "2 (3/4)"]
    assert "0.950" in ax.get_title()


def test_class_histogram_of_a_long_run_shows_evenly_spaced_epochs():
    h = _history(101)
    fig = plot_class_histogram(h)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(labels) == 21 and labels[0].startswith("0 ") and labels[-1].startswith("100 ")
    assert shown_rows(5, 21).tolist() == [0, 1, 2, 3, 4]


def test_curves_hold_the_losses_and_d_outputs():
    h = _history()
    fig = plot_gan_curves(h)
    left, right = fig.axes
    lines = {ln.get_label(): ln.get_ydata() for ln in left.get_lines()}
    assert np.allclose(lines["loss_D"][1:], 1.2) and np.isnan(lines["loss_D"][0])
    right_lines = {ln.get_label(): ln.get_ydata() for ln in right.get_lines()}
    assert np.allclose(right_lines["D(fake)"][1:], 0.4)
    assert right.get_ylim() == (0, 1)
    assert "real 0.600, fake 0.400" in right.get_title()


def test_quality_shows_coverage_frechet_and_its_floor():
    h = _history()
    fig = plot_gan_quality(h, accuracy=0.9)
    left, right = fig.axes
    assert left.get_lines()[0].get_ydata().tolist() == [1, 1, 3]
    floor = [ln for ln in right.get_lines() if "train vs test" in str(ln.get_label())]
    assert floor and np.allclose(floor[0].get_ydata(), 0.25)
    assert "not FID" in right.get_title()
    assert right.get_yscale() == "log"


def test_interpolation_labels_each_step_with_its_class():
    walk = Interpolation(alphas=np.array([0.0, 0.5, 1.0]),
                         images=np.zeros((3, 1, 2, 2)), predictions=np.array([1, 1, 2]),
                         confidences=np.array([0.9, 0.5, 0.99]), epoch=7)
    fig = plot_interpolation(walk)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "α=0.00\n1 0.90", "α=0.50\n1 0.50", "α=1.00\n2 0.99"]
    assert "epoch 7" in ax.get_title() and "changes 1×" in ax.get_title()


def test_nearest_training_pairs_and_distances():
    samples = np.full((2, 1, 2, 2), 0.5)
    neighbours = np.full((2, 1, 2, 2), -0.5)
    fig = plot_nearest_training(samples, neighbours, np.array([1.25, 2.5]), test_median=2.0)
    ax = fig.axes[0]
    mosaic = ax.images[0].get_array()
    assert np.allclose(mosaic[:2, :2], 0.5) and np.allclose(mosaic[3:5, :2], -0.5)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1.25", "2.50"]
    assert "median 2.00" in ax.get_title()


@pytest.mark.parametrize("fn", [plot_sample_grid, plot_interpolation])
def test_single_axes_figures_draw_into_a_given_axes(fn):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    if fn is plot_sample_grid:
        out = fn(np.zeros((2, 1, 2, 2)), ax=ax)
    else:
        out = fn(Interpolation(np.array([0.0, 1.0]), np.zeros((2, 1, 2, 2)),
                               np.array([0, 0]), np.array([1.0, 1.0]), 0), ax=ax)
    assert out is fig and ax.images
