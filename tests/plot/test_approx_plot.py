"""Figures of the fitting study: the arrays drawn, titles, labels and limits."""

from __future__ import annotations

import numpy as np

from shenjing.plot.fit import (
    plot_decomposition,
    plot_fit,
    plot_fit_epochs,
    plot_fit_errors,
    plot_linear_regions,
)

X = np.linspace(-7, 7, 141)
TRUE = -X**2


def test_plot_fit_draws_every_curve_and_clips_polynomials():
    net = TRUE + 1.0
    poly = np.where(np.abs(X) > 5, 1e12, TRUE)
    errors = {"net": {"rmse_in": 1.0, "rmse_out": 1.0},
              "Lagrange (degree 9)": {"rmse_in": 0.0, "rmse_out": None}}
    fig = plot_fit(X, TRUE, net, polynomials={"Lagrange (degree 9)": poly},
                   x_train=X[20:121:10], y_train=TRUE[20:121:10], train_range=(-5, 5),
                   errors=errors, title="y = -x**2")
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["true function"].get_ydata(), TRUE)
    np.testing.assert_allclose(lines["net: RMSE in 1, out 1"].get_ydata(), net)
    assert "Lagrange (degree 9): RMSE in 0, out inf" in lines
    assert ax.get_title() == "y = -x**2 (polynomials clipped to the plot)"
    lo, hi = ax.get_ylim()
    assert lo < TRUE.min() and hi < 100  # fixed to the true function, not the 1e12 spike
    assert ax.get_xlabel() == "x" and ax.get_ylabel() == "y"
    assert len(ax.collections[-1].get_offsets()) == 11  # training points


def test_plot_fit_errors_log_scale():
    fig = plot_fit_errors(X, {"net": np.abs(X) + 1e-3, "poly": np.full_like(X, np.inf)},
                          train_range=(-5, 5))
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    ys = [line.get_ydata() for line in ax.get_lines()]
    np.testing.assert_allclose(ys[0], np.abs(X) + 1e-3)
    assert np.isnan(ys[1]).all()  # infinite errors are not drawn


def test_plot_decomposition_pieces_kinks_and_sums():
    w, b, v = np.array([1.0, -1.0, 0.0]), np.array([1.0, 2.0, -1.0]), np.array([2.0, 1.0, 5.0])
    pieces = v * np.maximum(X[:, None] * w + b, 0)
    kinks = np.array([-1.0, 2.0, np.nan])
    sums = np.vstack([np.full(X.size, 0.5), 0.5 + np.cumsum(pieces, axis=1).T])
    fig = plot_decomposition(X, pieces, kinks, sums, y_net=sums[-1], y_true=TRUE,
                             train_range=(-5, 5))
    top, bottom = fig.axes
    # unit 3 is never active (w = 0, b < 0): only two pieces, two kink ticks
    assert top.get_title().startswith("2 of 3 units contribute") and "2 kinks" in top.get_title()
    piece_lines = [line for line in top.get_lines() if line.get_marker() in ("None", "")]
    np.testing.assert_allclose(piece_lines[0].get_ydata(), pieces[:, 0])
    ticks = sorted(float(line.get_xdata()[0]) for line in top.get_lines()
                   if line.get_marker() == "|")
    assert ticks == [-1.0, 2.0]
    net_line = next(line for line in bottom.get_lines() if line.get_label() == "net output")
    np.testing.assert_allclose(net_line.get_ydata(), sums[-1])
    assert bottom.get_xlabel() == "x"


def test_plot_linear_regions_stairs():
    edges = np.array([-7.0, -1.0, 2.0, 7.0])
    slopes = np.array([1.0, 0.0, -2.0])
    fig = plot_linear_regions(X, TRUE, edges[1:-1], slopes, edges, y_true=TRUE,
                              train_range=(-5, 5))
    top, bottom = fig.axes
    assert top.get_title() == "3 linear regions on [-7, 7] (2 activation-pattern changes)"
    step = bottom.patches[0]
    np.testing.assert_allclose(step.get_data().values, slopes)
    np.testing.assert_allclose(step.get_data().edges, edges)
    assert bottom.get_ylabel() == "slope dy/dx"


def test_plot_fit_epochs_one_panel_per_epoch():
    ys = np.stack([TRUE * s for s in (0.0, 0.5, 1.0)])
    fig = plot_fit_epochs(X, TRUE, ys, [0, 5, 10], train_range=(-5, 5),
                          losses=[None, 2.0, 0.5], ncols=2)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["epoch 0", "epoch 5 · train MSE 2",
                                                  "epoch 10 · train MSE 0.5"]
    np.testing.assert_allclose(visible[1].get_lines()[1].get_ydata(), ys[1])
