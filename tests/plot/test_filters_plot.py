"""Filter figures: RGB/grey kernels, the capped kernel grid, unit images, Conv1d kernels as
line plots, and the across-epochs view, which fits its figure for 1 to 200 filters/epochs."""

from __future__ import annotations

import numpy as np
import pytest

from shenjing.analysis.filters import (
    Filters,
    kernel_grid,
    kernel_signals,
    reference_change,
    rgb_filters,
    unit_images,
)
from shenjing.errors import ShapeMismatchError, UsageError
from shenjing.plot.filters import (
    UPSAMPLE,
    kernel_strip,
    plot_filters,
    plot_filters_over_epochs,
    plot_kernel_grid,
    plot_kernel_signals,
    plot_unit_images,
)


def by_label(fig):
    return {ax.get_label(): ax for ax in fig.axes}


def test_rgb_first_layer_is_drawn_in_colour():
    rng = np.random.default_rng(0)
    f = Filters("features.0", rng.normal(size=(10, 3, 3, 3)), epoch=0)
    fig = plot_filters(f, max_filters=6)
    axes = by_label(fig)
    assert sorted(k for k in axes if k.startswith("filter")) == [f"filter {i}" for i in range(6)]
    np.testing.assert_allclose(axes["filter 4"].images[0].get_array(),
                               rgb_filters(f.weight, "filter")[4])
    title = fig._suptitle.get_text()
    assert "features.0 filters (10×3×3×3, epoch 0 (untrained))" in title
    assert "first 6 of 10 filters, RGB colour" in title
    shared = plot_filters(f, max_filters=6, scale="shared")
    bound = np.abs(f.weight).max()
    np.testing.assert_allclose(by_label(shared)["filter 0"].images[0].get_array(),
                               0.5 + 0.5 * f.weight[0].transpose(1, 2, 0) / bound)


def test_grey_kernels_and_refusals():
    w = np.zeros((4, 1, 3, 3))
    w[1, 0, 1, 1] = -2.0
    fig = plot_filters(Filters("conv1", w))
    ax = by_label(fig)["filter 1"]
    assert ax.images[0].get_cmap().name == "RdBu_r"
    expected = np.full((3, 3), 0.5)
    expected[1, 1] = 0.0
    np.testing.assert_allclose(ax.images[0].get_array(), expected)
    with pytest.raises(ShapeMismatchError, match="use plot_kernel_grid"):
        plot_filters(Filters("conv2", np.zeros((4, 8, 3, 3))))
    with pytest.raises(ShapeMismatchError, match="plot_unit_images"):
        plot_filters(Filters("fc1", np.zeros((4, 8))))


def test_kernel_grid_is_capped_and_labelled():
    rng = np.random.default_rng(1)
    f = Filters("conv2", rng.normal(size=(20, 12, 3, 3)), epoch=3)
    fig = plot_kernel_grid(f, max_out=4, max_in=5)
    grid = kernel_grid(f, max_out=4, max_in=5)
    axes = by_label(fig)
    assert len([k for k in axes if k.startswith("out ")]) == 20
    o, i = grid.outs[2], grid.ins[3]
    np.testing.assert_allclose(axes[f"out {o} in {i}"].images[0].get_array(),
                               grid.images[2, 3])
    title = fig._suptitle.get_text()
    assert "4 of 20 outputs × 5 of 12 inputs" in title and "epoch 3" in title
    assert fig._supxlabel.get_text() == "input channel"
    assert fig._supylabel.get_text() == "output channel"


def test_unit_images_show_what_units_look_at():
    w = np.random.default_rng(2).normal(size=(5, 64))
    imgs = unit_images(Filters("fc1", w), (1, 8, 8))
    fig = plot_unit_images(imgs, layer="fc1", epoch=4)
    axes = by_label(fig)
    np.testing.assert_allclose(axes["unit 3"].images[0].get_array(), imgs[3])
    assert "5 units as 8×8 images, epoch 4" in fig._suptitle.get_text()


def test_filters_over_epochs_share_a_scale_per_filter():
    a = np.ones((3, 1, 2, 2))
    b = 3 * np.ones((3, 1, 2, 2))
    fig = plot_filters_over_epochs([Filters("conv1", a, 0), Filters("conv1", b, 5)])
    axes = by_label(fig)
    strip = axes["filter 1"].images[0].get_array()
    u = UPSAMPLE
    assert strip.shape == (2 * u, 2 * (2 * u) + 1)           # two kernels and a 1-pixel gap
    np.testing.assert_allclose(strip[:, : 2 * u], 0.5 + 0.5 / 3)   # epoch 0: 1 of max 3
    np.testing.assert_allclose(strip[:, 2 * u + 1:], 1.0)          # epoch 5: the max
    assert np.ma.getmaskarray(strip)[:, 2 * u].all()               # the gap is not drawn
    assert axes["filter 1"].get_title() == "1 · Δ 200%"
    with pytest.raises(ShapeMismatchError, match="one shape across epochs"):
        plot_filters_over_epochs([Filters("conv1", a, 0), Filters("conv1", a[:2], 1)])


def test_kernel_strip_keeps_rgb_and_makes_gaps_transparent():
    kernels = np.random.default_rng(0).random((3, 2, 2, 3))
    strip = kernel_strip(kernels, rgb=True, upsample=1)
    assert strip.shape == (2, 3 * 2 + 2, 4)
    np.testing.assert_allclose(strip[:, 3:5, :3], kernels[1])
    np.testing.assert_array_equal(strip[:, [2, 5], 3], 0.0)
    np.testing.assert_array_equal(strip[:, [0, 1, 3, 4, 6, 7], 3], 1.0)


