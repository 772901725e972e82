"""Every dynamics and weights figure stays readable from 1 to 200 parameter groups and from
1 to 151 epochs: what is drawn fits inside the figure, the layout engine is never
overwhelmed (its warning is an error here), labels do not overlap, and the size is bounded.

The models are generated: ``deep_mlp(100)`` has 100 Linear layers, so 200 parameter groups
(weights and biases) — the upper end of the range the figures promise."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from shenjing.analysis.dynamics import layer_status, read_dynamics
from shenjing.analysis.weights import weight_history
from shenjing.plot.dynamics import plot_layer_dynamics, plot_layer_status, plot_training_curves
from shenjing.plot.weights import plot_weight_histograms, plot_weight_stats
from shenjing.training.stats import group_parameters

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))  # tests/: user_models
from user_models import deep_mlp  # noqa: E402

MAX_INCHES = (16.0, 20.0)
MIN_FONT_PT = 5.5


def synthetic_records(model: torch.nn.Module, n_epochs: int) -> list[dict]:
    """Metrics lines in the Recorder's format for ``model``'s parameter groups, with update
    ratios that decay at layer-dependent rates, a few vanishing gradients, dead units."""
    groups = group_parameters(model)
    names = [g.name for g in groups.groups]
    relus = [n for n, m in model.named_modules() if isinstance(m, torch.nn.ReLU)]
    records = []
    for e in range(n_epochs):
        layers = {}
        for i, name in enumerate(names):
            rate = 0.3 + 2.0 * i / max(len(names), 1)
            layers[name] = {
                "weight_norm": 1.0 + 0.01 * e * (i + 1),
                "update_ratio": None if e == 0 else 0.2 / e ** rate,
                "dist_from_init": 0.05 * e, "cos_to_init": 1.0 - 0.001 * e,
                "grad_norm": None if e == 0 else (1e-8 if i % 17 == 3 else 0.1 + 0.01 * i)}
        rec = {"epoch": e, "train_loss": None if e == 0 else 1.0 / e,
               "test_loss": 2.0 / (e + 1), "train_accuracy": None if e == 0 else 0.5,
               "test_accuracy": 0.1 + 0.8 * e / max(n_epochs, 1), "lr": 1e-3, "steps": e,
               "layers": layers, "dead_units": {r: 0.6 if j % 9 == 0 else 0.1
                                                for j, r in enumerate(relus)}}
        if e == 0:
            rec["params"] = groups.to_record()
        records.append(rec)
    return records


def synthetic_states(model: torch.nn.Module, n_epochs: int) -> dict[int, dict]:
    gen = torch.Generator().manual_seed(0)
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {e: {k: v * (1 + 0.1 * e) + 0.01 * e * torch.randn(v.shape, generator=gen)
                for k, v in base.items()} for e in range(n_epochs)}


def inside(box, fig_box, what: str, tol: float = 1.0) -> None:
    assert box.x0 >= fig_box.x0 - tol and box.y0 >= fig_box.y0 - tol, \
        f"{what} sticks out at the left/bottom: {box} not in {fig_box}"
    assert box.x1 <= fig_box.x1 + tol and box.y1 <= fig_box.y1 + tol, \
        f"{what} sticks out at the right/top: {box} not in {fig_box}"


def overlapping(boxes) -> list[tuple[int, int]]:
    return [(i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes))
            if boxes[i].overlaps(boxes[j]) and
            min(boxes[i].y1, boxes[j].y1) - max(boxes[i].y0, boxes[j].y0) > 0.5 and
            min(boxes[i].x1, boxes[j].x1) - max(boxes[i].x0, boxes[j].x0) > 0.5]


def check_readable(fig) -> None:
    """Check every drawn thing (the figure is drawn already) against the figure's box,
    fonts and overlaps."""
    from matplotlib.text import Text

    width, height = fig.get_size_inches()
    assert width <= MAX_INCHES[0] and height <= MAX_INCHES[1], (width, height)
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    for ax in fig.axes:
        if ax.get_visible():
            inside(ax.get_tightbbox(renderer), box, f"axes {ax.get_label()!r}")
            for axis in (ax.xaxis, ax.yaxis):
                labels = [t for t in axis.get_ticklabels() if t.get_visible() and t.get_text()
                          and box.overlaps(t.get_window_extent(renderer))]
                boxes = [t.get_window_extent(renderer) for t in labels]
                assert not overlapping(boxes), \
                    f"tick labels overlap on {ax.get_label()!r}: {[t.get_text() for t in labels]}"
    figure_texts = [t for t in (*fig.texts, fig._suptitle, fig._supxlabel, fig._supylabel)
                    if t is not None and t.get_visible() and t.get_text().strip()]
    for legend in fig.legends:
        leg = legend.get_window_extent(renderer)
        inside(leg, box, "figure legend")
        for ax in fig.axes:
            if ax.get_visible() and ax.get_label() != "<colorbar>":
                assert not leg.overlaps(ax.bbox), f"the legend covers axes {ax.get_label()!r}"
        for t in figure_texts:  # e.g. the warnings line under the status heat map
            assert not overlapping([leg, t.get_window_extent(renderer)]), \
                f"the legend covers the text {t.get_text()[:40]!r}"
    for ax in fig.axes:
        for legend in [ax.get_legend()] if ax.get_legend() is not None else []:
            inside(legend.get_window_extent(renderer), box, "axes legend")
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()
             and t.get_window_extent(renderer).width > 0]
    for t in texts:
        if t.figure is fig and t in [*fig.texts, fig._suptitle, fig._supxlabel, fig._supylabel]:
            inside(t.get_window_extent(renderer), box, f"text {t.get_text()[:40]!r}")
        assert t.get_fontsize() >= MIN_FONT_PT, f"{t.get_text()[:40]!r} is {t.get_fontsize()} pt"


def draw_strictly(make):
    """Build and draw the figure with every warning (constrained_layout not applied…) an
    error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = make()
        fig.canvas.draw()
    return fig


