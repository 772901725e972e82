"""A minimum's width and depth (shenjing.analysis.compare) against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shenjing.analysis.compare import (
    area_below_level,
    basin_summary,
    border_mean,
    common_color_range,
    common_level,
    line_barrier,
)
from shenjing.errors import UsageError


def _grid(n: int, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    return np.linspace(lo, hi, n)


@pytest.mark.parametrize("a, b, level", [(1.0, 1.0, 0.25), (2.0, 0.5, 0.3), (4.0, 1.0, 0.5)])
def test_the_area_of_a_quadratic_bowl_is_the_ellipse_area(a, b, level):
    """loss = a·x² + b·y² ≤ L is an ellipse of area π·L/√(ab) (inside the plane here)."""
    x = _grid(41)
    loss = a * x[:, None] ** 2 + b * x[None, :] ** 2
    exact = math.pi * level / math.sqrt(a * b)
    assert area_below_level(loss, (x, x), level) == pytest.approx(exact, rel=0.02)


def test_the_area_of_a_coarse_grid_matches_a_dense_direct_count():
    """A 21×21 grid of a smooth non-quadratic surface, refined by interpolation, against
    the same function evaluated and counted directly on a 2001×2001 grid."""
    def f(x, y):
        return 0.2 + x ** 2 + 0.5 * y ** 2 + 0.3 * x * y + 0.4 * np.sin(3 * x) ** 2

    coarse = _grid(21)
    fine = _grid(2001)
    level = 0.8
    direct = (f(fine[:, None], fine[None, :]) <= level).mean() * 4.0
    got = area_below_level(f(coarse[:, None], coarse[None, :]), (coarse, coarse), level)
    assert got == pytest.approx(direct, rel=0.03)


def test_only_the_basin_connected_to_the_centre_counts():
    """Two equal discs of radius r: the one around θ* counts, the far one only when asked."""
    x = _grid(101, -2.0, 2.0)
    X, Y = x[:, None], x[None, :]
    loss = np.minimum(X ** 2 + Y ** 2, (X - 1.4) ** 2 + Y ** 2 + 0.0)
    # a ridge between them, so the two regions below the level do not touch
    level = 0.16  # radius 0.4 each; the discs are 1.4 apart
    one = math.pi * level
    assert area_below_level(loss, (x, x), level) == pytest.approx(one, rel=0.03)
    assert area_below_level(loss, (x, x), level, connected=False) == pytest.approx(
        2 * one, rel=0.03)


def test_non_finite_and_missing_points_are_above_every_level():
    x = _grid(21)
    loss = x[:, None] ** 2 + x[None, :] ** 2
    holed = loss.copy()
    holed[holed > 0.5] = np.nan  # the outside of the level not computed: same area
    assert area_below_level(holed, (x, x), 0.3) == pytest.approx(
        area_below_level(loss, (x, x), 0.3), rel=1e-9)
    blown = loss.copy()
    blown[10, 10] = np.inf  # θ* itself diverged: no basin
    assert area_below_level(blown, (x, x), 0.3) == 0.0


def test_a_level_above_the_whole_plane_gives_the_whole_plane():
    x = _grid(11, -0.5, 1.5)
    y = _grid(7, -1.0, 1.0)
    loss = np.ones((11, 7))
    assert area_below_level(loss, (x, y), 2.0) == pytest.approx(2.0 * 2.0)


def test_basin_summary_numbers():
    x = _grid(41)
    loss = 0.1 + x[:, None] ** 2 + x[None, :] ** 2
    b = basin_summary(loss, (x, x), delta=0.25, common_level=0.5)
    assert b.center_loss == pytest.approx(0.1)
    assert b.level == pytest.approx(0.35)
    assert b.area == pytest.approx(math.pi * 0.25, rel=0.02)
    assert b.area_common == pytest.approx(math.pi * 0.4, rel=0.02)
    assert b.fraction == pytest.approx(b.area / 4.0)
    ring = np.concatenate([loss[0], loss[-1], loss[1:-1, 0], loss[1:-1, -1]])
    assert b.border_loss == pytest.approx(ring.mean())
    assert b.depth == pytest.approx(ring.mean() - 0.1)
    assert border_mean(loss) == pytest.approx(ring.mean())


def test_common_level_and_colour_range():
    assert common_level([0.1, 0.3, float("nan")], 0.5) == pytest.approx(0.8)
    lo, hi = common_color_range([np.array([[0.2, 3.0]]), np.array([[np.nan, 0.05, 7.0]])])
    assert (lo, hi) == (0.05, 7.0)


def test_line_barrier():
    alpha = np.linspace(-0.5, 1.5, 9)  # 0 and 1 on the axis
    loss = np.array([3.0, 2.6, 2.3, 2.9, 1.0, 0.6, 0.2, 0.4, 0.9])
    out = line_barrier(alpha, loss)
    assert out["loss_start"] == 2.3 and out["loss_end"] == 0.2
    assert out["barrier"] == pytest.approx(0.6)  # 2.9 − max(2.3, 0.2)


def test_bad_planes_are_refused():
    x = _grid(5)
    with pytest.raises(UsageError, match="does not match the axes"):
        area_below_level(np.zeros((5, 4)), (x, x), 1.0)
    with pytest.raises(UsageError, match="finite loss value"):
        area_below_level(np.zeros((5, 5)), (x, x), float("nan"))
    with pytest.raises(UsageError, match="delta must be"):
        basin_summary(np.zeros((5, 5)), (x, x), delta=0.0, common_level=1.0)
    with pytest.raises(UsageError, match="not computed"):
        basin_summary(np.full((5, 5), np.nan), (x, x), delta=0.1, common_level=1.0)
