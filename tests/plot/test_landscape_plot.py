"""Landscape figures: the arrays drawn, masks, markers, labels and captions."""

from __future__ import annotations

import numpy as np
import pytest

from shenjing.analysis.landscape.grid import Landscape, make_axis
from shenjing.plot.landscape import (
    caption,
    plot_contour,
    plot_hessian_density,
    plot_line,
    plot_sharpness_epochs,
    plot_surface,
    plot_trajectory,
    surface_plotly,
)

META = {"loss_name": "nll", "n_samples": 500, "bn_policy": "eval-mode running statistics",
        "directions": {"kind": "random", "seed": 3, "norm": "filter", "ignore": "biasbn"}}


def _line() -> Landscape:
    a = make_axis(-0.5, 1.5, 9, anchors=(0.0, 1.0))
    loss = (a - 1.0) ** 2 + 0.1
    acc = np.clip(a, 0, 1)
    done = np.ones_like(a, dtype=bool)
    done[-1] = False
    loss[-1] = np.nan
    loss[0] = np.inf  # a computed point whose loss overflowed
    return Landscape("line", (a,), loss, acc, done, np.array([1.0]), dict(META))


def _plane(traj: bool = False) -> Landscape:
    ax = make_axis(-1, 1, 11)
    X, Y = np.meshgrid(ax, ax, indexing="ij")
    loss = 1 + X ** 2 + 2 * Y ** 2
    done = np.ones_like(loss, dtype=bool)
    loss[0, 0] = np.nan  # NaN loss, computed
    extra = {}
    if traj:
        extra = {"trajectory": np.array([[0.8, 0.6], [0.3, 0.2], [0.0, 0.0]]),
                 "trajectory_epochs": np.array([0, 1, 2])}
    return Landscape("plane", (ax, ax.copy()), loss, np.full_like(loss, 0.9), done,
                     np.zeros(2), dict(META), **extra)


def test_line_figure_draws_loss_and_accuracy_on_two_axes():
    ls = _line()
    fig = plot_line(ls)
    ax, ax2 = fig.axes[0], fig.axes[1]
    (loss_line, *_) = ax.get_lines()
    np.testing.assert_array_equal(loss_line.get_xdata(), ls.axes[0])
    y = np.ma.masked_invalid(np.ma.asarray(loss_line.get_ydata()))
    assert np.ma.getmaskarray(y)[0] and np.ma.getmaskarray(y)[-1]  # Inf and not-done masked
    np.testing.assert_allclose(np.ma.compressed(y), ls.loss[1:-1])
    assert ax.get_ylabel() == "loss" and ax2.get_ylabel() == "accuracy"
    assert "α" in ax.get_xlabel()
    texts = [t.get_text() for t in ax.texts]
    assert "θ₀" in texts and "θ*" in texts
    assert {0.0, 1.0} <= {float(line.get_xdata()[0]) for line in ax.get_lines()[1:]}
    assert any("eval mode" in t.get_text() for t in fig.texts)


def test_contour_masks_nan_and_marks_centre_and_minimum():
    ls = _plane()
    fig = plot_contour(ls, filled=True, log=True)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert "θ*" in labels
    mins = [line for line in ax.get_lines() if line.get_label().startswith("min")]
    assert mins and (mins[0].get_xdata()[0], mins[0].get_ydata()[0]) == (0.0, 0.0)
    assert labels[-1] == "min 1"
    levels = ax.collections[0].levels if hasattr(ax.collections[0], "levels") else None
    if levels is not None:
        ratios = np.diff(np.log(levels))
        np.testing.assert_allclose(ratios, ratios[0], rtol=1e-6)  # log-spaced
    assert ax.get_xlabel() == "direction 1" and "filled contour" in ax.get_title()


def test_caption_states_policy_and_nonfinite_count():
    text = caption(_plane())
    assert "filter-normalized" in text and "seed 3" in text and "1 points with NaN" in text
    assert "dropout off" in text


def test_surface_and_plotly_surface_hold_the_grid():
    ls = _plane()
    fig = plot_surface(ls)
    assert fig.axes[0].get_zlabel() == "loss"
    pf = surface_plotly(ls)
    z = np.asarray(pf.data[0].z, dtype=float)
    np.testing.assert_array_equal(np.isnan(z), np.isnan(ls.loss.T))
    np.testing.assert_allclose(np.nan_to_num(z), np.nan_to_num(ls.loss.T))
    assert pf.layout.scene.xaxis.title.text == "direction 1"


def test_trajectory_figure_labels_epochs():
    ls = _plane(traj=True)
    fig = plot_trajectory(ls)
    ax = fig.axes[0]
    traj = next(line for line in ax.get_lines() if line.get_label() == "trajectory")
    np.testing.assert_array_equal(traj.get_xdata(), ls.trajectory[:, 0])
    from matplotlib.text import Annotation

    assert [t.get_text() for t in ax.texts if isinstance(t, Annotation)] == ["0", "1", "2"]
    pf = surface_plotly(ls)
    assert len(pf.data) == 2 and list(pf.data[1].text) == ["epoch 0", "epoch 1", "epoch 2"]
    with pytest.raises(ValueError, match="has no trajectory"):
        plot_trajectory(_plane())


def test_wrong_dimensionality_is_refused():
    with pytest.raises(ValueError, match="needs a 1-D landscape"):
        plot_line(_plane())
    with pytest.raises(ValueError, match="needs a 2-D landscape"):
        plot_contour(_line())


def test_hessian_density_and_sharpness_figures():
    grid = np.linspace(-1, 5, 50)
    dens = np.exp(-grid ** 2) + 1e-6
    fig = plot_hessian_density(grid, dens, top=[4.0, 3.0])
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), dens)
    assert ax.get_yscale() == "log"
    assert [float(line.get_xdata()[0]) for line in ax.get_lines()[1:]] == [4.0, 3.0]
    fig2 = plot_sharpness_epochs([0, 1, 2], [1.0, 5.0, 3.0])
    np.testing.assert_array_equal(fig2.axes[0].get_lines()[0].get_ydata(), [1.0, 5.0, 3.0])
    assert "λ_max" in fig2.axes[0].get_ylabel()
