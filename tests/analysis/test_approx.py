"""Polynomial baselines, errors, the ReLU decomposition and linear regions, checked against
independent computations (NumPy/SciPy polynomials, hand-set weights, the net itself)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from shenjing.analysis.fit import (
    fit_errors,
    in_range_mask,
    linear_regions,
    polynomial_fit,
    predict_1d,
    relu_decomposition,
)
from shenjing.errors import ShapeMismatchError, UnknownNameError, UsageError
from shenjing.models import build_model


def hand_net(w, b, v, c) -> nn.Module:
    net = build_model("curve_mlp", (1,), 1, hidden=len(w))
    with torch.no_grad():
        net.fc1.weight.copy_(torch.tensor(w, dtype=torch.float32).view(-1, 1))
        net.fc1.bias.copy_(torch.tensor(b, dtype=torch.float32))
        net.fc2.weight.copy_(torch.tensor(v, dtype=torch.float32).view(1, -1))
        net.fc2.bias.fill_(c)
    return net.eval()


# ---- polynomials ------------------------------------------------------------------------
def test_lagrange_interpolates_and_matches_scipy_lagrange():
    from scipy.interpolate import lagrange

    rng = np.random.default_rng(0)
    x = np.sort(rng.uniform(-2, 2, 7))
    y = rng.normal(size=7)
    p = polynomial_fit(x, y, method="lagrange")
    assert p.degree == 6 and p.label == "Lagrange (degree 6)"
    np.testing.assert_allclose(p(x), y, atol=1e-10)  # interpolates
    xe = np.linspace(-3, 3, 50)  # also beyond the nodes
    np.testing.assert_allclose(p(xe), np.polyval(lagrange(x, y).coeffs, xe), rtol=1e-7,
                               atol=1e-7)


def test_high_degree_lagrange_matches_exact_rational_arithmetic():
    """Degree 59 on equispaced points: compared with the interpolant computed exactly
    (``fractions.Fraction``), inside near the edges, between nodes, beyond the range."""
    from fractions import Fraction

    from shenjing.data.synthetic import curve_function

    x = np.linspace(-5, 5, 60)
    y = curve_function(x).astype(np.float32).astype(np.float64)
    p = polynomial_fit(x, y, method="lagrange")
    xs, ys = [Fraction(v) for v in x], [Fraction(v) for v in y]

    def exact(t: float) -> float:
        t = Fraction(t)
        total = Fraction(0)
        for j, (xj, yj) in enumerate(zip(xs, ys, strict=True)):
            term = yj
            for k, xk in enumerate(xs):
                if k != j:
                    term *= (t - xk) / (xj - xk)
            total += term
        return float(total)

    ts = np.array([-6.0, -4.97, 0.03, 4.93, 5.5])
    want = np.array([exact(t) for t in ts])
    assert abs(want[1]) > 1e6  # the edge oscillation is real, not rounding in our code
    np.testing.assert_allclose(p(ts), want, rtol=1e-6)
    np.testing.assert_allclose(p(x[[0, 17, 59]]), y[[0, 17, 59]])  # exactly at nodes


def test_lagrange_of_a_chosen_degree_uses_degree_plus_one_nodes():
    x = np.linspace(-5, 5, 100)
    cubic = 0.5 * x**3 - x + 2
    p = polynomial_fit(x, cubic, method="lagrange", degree=3)
    assert p.degree == 3 and len(p.x_nodes) == 4
    assert p.x_nodes[0] == -5 and p.x_nodes[-1] == 5
    xe = np.linspace(-7, 7, 31)
    np.testing.assert_allclose(p(xe), 0.5 * xe**3 - xe + 2, rtol=1e-10, atol=1e-9)


def test_chebyshev_least_squares_matches_numpy_polyfit():
    rng = np.random.default_rng(1)
    x = np.linspace(-5, 5, 60)
    y = np.sin(x) + 0.1 * rng.normal(size=x.size)
    p = polynomial_fit(x, y, method="chebyshev", degree=5)
    xe = np.linspace(-6, 6, 40)
    np.testing.assert_allclose(p(xe), np.polyval(np.polyfit(x, y, 5), xe), rtol=1e-8,
                               atol=1e-8)


def test_full_budget_lagrange_oscillates_at_the_edges():
    """Seed 001's claim, measured: degree 99 on 100 equispaced points blows up near ±5."""
    from shenjing.data.synthetic import curve_function

    x = np.linspace(-5, 5, 100)
    y = curve_function(x).astype(np.float32).astype(np.float64)
    p = polynomial_fit(x, y, method="lagrange")
    xe = np.linspace(-5, 5, 1001)
    err = np.abs(p(xe) - curve_function(xe))
    middle = np.abs(xe) < 2
    assert err[middle].max() < 1e-3
    assert err[~middle].max() > 1e3


@pytest.mark.parametrize(("kwargs", "exc", "match"), [
    ({"degree": 10}, UsageError, r"between 0 and 4 for 5 points \(got 10\)"),
    ({"method": "taylor"}, UnknownNameError, "taylor"),
])
def test_polynomial_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        polynomial_fit(np.arange(5.0), np.arange(5.0), **kwargs)


def test_polynomial_repeated_or_mismatched_points():
    with pytest.raises(UsageError, match="repeat"):
        polynomial_fit(np.array([0.0, 1.0, 1.0]), np.zeros(3))
    with pytest.raises(ShapeMismatchError, match="same length"):
        polynomial_fit(np.arange(3.0), np.arange(4.0))


