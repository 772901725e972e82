"""Recurrent-view figures draw the numbers of an OverTime: probe curves and chance, the step
where each curve reaches 90 % of its last value, gate shares by epoch, PCA trajectories."""

from __future__ import annotations

import numpy as np
import pytest

from shenjing.analysis.recurrent import OverTime, RecomputeCheck, Trajectories
from shenjing.errors import NotApplicableError, UsageError
from shenjing.plot.recurrent import (
    plot_gate_saturation,
    plot_probe_by_step,
    plot_state_trajectories,
)


def over_time(*, layers: int = 1, dirs: int = 1, kind: str = "LSTM") -> OverTime:
    rng = np.random.default_rng(0)
    steps = np.arange(1, 7)
    base = np.stack([0.1 + 0.1 * steps, 0.1 + 0.15 * steps])           # (epochs, steps)
    probe = np.broadcast_to(base[:, None, None], (2, layers, dirs, 6)).copy()
    probe[:, :-1] *= 0.9  # lower layers a little worse
    sat = None if kind == "RNN" else rng.uniform(0, 0.3, size=(3, 2, layers, 2))
    paths = tuple(Trajectories(coords=rng.normal(size=(4, 6, 2)).astype(np.float32),
                               labels=np.array([0, 0, 1, 2]), samples=np.array([0, 3, 5, 9]),
                               explained_variance=np.array([0.4, 0.2]))
                  for _ in range(2))
    return OverTime(layer="lstm", module_type=kind, num_layers=layers,
                    bidirectional=dirs == 2, hidden_size=8, n_steps=6, epochs=(0, 4),
                    probe=probe, probe_train=probe, chance=0.12, n_train=50, n_test=40,
                    saturation_epochs=(0, 2, 4), gates=() if sat is None else ("input",
                                                                              "forget"),
                    saturation=sat, trajectories=paths,
                    checks={0: RecomputeCheck(1e-7, 1e-4, "output", 10)},
                    classes=("zero", "one", "two"))


def by_gid(ax):
    return {line.get_gid(): line for line in ax.get_lines()}


def test_probe_figure_draws_each_curve_the_chance_and_the_reach_step():
    ot = over_time()
    fig = plot_probe_by_step(ot)
    ax = fig.axes[0]
    lines = by_gid(ax)
    np.testing.assert_allclose(lines["probe e0 l0 d0"].get_ydata(), ot.probe[0, 0, 0])
    np.testing.assert_allclose(lines["probe e4 l0 d0"].get_xdata(), np.arange(1, 7))
    np.testing.assert_allclose(lines["probe e4 l0 d0"].get_ydata(), ot.probe[1, 0, 0])
    assert lines["chance"].get_ydata()[0] == pytest.approx(0.12)
    s = ot.reach_step(4)                     # 0.1 + .15 t ≥ 0.9 · 1.0 from t = 6
    assert s == 6 and lines["reach e4"].get_xdata()[0] == s
    assert lines["reach e0"].get_xdata()[0] == ot.reach_step(0) == 6
    assert "linear probe on h_t at each step" in ax.get_title()
    assert "50 train → 40 test samples" in ax.get_title()
    assert ax.get_xlabel().startswith("step t") and "probe accuracy" in ax.get_ylabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "epoch 0 (untrained)" in labels and "chance (most frequent class) 0.120" in labels


def test_probe_figure_of_a_stacked_bidirectional_layer_and_into_a_given_axes():
    import matplotlib.pyplot as plt

    ot = over_time(layers=2, dirs=2)
    fig, ax = plt.subplots()
    assert plot_probe_by_step(ot, ax=ax) is fig
    lines = by_gid(ax)
    assert {f"probe e0 l{k} d{d}" for k in (0, 1) for d in (0, 1)} <= set(lines)
    assert lines["probe e0 l1 d0"].get_linewidth() > lines["probe e0 l0 d0"].get_linewidth()
    assert lines["probe e0 l1 d1"].get_linestyle() == ":"
    np.testing.assert_allclose(lines["probe e4 l0 d1"].get_ydata(), ot.probe[1, 0, 1])


def test_gate_figure_draws_both_tails_of_each_gate_by_epoch():
    ot = over_time(layers=2)
    fig = plot_gate_saturation(ot)
    ax = fig.axes[0]
    lines = by_gid(ax)
    assert len(lines) == 2 * 2 * 2
    for gi, gate in enumerate(("input", "forget")):
        for k in (0, 1):
            low, high = lines[f"saturation {gate} l{k} low"], lines[f"saturation {gate} l{k} high"]
            np.testing.assert_allclose(low.get_xdata(), [0, 2, 4])
            np.testing.assert_allclose(low.get_ydata(), ot.saturation[:, gi, k, 0])
            np.testing.assert_allclose(high.get_ydata(), ot.saturation[:, gi, k, 1])
            assert high.get_linestyle() == "--"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "input gate < 0.1 (layer 1)" in labels and "forget gate > 0.9 (layer 2)" in labels
    assert "saturated gates" in ax.get_title() and "40 test samples × 6 steps" in ax.get_title()
    assert ax.get_ylabel() == "share of gate values"
    with pytest.raises(NotApplicableError, match="RNN, which has no gates"):
        plot_gate_saturation(over_time(kind="RNN"))


def test_trajectory_panels_draw_the_pca_paths_and_mark_their_ends():
    ot = over_time()
    fig = plot_state_trajectories(ot)
    axes = {ax.get_label(): ax for ax in fig.axes}
    assert set(axes) == {"epoch 0", "epoch 4"}
    for i, e in enumerate((0, 4)):
        ax = axes[f"epoch {e}"]
        lines = by_gid(ax)
        path = ot.trajectories[i]
        for coords, sample in zip(path.coords, path.samples, strict=True):
            np.testing.assert_allclose(lines[f"trajectory {sample}"].get_xydata(), coords)
            np.testing.assert_allclose(lines[f"end {sample}"].get_xydata(), coords[-1:])
            np.testing.assert_allclose(lines[f"start {sample}"].get_xydata(), coords[:1])
        colours = {lines[f"trajectory {s}"].get_color() for s in (0, 3)}
        assert len(colours) == 1  # same class, same colour
        assert lines["trajectory 0"].get_color() != lines["trajectory 5"].get_color()
        assert ax.get_xlabel() == "PC1 (40% of variance)"
    assert axes["epoch 0"].get_title() == "epoch 0 (untrained)"
    assert "hidden-state trajectories over 6 steps" in fig._suptitle.get_text()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["zero", "one", "two"]
    assert len(plot_state_trajectories(ot, epochs=[4]).axes) == 1
    with pytest.raises(UsageError, match=r"computed at epochs \[0, 4\]; asked for \[2\]"):
        plot_state_trajectories(ot, epochs=[2])
