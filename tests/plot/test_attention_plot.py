"""Attention figures: the arrays drawn are the image and the maps, titles carry the numbers,
colour scales start at 0 and end at the stated maximum."""

from __future__ import annotations

import numpy as np
import pytest

from shenjing.analysis.attention import (
    attention_study,
    epoch_attention,
    probe_by_layer,
    uniform_distance,
)
from shenjing.errors import ShapeMismatchError
from shenjing.plot.attention import (
    plot_attention_distance,
    plot_attention_entropy,
    plot_attention_maps,
    plot_attention_matrix,
    plot_attention_probe,
    plot_attention_rollout,
)


def patterns(shape, seed):
    a = np.random.default_rng(seed).random(shape) ** 3
    return a / a.sum(-1, keepdims=True)


def make_epoch(epoch, n_tokens=17, image_shape=(1, 8, 8), probe=None):
    images = np.random.default_rng(9).random((2, *image_shape)).astype(np.float32)
    return epoch_attention(patterns((2, 2, 3, n_tokens, n_tokens), epoch),
                           patterns((5, 2, 3, n_tokens, n_tokens), 10 + epoch),
                           image_shape=image_shape, layers=["blocks.0.attn", "blocks.1.attn"],
                           images=images, epoch=epoch, samples=[4, 7], labels=[3, 9],
                           probe=probe, check_error={"blocks.0.attn": 1e-7}, tolerance=1e-5)


def by_label(fig):
    return {ax.get_label(): ax for ax in fig.axes}


def test_maps_overlay_the_cls_row_on_the_image_with_a_row_colour_scale():
    e = make_epoch(3)
    fig = plot_attention_maps(e, sample=1)
    axes = by_label(fig)
    ax = axes["blocks.1.attn/head 2"]
    img, overlay = ax.images
    raw = e.images[1, 0]
    np.testing.assert_allclose(img.get_array(), (raw - raw.min()) / (raw.max() - raw.min()),
                               rtol=1e-6)
    np.testing.assert_allclose(overlay.get_array(), e.patterns[1, 1, 2, 0, 1:].reshape(4, 4),
                               rtol=1e-6)
    assert overlay.get_clim() == pytest.approx((0.0, e.maps[1, 1].max()))
    assert overlay.get_extent() == [0, 8, 8, 0]
    assert f"d {e.stats.distance[1, 2]:.1f}px" in ax.get_title()
    assert f"H {e.stats.entropy[1, 2]:.2f}" in ax.get_title()
    np.testing.assert_allclose(axes["blocks.0.attn/mean of heads"].images[1].get_array(),
                               e.maps[1, 0].mean(0), rtol=1e-6)
    title = fig._suptitle.get_text()
    assert "CLS → patch attention" in title and "test #7" in title and "label 9" in title
    assert "epoch 3" in title


def test_maps_without_a_grid_are_refused_and_point_to_the_matrix():
    e = make_epoch(0, n_tokens=13)
    with pytest.raises(ShapeMismatchError, match="no patch grid.*plot_attention_matrix"):
        plot_attention_maps(e)
    fig = plot_attention_matrix(e)
    assert "no patch grid: 13 tokens do not form" in fig._suptitle.get_text()


def test_rollout_panels_show_the_last_layers_cls_row_per_epoch():
    a, b = make_epoch(0), make_epoch(5)
    fig = plot_attention_rollout([a, b], sample=0)
    axes = by_label(fig)
    assert set(axes) >= {"input", "epoch 0", "epoch 5"}
    overlay = axes["epoch 5"].images[1]
    expected = b.rollout[0, -1, 0, 1:].reshape(4, 4)
    np.testing.assert_allclose(overlay.get_array(), expected, rtol=1e-6)
    shared = max(a.rollout_map[0, -1].max(), b.rollout_map[0, -1].max())
    assert overlay.get_clim() == pytest.approx((0.0, shared))
    assert f"max {expected.max():.3f}" in axes["epoch 5"].get_title()
    assert "epoch 0 (untrained)" in axes["epoch 0"].get_title()