# ---- errors --------------------------------------------------------------------------------
def test_fit_errors_by_hand():
    x = np.array([-6.0, -1.0, 0.0, 1.0, 6.0])
    true = np.zeros(5)
    pred = np.array([4.0, 1.0, -1.0, 1.0, -2.0])
    e = fit_errors(x, true, pred, (-1, 1))
    assert e.n_in == 3 and e.n_out == 2
    assert e.rmse_in == pytest.approx(1.0) and e.max_in == 1.0
    assert e.rmse_out == pytest.approx(np.sqrt((16 + 4) / 2)) and e.max_out == 4.0
    np.testing.assert_array_equal(in_range_mask(x, (-1, 1)), [False, True, True, True, False])
    assert fit_errors(x, true, np.full(5, np.inf), (-1, 1)).as_dict()["rmse_in"] is None


# ---- ReLU decomposition -----------------------------------------------------------------------
def test_decomposition_of_hand_set_net():
    w, b, v, c = [2.0, -1.0, 0.0], [1.0, 3.0, 0.5], [1.5, -2.0, 4.0], 0.25
    net = hand_net(w, b, v, c)
    dec = relu_decomposition(net)
    np.testing.assert_allclose(dec.kinks[:2], [-0.5, 3.0])
    assert np.isnan(dec.kinks[2])  # w = 0: the unit is constant, no kink
    x = np.array([-2.0, 0.0, 1.0, 4.0])
    expected = np.stack([1.5 * np.maximum(2 * x + 1, 0), -2.0 * np.maximum(-x + 3, 0),
                         4.0 * np.maximum(0.5 + 0 * x, 0)], axis=1)
    np.testing.assert_allclose(dec.pieces(x), expected, atol=1e-6)
    np.testing.assert_allclose(dec.output(x), expected.sum(1) + 0.25, atol=1e-6)
    sums = dec.partial_sums(x)
    assert sums.shape == (4, 4)
    np.testing.assert_allclose(sums[0], 0.25)
    np.testing.assert_allclose(sums[-1], dec.output(x))
    np.testing.assert_array_equal(dec.kink_order(), [0, 1, 2])


def test_decomposition_sum_equals_net_output_to_1e_5():
    """Acceptance: the sum of the pieces is the net's output (64 units, seed-like scale)."""
    torch.manual_seed(3)
    net = build_model("curve_mlp", (1,), 1, hidden=64).eval()
    with torch.no_grad():
        net.fc2.weight.mul_(20.0)
    dec = relu_decomposition(net)
    x = np.linspace(-7, 7, 1401)
    y32 = predict_1d(net, x)
    y64 = predict_1d(net, x, dtype=torch.float64)
    assert np.max(np.abs(dec.output(x) - y64)) < 1e-10
    assert np.max(np.abs(dec.output(x) - y32)) < 1e-5
    assert np.max(np.abs(dec.partial_sums(x)[-1] - y32)) < 1e-5


def test_decomposition_refuses_deep_or_non_relu_nets():
    deep = build_model("curve_mlp", (1,), 1, hidden=8, depth=2)
    with pytest.raises(UsageError, match="one hidden layer.*this one has 3.*linear_regions"):
        relu_decomposition(deep)
    tanh = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))
    with pytest.raises(UsageError, match=r"not c \+ Σ v·relu"):
        relu_decomposition(tanh)
    wide = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1))
    with pytest.raises(ShapeMismatchError, match=r"Linear\(1, h\)"):
        relu_decomposition(wide)


# ---- linear regions -------------------------------------------------------------------------
def test_regions_of_one_hidden_layer_are_its_kinks():
    torch.manual_seed(0)
    net = build_model("curve_mlp", (1,), 1, hidden=32).eval()
    dec = relu_decomposition(net)
    regions = linear_regions(net, -4, 4)
    k = np.sort(dec.kinks[np.isfinite(dec.kinks) & (np.abs(dec.kinks) < 4)])
    assert regions.n_regions == k.size + 1
    np.testing.assert_allclose(regions.boundaries, k, atol=1e-7)


def test_regions_describe_a_deep_net_exactly():
    torch.manual_seed(1)
    net = build_model("curve_mlp", (1,), 1, hidden=16, depth=3).eval()
    regions = linear_regions(net, -6, 6)
    assert regions.patterns.shape == (regions.n_regions, 48)
    assert regions.units_per_layer == {"relu1": 16, "relu2": 16, "relu3": 16}
    x = np.linspace(-6, 6, 5001)
    np.testing.assert_allclose(regions.evaluate(x), predict_1d(net, x, dtype=torch.float64),
                               atol=1e-9)
    # consecutive regions differ in their activation pattern
    assert (regions.patterns[1:] != regions.patterns[:-1]).any(axis=1).all()


def test_two_changes_in_one_grid_cell_are_both_found():
    net = hand_net([1.0, 1.0], [-0.1, -0.1001], [1.0, 1.0], 0.0)
    regions = linear_regions(net, -1, 1, n_grid=5)
    np.testing.assert_allclose(regions.boundaries, [0.1, 0.1001], atol=1e-7)
    np.testing.assert_allclose(regions.slopes, [0.0, 1.0, 2.0], atol=1e-6)


def test_predict_1d_needs_scalar_output():
    with pytest.raises(ShapeMismatchError, match=r"returned \(3, 2\)"):
        predict_1d(nn.Linear(1, 2), np.zeros(3))
    with pytest.raises(UsageError, match="lo < hi"):
        linear_regions(nn.Linear(1, 1), 1, 0)