def _fits(fig) -> list[str]:
    """Labels of the drawn artists (axes, legend, title) that stick out of the figure."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    out = []
    parts = [(ax.get_label(), ax.get_tightbbox(renderer)) for ax in fig.axes if ax.get_visible()]
    parts.append(("title", fig._suptitle.get_window_extent(renderer)))
    parts += [(f"legend {i}", leg.get_window_extent(renderer))
              for i, leg in enumerate(fig.legends)]
    for label, ext in parts:
        if ext.x0 < box.x0 - 1 or ext.x1 > box.x1 + 1 or ext.y0 < box.y0 - 1 or \
                ext.y1 > box.y1 + 1:
            out.append(label)
    return out


def _overlapping_cells(fig) -> list[tuple[str, str]]:
    cells = [ax for ax in fig.axes if ax.get_label().startswith("filter ")]
    boxes = [(ax.get_label(), ax.get_position()) for ax in cells]
    return [(a, b) for i, (a, p) in enumerate(boxes) for b, q in boxes[i + 1:]
            if p.x0 < q.x1 - 1e-9 and q.x0 < p.x1 - 1e-9 and p.y0 < q.y1 - 1e-9
            and q.y0 < p.y1 - 1e-9]


@pytest.mark.parametrize(("n_filters", "n_epochs", "shape"), [
    (1, 1, (1, 3, 3)), (32, 2, (1, 3, 3)), (32, 2, (3, 5, 5)), (7, 200, (1, 3, 3)),
    (200, 1, (8, 11, 11)), (200, 200, (3, 7, 7)), (32, 2, (1, 5)), (200, 200, (8, 9)),
])
def test_filters_over_epochs_fit_the_figure_from_1_to_200(n_filters, n_epochs, shape):
    """Issue 12, item 11: 32 filters × 2 epochs was one very tall column (a 16 × 2 grid in a
    3.0 × 15.4 inch figure); now a grid with a readable aspect, capped, legend outside."""
    rng = np.random.default_rng(n_filters + n_epochs)
    w0 = rng.normal(size=(n_filters, *shape))
    history = [Filters("conv1", w0 * (1 + 0.01 * e) + 0.001 * e, e) for e in range(n_epochs)]
    fig = plot_filters_over_epochs(history)
    width, height = fig.get_size_inches()
    assert width <= 16 and height <= 12                            # inches, as the issue asks
    assert 0.2 <= height / width <= 1.3, (width, height)           # never a tall column
    assert _fits(fig) == []
    assert _overlapping_cells(fig) == []
    cells = [ax for ax in fig.axes if ax.get_label().startswith("filter ")]
    assert len(cells) == min(n_filters, 32)
    title = fig._suptitle.get_text()
    if n_filters > 32:
        assert f"32 of {n_filters} filters, most changed first" in title
        change = reference_change(history[0], history[-1])
        top = np.argsort(-change, kind="stable")[:32]
        assert [ax.get_label() for ax in cells] == [f"filter {i}" for i in top]
    if n_epochs > 8:
        assert f"8 of {n_epochs} epochs" in title
    assert "legend" in by_label(fig)


def test_kernel_signals_are_line_plots_with_the_reference_dashed():
    rng = np.random.default_rng(6)
    before = rng.normal(size=(20, 3, 5))
    after = before + rng.normal(scale=0.3, size=before.shape)
    after[7] *= 4
    fig = plot_kernel_signals(Filters("conv", after, 9), reference=Filters("conv", before, 0),
                              max_out=4, max_in=2)
    ks = kernel_signals(Filters("conv", after, 9), Filters("conv", before, 0), max_out=4,
                        max_in=2)
    axes = by_label(fig)
    assert ks.outs[0] == 7
    o, i = ks.outs[0], ks.ins[1]
    ax = axes[f"out {o}"]
    lines = {line.get_gid(): line for line in ax.lines}
    ref_line, line = lines[f"in {i} epoch 0"], lines[f"in {i} epoch 9"]
    np.testing.assert_allclose(ref_line.get_ydata(), before[o, i])
    np.testing.assert_allclose(line.get_ydata(), after[o, i])
    np.testing.assert_allclose(line.get_xdata(), np.arange(5) + 6)  # second input's slot
    assert ref_line.get_linestyle() == "--"
    assert ax.get_ylim() == pytest.approx((-1.08 * ks.bound, 1.08 * ks.bound))
    assert ax.get_ylabel() == f"out {o} · Δ {ks.change[0]:.0%}"
    assert [t.get_text() for t in axes[f"out {ks.outs[-1]}"].get_xticklabels()] == \
        [f"in {j}" for j in ks.ins]
    assert len([a for a in fig.axes if a.get_label().startswith("out ")]) == 4
    title = fig._suptitle.get_text()
    assert "4 of 20 filters × 2 of 3 inputs, most changed since epoch 0 first" in title
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["epoch 0", "epoch 9"]
    assert _fits(fig) == []


def test_single_input_conv1d_kernels_tile_in_a_grid_not_a_column():
    w = np.random.default_rng(7).normal(size=(16, 1, 5))
    fig = plot_kernel_signals(Filters("features.0", w, 3), max_out=16)
    shown = [ax for ax in fig.axes if ax.get_label().startswith("out ")]
    assert len(shown) == 16
    rows = {round(ax.get_position().y0, 3) for ax in shown}
    assert len(rows) == 4                                        # a 4 × 4 grid
    w_in, h_in = fig.get_size_inches()
    assert w_in <= 16 and h_in <= 12
    with pytest.raises(UsageError, match="max_out and max_in must be ≥ 1"):
        plot_kernel_signals(Filters("features.0", w), max_out=0)