def test_matrix_panels_are_the_patterns_with_token_names():
    e = make_epoch(2)
    fig = plot_attention_matrix(e, sample=1)
    ax = by_label(fig)["blocks.0.attn/head 1"]
    np.testing.assert_allclose(ax.images[0].get_array(), e.patterns[1, 0, 1], rtol=1e-6)
    assert ax.images[0].get_clim() == pytest.approx((0.0, e.patterns[1].max()))
    first = by_label(fig)["blocks.1.attn/head 0"]
    assert [t.get_text() for t in first.get_yticklabels()][:3] == ["CLS", "0,0", "0,1"]
    assert first.get_xticklabels()[-1].get_text() == "3,3"
    assert f"H {e.stats.entropy[0, 1]:.2f} nats" in ax.get_title()
    assert "17×17 tokens" in fig._suptitle.get_text()


def test_distance_and_entropy_dots_are_the_heads_of_both_epochs():
    study = attention_study([make_epoch(0), make_epoch(4)])
    fig = plot_attention_distance(study)
    ax = fig.axes[0]
    first, last = ax.collections[:2]
    np.testing.assert_allclose(first.get_offsets()[:, 1],
                               study.epochs[0].stats.distance.ravel())
    np.testing.assert_allclose(last.get_offsets()[:, 1],
                               study.epochs[1].stats.distance.ravel())
    assert ax.get_ylabel() == "mean attention distance (px)"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    means = study.epochs[1].stats.distance.mean(1)
    assert labels[1] == f"epoch 4: layer means {means[0]:.2f}, {means[1]:.2f}"
    assert "epoch 0 (untrained)" in labels[0]
    assert "4×4 patches of 2 px" in ax.get_title()
    uniform = uniform_distance(study.layout)
    assert ax.lines[-1].get_ydata()[0] == pytest.approx(uniform)
    assert f"uniform over the patches: {uniform:.2f} px" in labels
    fig = plot_attention_entropy(study)
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.collections[1].get_offsets()[:, 1],
                               study.epochs[1].stats.entropy.ravel())
    assert ax.lines[-1].get_ydata()[0] == pytest.approx(np.log(17))
    assert ax.get_ylabel() == "attention entropy (nats)"


def test_distance_without_a_grid_is_refused():
    with pytest.raises(ShapeMismatchError, match="no distance per head"):
        plot_attention_distance(attention_study([make_epoch(0, n_tokens=13)]))


def test_probe_lines_are_the_accuracies_by_layer():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    feats = {"cls": rng.normal(size=(90, 2, 3)), "mean": rng.normal(size=(90, 2, 3))}
    feats["cls"][:, 1, 0] += 5 * y
    probe = probe_by_layer({k: v[:60] for k, v in feats.items()}, y[:60],
                           {k: v[60:] for k, v in feats.items()}, y[60:],
                           layers=["blocks.0.attn", "blocks.1.attn"])
    study = attention_study([make_epoch(0, probe=probe), make_epoch(1, probe=probe)])
    fig = plot_attention_probe(study)
    ax = fig.axes[0]
    solid = [ln for ln in ax.lines if ln.get_linestyle() == "-"]
    np.testing.assert_allclose(solid[0].get_ydata(), probe.accuracy["cls"])
    np.testing.assert_allclose(solid[1].get_ydata(), probe.accuracy["mean"])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"CLS token, epoch 1: best {probe.accuracy['cls'].max():.1%}" in labels
    assert any(t.get_text() == f"{probe.accuracy['cls'][1]:.0%}" for t in ax.texts)
    assert ax.get_ylabel() == "linear-probe test accuracy"
    assert "60 train → 30 test" in ax.get_title()


def test_plots_draw_into_a_given_axes():
    import matplotlib.pyplot as plt

    study = attention_study([make_epoch(0), make_epoch(1)])
    fig, ax = plt.subplots()
    assert plot_attention_entropy(study, ax=ax) is fig and ax.collections
