"""Landscape figures: the arrays drawn, masks, markers, labels and captions."""

from __future__ import annotations

import numpy as np
import pytest

from shenjing.analysis.landscape.grid import Landscape, make_axis
from shenjing.plot.hessian import plot_hessian_density, plot_sharpness_epochs
from shenjing.plot.landscape import (
    caption,
    plot_contour,
    plot_line,
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


def _spiky_plane(n0: int, n1: int, span: tuple[float, float], peak: float) -> Landscape:
    """A dropout_cnn-like surface: a flat floor with loss rising steeply to ``peak``."""
    a0, a1 = make_axis(-span[0], span[0], n0), make_axis(-span[1], span[1], n1)
    X, Y = np.meshgrid(a0, a1, indexing="ij")
    r2 = (X / span[0]) ** 2 + (Y / span[1]) ** 2
    loss = 0.05 + peak * r2 ** 3
    done = np.ones_like(loss, dtype=bool)
    done[-1, :2] = False  # a corner not computed yet
    return Landscape("plane", (a0, a1), loss, np.full_like(loss, 0.5), done, np.zeros(2),
                     dict(META))


@pytest.mark.parametrize(("ls", "log"), [
    (_spiky_plane(21, 21, (1.0, 1.0), 40.0), False),
    (_spiky_plane(21, 21, (1.0, 1.0), 40.0), True),
    (_spiky_plane(5, 31, (0.2, 3.0), 1e4), False),
    (_spiky_plane(2, 2, (1.0, 1.0), 0.0), False),  # a flat surface: z-range not empty
    (_plane(traj=True), False),
])
def test_plotly_surface_camera_keeps_the_whole_surface_in_view(ls, log):
    import math

    pf = surface_plotly(ls, log=log)
    scene = pf.layout.scene
    assert scene.aspectmode == "manual"
    ar = np.array([scene.aspectratio.x, scene.aspectratio.y, scene.aspectratio.z])
    assert np.all(ar > 0) and max(ar[:2]) == pytest.approx(1.0)
    eye = np.array([scene.camera.eye.x, scene.camera.eye.y, scene.camera.eye.z])
    centre = np.array([scene.camera.center.x, scene.camera.center.y, scene.camera.center.z])
    np.testing.assert_array_equal(centre, 0.0)
    assert (scene.camera.up.x, scene.camera.up.y, scene.camera.up.z) == (0, 0, 1)
    assert eye[2] > 0  # seen from above the floor of the bowl
    # plotly draws the axis box as ±aspectratio/2 around the camera centre, with a 45°
    # vertical field of view: the box's bounding sphere must fit inside the view cone
    radius = 0.5 * float(np.linalg.norm(ar))
    distance = float(np.linalg.norm(eye - centre))
    assert radius / distance < math.sin(math.radians(45 / 2))
    # every drawn value lies inside the z-range (nothing is cut off at the top or bottom)
    lo, hi = scene.zaxis.range
    assert lo < hi
    for trace in pf.data:
        z = np.asarray(trace.z, dtype=float)
        z = z[np.isfinite(z)]
        assert lo <= z.min() and z.max() <= hi, trace.type
    # and the x/y ranges are the grid's own
    assert tuple(scene.xaxis.range) == (ls.axes[0][0], ls.axes[0][-1])
    assert tuple(scene.yaxis.range) == (ls.axes[1][0], ls.axes[1][-1])


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
