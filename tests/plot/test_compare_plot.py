"""The comparison's figures: one colour scale and the same axes for every run's plane, and
the numbers they were given drawn (bars, lines, CKA cells)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import QuadMesh

from shenjing.plot.compare import (
    plot_cka_layers,
    plot_compared_curves,
    plot_compared_dynamics,
    plot_compared_lines,
    plot_compared_planes,
    plot_compared_probes,
    plot_compared_sharpness,
)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _plane(scale: float, lo: float = -1.0, hi: float = 1.0, n: int = 11) -> dict:
    a = np.linspace(lo, hi, n)
    return {"axes": (a, a), "loss": 0.05 + scale * (a[:, None] ** 2 + a[None, :] ** 2),
            "level": 0.05 + 0.5}


def test_planes_share_one_colour_scale_and_the_same_axes():
    planes = {"adam": _plane(1.0), "sgd": _plane(8.0, -0.5, 0.5, 7)}
    fig = plot_compared_planes(planes, vmin=0.05, vmax=16.05)
    panels = [ax for ax in fig.axes if ax.get_title() in planes]
    meshes = [c for ax in panels for c in ax.collections if isinstance(c, QuadMesh)]
    assert len(meshes) == 2
    assert {m.norm.vmin for m in meshes} == {0.05} and {m.norm.vmax for m in meshes} == {16.05}
    assert meshes[0].norm is meshes[1].norm  # literally one scale, the colour bar's too
    assert [ax.get_title() for ax in panels] == ["adam", "sgd"]
    assert panels[0].get_xlim() == panels[1].get_xlim() == (-1.0, 1.0)
    assert panels[0].get_ylim() == panels[1].get_ylim() == (-1.0, 1.0)
    bars = [ax for ax in fig.axes if ax not in panels]
    assert len(bars) == 1 and "one scale" in bars[0].get_ylabel()
    # the data drawn are the losses given (rows of the grid along x)
    np.testing.assert_allclose(np.asarray(meshes[1].get_array()).reshape(7, 7),
                               planes["sgd"]["loss"].T)


def test_lines_are_on_one_axis_with_their_values():
    alpha = np.linspace(-0.5, 1.5, 9)
    lines = {"a": (alpha, np.linspace(2, 0.1, 9)), "b": (alpha, np.linspace(2, 0.3, 9))}
    fig = plot_compared_lines(lines)
    (ax,) = fig.axes
    drawn = [ln for ln in ax.get_lines() if ln.get_label() in lines]
    assert [ln.get_label() for ln in drawn] == ["a", "b"]
    np.testing.assert_allclose(drawn[1].get_ydata(), lines["b"][1])
    assert ax.get_yscale() == "log"


def test_sharpness_bars_show_the_values():
    fig = plot_compared_sharpness({"a": 5.0, "b": 2.5}, {"a": (20.0, 2.0), "b": (10.0, 1.0)},
                                  {"a": ([0, 1], [1.0, 5.0]), "b": ([0, 1], [1.0, 2.5])})
    assert len(fig.axes) == 3
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == [5.0, 2.5]
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert labels == ["5", "2.5"]
    assert [p.get_height() for p in fig.axes[1].patches] == [20.0, 10.0]


def test_cka_map_cells_are_labelled_on_a_fixed_scale():
    m = np.array([[1.0, 0.25], [0.5, 0.75]])
    fig = plot_cka_layers(m, ["fc1", "fc2"], ["x", "y"], title="t")
    ax = fig.axes[0]
    image = ax.get_images()[0]
    assert image.get_clim() == (0.0, 1.0)
    np.testing.assert_allclose(image.get_array(), m)
    assert sorted(t.get_text() for t in ax.texts) == ["0.25", "0.50", "0.75", "1.00"]


def test_curves_dynamics_and_probes_draw_every_run():
    curves = {"a": {"epoch": [0, 1, 2], "train_loss": [None, 1.0, 0.5],
                    "test_loss": [2.0, 0.9, 0.6], "test_accuracy": [0.1, 0.7, 0.8]},
              "b": {"epoch": [0, 1], "train_loss": [None, 1.2], "test_loss": [2.0, 1.0],
                    "test_accuracy": [0.1, 0.6]}}
    fig = plot_compared_curves(curves)
    assert len(fig.axes) == 2
    acc = [ln for ln in fig.axes[1].get_lines()]
    np.testing.assert_allclose(acc[0].get_ydata(), [0.1, 0.7, 0.8])
    dyn = {"a": {"fc1": {"epoch": [1, 2], "update_ratio": [0.5, 0.2], "grad_norm": [1, 2]}},
           "b": {"fc1": {"epoch": [1, 2], "update_ratio": [0.4, 0.1], "grad_norm": [3, 4]}}}
    fig = plot_compared_dynamics(dyn, ["fc1"])
    assert fig.axes[0].get_title() == "fc1"
    np.testing.assert_allclose(fig.axes[1].get_lines()[1].get_ydata(), [3, 4])
    fig = plot_compared_probes({"a": {"fc1": 0.9, "fc2": 0.95}, "b": {"fc1": 0.8}},
                               ["fc1", "fc2"], chance=0.1)
    lines = fig.axes[0].get_lines()
    np.testing.assert_allclose(lines[0].get_ydata(), [0.9, 0.95])
    assert np.isnan(lines[1].get_ydata()[1])


def test_the_interactive_planes_share_one_colour_axis_and_ranges():
    from shenjing.plot.compare import planes_plotly

    planes = {"adam": _plane(1.0), "sgd<b>": _plane(8.0, -0.5, 0.5, 7)}
    fig = planes_plotly(planes, vmin=0.05, vmax=16.05)
    assert [t.coloraxis for t in fig.data] == ["coloraxis", "coloraxis"]
    assert fig.layout.coloraxis.cmin == pytest.approx(np.log10(0.05))
    assert fig.layout.coloraxis.cmax == pytest.approx(np.log10(16.05))
    assert fig.layout.xaxis.range == fig.layout.xaxis2.range == (-1.0, 1.0)
    np.testing.assert_allclose(np.array(fig.data[1].z, dtype=float),
                               np.log10(planes["sgd<b>"]["loss"]).T)
    assert "sgd&lt;b&gt;" in fig.data[1].hovertemplate
    assert fig.layout.annotations[1].text == "sgd&lt;b&gt;"
