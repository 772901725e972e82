"""The DANN view's figures hold what they claim: the accuracy and gap curves' data and
labels, the bars' heights and numbers, the maps' points and colours."""

from __future__ import annotations

import numpy as np
import pytest

from shenjing.analysis.dann import DannHistory, DomainMap
from shenjing.plot.dann import (
    plot_domain_gap,
    plot_domain_maps,
    plot_gap_bars,
    plot_target_accuracy,
)


def _gap(scale: float) -> dict:
    return {"mmd2": 0.2 * scale, "bandwidths": [1.0] * 5, "coral": 0.01 * scale,
            "domain_accuracy": 0.5 + 0.4 * scale, "proxy_a": 2 * (1 - 2 * (0.5 - 0.4 * scale))}


def _history() -> DannHistory:
    records = []
    for m, k in (("source_only", 1.0), ("dann", 0.5), ("mmd", 0.25)):
        for e in range(3):
            s = 1.0 if e == 0 else k
            records.append({"method": m, "epoch": e, "source_accuracy": 0.1 + 0.4 * e,
                            "target_accuracy": 0.1 + 0.1 * e * (2 - k),
                            "layers": {"hidden": _gap(s), "feature": _gap(s / 2)}})
    return DannHistory.from_records(records)


def test_accuracy_figure_draws_target_and_source_per_training():
    h = _history()
    fig = plot_target_accuracy(h)
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == 6  # target and source for three trainings
    np.testing.assert_allclose(lines[2].get_ydata(), h.series("dann", "target_accuracy"))
    np.testing.assert_allclose(lines[3].get_ydata(), [0.1, 0.5, 0.9])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["source only: target 0.300", "DANN (GRL): target 0.400",
                      "MMD penalty: target 0.450"]
    assert ax.get_xlabel() == "epoch (0 = untrained)"


def test_gap_figure_has_a_panel_per_measure_and_layer_with_the_numbers():
    h = _history()
    fig = plot_domain_gap(h)
    assert len(fig.axes) == 6
    titles = [a.get_title() for a in fig.axes]
    assert titles == ["hidden: MMD²", "feature: MMD²", "hidden: CORAL ‖ΔC‖²_F / 4d²",
                      "feature: CORAL ‖ΔC‖²_F / 4d²", "hidden: domain classifier acc.",
                      "feature: domain classifier acc."]
    feature_mmd = fig.axes[1]
    np.testing.assert_allclose(feature_mmd.get_lines()[1].get_ydata(), [0.1, 0.05, 0.05])
    assert feature_mmd.get_legend().get_texts()[1].get_text() == "DANN (GRL) 0.05"
    chance = fig.axes[5].get_lines()[-1]
    assert list(chance.get_ydata()) == [0.5, 0.5]


def test_gap_bars_show_untrained_and_each_training():
    before = _gap(1.0)
    after = {"source_only": _gap(0.8), "dann": _gap(0.3)}
    fig = plot_gap_bars(before, after, measure="domain_accuracy", layer="feature")
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx([0.9, 0.82, 0.62])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["untrained", "source only",
                                                            "DANN (GRL)"]
    assert [t.get_text() for t in ax.texts] == ["0.9", "0.82", "0.62"]


def test_maps_put_every_point_in_both_panels_coloured_by_domain_and_class():
    rng = np.random.default_rng(0)
    m = DomainMap(rng.normal(size=(30, 2)), np.r_[np.zeros(20, int), np.ones(10, int)],
                  np.arange(30) % 3)
    fig = plot_domain_maps({"untrained": m, "dann": m}, domains=("mnist", "digits"),
                           titles={"dann": "\nMMD² 0.010"})
    assert len(fig.axes) == 4
    left, right = fig.axes[2], fig.axes[3]
    assert left.get_title() == "DANN (GRL): by domain\nMMD² 0.010"
    sizes = [len(c.get_offsets()) for c in left.collections]
    assert sizes == [20, 10]
    assert [t.get_text() for t in left.get_legend().get_texts()] == ["mnist (20)",
                                                                     "digits (10)"]
    np.testing.assert_allclose(np.concatenate([c.get_offsets() for c in right.collections]),
                               np.r_[m.coords[:20], m.coords[20:]])
    colours = right.collections[0].get_facecolors()
    assert len({tuple(c) for c in colours}) == 3  # one colour per class
