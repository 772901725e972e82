"""Embedding figures: the points, colours, titles and numbers actually drawn."""

from __future__ import annotations

import numpy as np
import pytest

from shenjing.analysis.cka import CKAResult
from shenjing.analysis.embed import Embedding
from shenjing.plot.embed import (
    plot_cka,
    plot_embedding,
    plot_embedding_grid,
    plot_separability,
)


@pytest.fixture
def emb():
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(30, 2)).astype(np.float32)
    labels = np.repeat([0, 1, 2], 10)
    return Embedding(coords=coords, method="tsne", labels=labels,
                     metrics={"trustworthiness": 0.9512, "probe_accuracy": 0.97,
                              "knn_recall": 0.4})


def test_scatter_draws_each_class_with_its_points_and_numbers(emb):
    fig = plot_embedding(emb, classes=["zero", "one", "two"], title="relu1 · epoch 5")
    ax = fig.axes[0]
    assert len(ax.collections) == 3
    for c, coll in enumerate(ax.collections):
        np.testing.assert_allclose(coll.get_offsets(), emb.coords[emb.labels == c])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["zero", "one", "two"]
    title = ax.get_title()
    assert title.startswith("relu1 · epoch 5\n")
    assert "probe 0.970" in title and "trust 0.951" in title and "kNN recall 0.400" in title
    assert ax.get_xlabel() == "t-SNE 1"


def test_scatter_without_labels_and_on_given_axes(emb):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    out = plot_embedding(Embedding(coords=emb.coords, method="pca"), ax=ax)
    assert out is fig and len(ax.collections) == 1 and ax.get_legend() is None
    assert ax.get_title() == "PCA of 30 samples"


def test_grid_has_one_panel_per_layer_and_epoch(emb):
    maps = {(layer, e): emb for layer in ("fc1", "relu1") for e in (0, 5)}
    fig = plot_embedding_grid(maps)
    assert len(fig.axes) == 4
    titles = [ax.get_title().split("\n")[0] for ax in fig.axes]
    assert titles == ["fc1 · epoch 0", "fc1 · epoch 5", "relu1 · epoch 0", "relu1 · epoch 5"]
    np.testing.assert_allclose(fig.axes[3].collections[1].get_offsets(),
                               emb.coords[emb.labels == 1])
    assert fig._suptitle.get_text() == "t-SNE maps by layer and epoch (aligned)"


def test_separability_lines_and_baseline():
    recs = [{"layer": "relu1", "epoch": e, "probe_accuracy": a}
            for e, a in ((0, 0.8), (5, 0.97))]
    fig = plot_separability(recs, baseline={"probe_accuracy": 0.9})
    ax = fig.axes[0]
    line = ax.get_lines()[0]
    np.testing.assert_allclose(line.get_xdata(), [0, 5])
    np.testing.assert_allclose(line.get_ydata(), [0.8, 0.97])
    assert ax.get_lines()[1].get_ydata()[0] == pytest.approx(0.9)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["relu1", "input pixels (0.900)"]
    assert ax.get_xlabel() == "epoch (0 = untrained)"


def test_cka_heat_map_values_and_limits():
    m = np.array([[1.0, 0.25], [0.25, 1.0]])
    fig = plot_cka(CKAResult(matrix=m, names=["fc1", "fc2"]))
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.images[0].get_array(), m)
    assert ax.images[0].get_clim() == (0.0, 1.0)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["fc1", "fc2"]
    assert sorted(t.get_text() for t in ax.texts) == ["0.25", "0.25", "1.00", "1.00"]


def test_separability_axis_zooms_to_the_data():
    recs = [{"layer": "fc1", "epoch": 0, "knn_accuracy": 0.85},
            {"layer": "fc1", "epoch": 1, "knn_accuracy": 0.95}]
    ax = plot_separability(recs, metric="knn_accuracy").axes[0]
    assert ax.get_ylim()[0] == pytest.approx(0.75)
    assert ax.get_ylabel() == "kNN accuracy (test)"


def test_a_class_has_the_same_colour_in_the_plotly_and_matplotlib_maps():
    """The report's interactive map and the saved PNG colour each class alike, also when a
    map shows only some of the classes."""
    from matplotlib.colors import to_rgb

    from shenjing.plot.interactive import embedding_scatter

    classes = [f"c{i}" for i in range(10)]
    rng = np.random.default_rng(1)
    for present in ([0, 1, 2, 7], [3, 7, 9]):
        labels = np.repeat(present, 4)
        coords = rng.normal(size=(len(labels), 2))
        mpl_fig = plot_embedding(Embedding(coords=coords, method="pca", labels=labels),
                                 classes=classes)
        mpl = {c.get_label(): to_rgb(c.get_facecolor()[0]) for c in mpl_fig.axes[0].collections}
        plotly_fig = embedding_scatter(coords, labels, classes, np.arange(len(labels)))
        web = {t.name: to_rgb(t.marker.color) for t in plotly_fig.data}
        assert set(mpl) == set(web) == {f"c{c}" for c in present}
        for name in mpl:
            np.testing.assert_allclose(mpl[name], web[name], atol=1e-6, err_msg=name)
    # class 7 keeps its colour whichever other classes a map shows
    assert web["c7"] == pytest.approx(to_rgb("tab:gray"))