# 1 group pair; 200 groups; 200 groups over 151 epochs (the spirals run's length); 40 groups
# (past the legend's limit: the colour-bar branch at a middle size)
CASES = [(1, 4), (100, 6), (100, 151), (20, 30)]


@pytest.mark.parametrize(("n_layers", "n_epochs"), CASES)
def test_dynamics_figures_fit(n_layers, n_epochs):
    model = deep_mlp(n_layers)
    dyn = read_dynamics(synthetic_records(model, n_epochs))
    assert len(dyn.layers) == 2 * n_layers
    status = layer_status(dyn)
    for make in (lambda: plot_training_curves(dyn), lambda: plot_layer_dynamics(dyn),
                 lambda: plot_layer_status(dyn, status)):
        check_readable(draw_strictly(make))


@pytest.mark.parametrize(("n_layers", "n_epochs"), [(1, 3), (100, 13)])
def test_weight_figures_fit(n_layers, n_epochs):
    model = deep_mlp(n_layers)
    history = weight_history(synthetic_states(model, n_epochs),
                             groups=group_parameters(model).mapping(), bins=20)
    assert len(history.layers) == 2 * n_layers
    check_readable(draw_strictly(lambda: plot_weight_histograms(history)))
    check_readable(draw_strictly(lambda: plot_weight_stats(history)))


def test_many_layers_status_shows_every_layer_and_labels_a_stated_share():
    model = deep_mlp(100)
    dyn = read_dynamics(synthetic_records(model, 6))
    status = layer_status(dyn)
    fig = draw_strictly(lambda: plot_layer_status(dyn, status))
    axes = {ax.get_label(): ax for ax in fig.axes}
    heat = axes["update_ratio_log10"]
    assert np.asarray(heat.images[0].get_array()).shape == (200, 6)   # every layer drawn
    strip = np.asarray(axes["status"].images[0].get_array())
    assert strip.shape[0] == 200                                      # every status drawn
    labels = [t.get_text() for t in heat.get_yticklabels()]
    shown = [lab for lab in labels if lab]
    assert 10 <= len(shown) < 200
    assert shown[0].startswith(dyn.layers[0]) and shown[-1].startswith(dyn.layers[-1])
    assert "every" in heat.get_ylabel() and "labelled" in heat.get_ylabel()


def test_many_layers_lines_are_coloured_by_depth_with_a_colourbar_not_a_legend():
    model = deep_mlp(100)
    dyn = read_dynamics(synthetic_records(model, 6))
    fig = draw_strictly(lambda: plot_layer_dynamics(dyn))
    axes = {ax.get_label(): ax for ax in fig.axes}
    assert not fig.legends and all(ax.get_legend() is None for ax in fig.axes)
    assert "<colorbar>" in axes
    ratio = {line.get_label(): line for line in axes["update_ratio"].get_lines()}
    assert len(ratio) == 200
    np.testing.assert_allclose(ratio["1"].get_ydata(),
                               dyn.layer_metric("update_ratio")[0], equal_nan=True)
    few = read_dynamics(synthetic_records(deep_mlp(2), 4))
    small = draw_strictly(lambda: plot_layer_dynamics(few))
    assert len(small.legends) == 1
    assert [t.get_text() for t in small.legends[0].get_texts()] == list(few.layers)


def test_many_groups_histograms_show_a_stated_subset():
    model = deep_mlp(100)
    history = weight_history(synthetic_states(model, 3), groups=group_parameters(model).mapping(),
                             bins=20)
    fig = draw_strictly(lambda: plot_weight_histograms(history))
    shown = [ax.get_label() for ax in fig.axes if ax.get_visible() and ax.get_label()
             in history.layers]
    assert 4 <= len(shown) <= 24
    assert shown[0] == history.layers[0] and shown[-1] == "199"     # first and last weights
    assert f"of {len(history.layers)} parameter groups" in fig._suptitle.get_text()
