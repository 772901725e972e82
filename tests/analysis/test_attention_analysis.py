"""The attention view's numbers on hand-made patterns: token grids, CLS maps, rollout,
mean attention distance, entropy, the change between epochs, the probe by layer, files."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from shenjing.analysis.attention import (
    HeadStats,
    attention_entropy,
    attention_rollout,
    attention_study,
    cls_attention,
    epoch_attention,
    head_change,
    head_stats,
    load_attention,
    mean_attention_distance,
    probe_by_layer,
    rollout_maps,
    token_layout,
    uniform_distance,
)
from shenjing.errors import ShapeMismatchError


def random_patterns(shape, seed=0):
    """Row-stochastic patterns (samples, layers, heads, queries, keys)."""
    rng = np.random.default_rng(seed)
    a = rng.random(shape) ** 3
    return a / a.sum(-1, keepdims=True)


# ---- grids -------------------------------------------------------------------------------
def test_17_tokens_on_an_8x8_digit_are_cls_and_a_4x4_grid_of_2px_patches():
    layout = token_layout(17, (1, 8, 8))
    assert layout.grid and layout.reason is None
    assert (layout.n_prefix, layout.rows, layout.cols, layout.patch) == (1, 4, 4, (2, 2))
    np.testing.assert_array_equal(layout.centres()[:5],
                                  [[1, 1], [1, 3], [1, 5], [1, 7], [3, 1]])


def test_50_tokens_on_28x28_are_cls_and_a_7x7_grid():
    layout = token_layout(50, (1, 28, 28))
    assert (layout.n_prefix, layout.rows, layout.cols, layout.patch) == (1, 7, 7, (4, 4))
    assert token_layout(17, (1, 28, 28)).patch == (7, 7)
    assert token_layout(16, (1, 8, 8)).n_prefix == 0  # no CLS: a plain 4×4 grid
    assert token_layout(197, (3, 224, 224)).rows == 14


def test_a_token_count_without_a_grid_has_none_and_says_why():
    layout = token_layout(13, (1, 8, 8))
    assert not layout.grid and layout.rows == 0
    assert "13 tokens do not form a patch grid of the 8×8 input" in layout.reason
    assert "square patches tile it as 1, 4, 16 or 64 patches" in layout.reason
    assert not token_layout(9, (1, 8, 8)).grid  # not 5 "prefix" tokens + 2×2 patches
    assert "no patch grid" in layout.describe()
    with pytest.raises(ShapeMismatchError, match="no patch grid: 13 tokens"):
        cls_attention(np.ones((1, 1, 1, 13, 13)) / 13, layout)
    assert "not an image" in token_layout(10, (40,)).reason
    # a fixed prefix count that does not fit is refused the same way
    assert not token_layout(17, (1, 8, 8), n_prefix=2).grid


# ---- maps and rollout --------------------------------------------------------------------
def test_cls_attention_is_row_0_over_the_patches_in_row_major_order():
    p = random_patterns((2, 3, 2, 17, 17))
    maps = cls_attention(p, token_layout(17, (1, 8, 8)))
    assert maps.shape == (2, 3, 2, 4, 4)
    for r, c in itertools.product(range(4), range(4)):
        np.testing.assert_allclose(maps[1, 2, 1, r, c], p[1, 2, 1, 0, 1 + 4 * r + c],
                                   rtol=1e-6)
    # no CLS: the attention each patch receives, averaged over the queries
    q = random_patterns((1, 1, 1, 16, 16))
    np.testing.assert_allclose(cls_attention(q, token_layout(16, (1, 8, 8)))[0, 0, 0],
                               q[0, 0, 0].mean(0).reshape(4, 4), rtol=1e-6)


def test_rollout_matches_a_hand_computation():
    p = random_patterns((2, 3, 2, 5, 5), seed=3)
    got = attention_rollout(p)
    for s in range(2):
        joint = np.eye(5)
        for layer in range(3):
            a = p[s, layer].mean(0)  # heads averaged
            a_hat = 0.5 * a + 0.5 * np.eye(5)
            a_hat = a_hat / a_hat.sum(1, keepdims=True)
            joint = a_hat @ joint
            np.testing.assert_allclose(got[s, layer], joint, rtol=1e-5, atol=1e-7)
    # rows of a rollout are distributions
    np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-5)
    # one layer: the residual halves the attention and adds the identity
    one = attention_rollout(p[:, :1])
    np.testing.assert_allclose(one[0, 0], 0.5 * p[0, 0].mean(0) + 0.5 * np.eye(5), rtol=1e-5)


def test_rollout_renormalises_rows_that_do_not_sum_to_one():
    a = np.zeros((1, 1, 1, 2, 2))
    a[..., 0, 0] = 2.0  # row 0 sums to 2, row 1 to 0
    got = attention_rollout(a)[0, 0]
    np.testing.assert_allclose(got, [[1.0, 0.0], [0.0, 1.0]])


def test_rollout_maps_take_the_cls_row_of_the_last_layer():
    p = random_patterns((1, 2, 2, 17, 17))
    layout = token_layout(17, (1, 8, 8))
    r = attention_rollout(p)
    np.testing.assert_allclose(rollout_maps(r, layout)[0, 1], r[0, 1, 0, 1:].reshape(4, 4))
    with pytest.raises(ShapeMismatchError, match="self-attention"):
        attention_rollout(np.ones((1, 1, 1, 3, 4)) / 4)


# ---- distance and entropy ----------------------------------------------------------------
def test_attention_on_the_query_itself_has_distance_0():
    p = np.zeros((2, 1, 3, 17, 17))
    p[..., np.arange(17), np.arange(17)] = 1.0
    d = mean_attention_distance(p, token_layout(17, (1, 8, 8)))
    np.testing.assert_allclose(d, 0.0, atol=1e-12)


def test_uniform_attention_has_the_mean_pairwise_distance_of_the_patch_centres():
    layout = token_layout(17, (1, 8, 8))
    p = np.full((3, 2, 2, 17, 17), 1 / 17)
    # independent: every ordered pair of 2-px patch centres on the 4×4 grid
    centres = [(2 * r + 1, 2 * c + 1) for r in range(4) for c in range(4)]
    expected = np.mean([math.dist(a, b) for a in centres for b in centres])
    np.testing.assert_allclose(mean_attention_distance(p, layout), expected, rtol=1e-12)
    stats = head_stats(p, layout, ["a", "b"])
    np.testing.assert_allclose(stats.prefix_share, 1 / 17, rtol=1e-12)
    # all the attention on the CLS key: no patch to measure, distance 0, share 1
    q = np.zeros((1, 1, 1, 17, 17))
    q[..., 0] = 1.0
    s = head_stats(q, layout)
    assert s.distance[0, 0] == 0.0 and s.prefix_share[0, 0] == 1.0


def test_attention_to_the_right_neighbour_is_one_patch_side():
    layout = token_layout(17, (1, 28, 28))  # 7-px patches
    p = np.zeros((1, 1, 1, 17, 17))
    p[0, 0, 0, 0, 0] = 1.0
    for r, c in itertools.product(range(4), range(4)):
        q = 1 + 4 * r + c
        p[0, 0, 0, q, 1 + 4 * r + (c + 1 if c < 3 else c - 1)] = 1.0
    np.testing.assert_allclose(mean_attention_distance(p, layout), 7.0)


def test_entropy_of_uniform_rows_is_log_n_and_of_one_hot_rows_0():
    np.testing.assert_allclose(attention_entropy(np.full((2, 3, 4, 17, 17), 1 / 17)),
                               np.log(17), rtol=1e-12)
    one_hot = np.zeros((1, 1, 2, 5, 5))
    one_hot[..., 2] = 1.0
    np.testing.assert_allclose(attention_entropy(one_hot), 0.0)
    p = random_patterns((5, 2, 3, 6, 6), seed=1)
    expected = np.mean(-(p * np.log(p)).sum(-1), axis=(0, 3))
    np.testing.assert_allclose(attention_entropy(p), expected, rtol=1e-10)


def test_head_stats_stream_over_samples_without_changing_the_numbers(monkeypatch):
    import shenjing.analysis.attention as att

    p = random_patterns((10, 2, 3, 17, 17), seed=2)
    layout = token_layout(17, (1, 8, 8))
    whole = head_stats(p, layout)
    monkeypatch.setattr(att, "CHUNK", 3)
    chunked = head_stats(p, layout)
    np.testing.assert_allclose(chunked.distance, whole.distance, rtol=1e-12)
    np.testing.assert_allclose(chunked.entropy, whole.entropy, rtol=1e-12)
    assert head_stats(p, token_layout(17, (40,))).distance is None


# ---- change and probe --------------------------------------------------------------------
def stats(distance, entropy):
    return HeadStats(layers=("l0", "l1"), entropy=np.array(entropy, dtype=float),
                     distance=np.array(distance, dtype=float), prefix_share=None,
                     n_keys=17, n_samples=4)


def test_head_change_says_which_heads_became_local_and_which_global():
    before = stats([[3.0, 3.0], [3.0, 3.0]], [[2.0, 2.0], [2.0, 2.0]])
    after = stats([[1.0, 3.05], [4.0, 2.5]], [[1.0, 2.0], [2.5, 1.9]])
    layout = token_layout(17, (1, 8, 8))
    change = head_change(before, after, epochs=(0, 3), layout=layout)
    assert change.steady_pixels == pytest.approx(0.2)
    assert change.became().tolist() == [["local", "steady"], ["global", "local"]]
    assert change.focus().tolist() == [["sharper", "steady"], ["more diffuse", "sharper"]]
    assert change.counts() == {"global": 1, "local": 2, "steady": 1}
    assert change.counts_text() == ("1 global, 2 local, 1 steady in distance; 1 more diffuse, "
                                    "2 sharper, 1 steady in entropy")
    # ranked by both changes relative to uniform attention's values
    u, h = uniform_distance(layout), np.log(17)
    expected = np.abs([[-2.0, 0.05], [1.0, -0.5]]) / u + np.abs([[-1, 0], [0.5, -0.1]]) / h
    np.testing.assert_allclose(change.score(), expected)
    assert change.ranked_by == f"|Δ distance| / {u:.2f} px + |Δ entropy| / {h:.2f} nats"
    top = change.top(3)
    assert [(t["layer"], t["head"]) for t in top] == [("l0", 0), ("l1", 0), ("l1", 1)]
    assert top[0]["delta_distance"] == pytest.approx(-2.0)
    assert change.head_text(top[0]) == ("l0 head 0: 3.00 → 1.00 px (local), entropy 2.00 → "
                                        "1.00 nats (sharper)")
    # without a grid: ranked by entropy alone
    nogrid = head_change(HeadStats(("l0",), np.array([[2.0, 2.0]]), None, None, 9, 1),
                         HeadStats(("l0",), np.array([[1.0, 2.5]]), None, None, 9, 1))
    assert nogrid.ranked_by == f"|Δ entropy| / {np.log(9):.2f} nats"
    assert nogrid.became().tolist() == [["sharper", "more diffuse"]]
    assert [t["head"] for t in nogrid.top(2)] == [0, 1]
    assert nogrid.head_text(nogrid.top(1)[0]) == "l0 head 0: entropy 2.00 → 1.00 nats (sharper)"


def test_probe_by_layer_scores_each_layer_with_the_linear_probe():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    noise = rng.normal(size=(200, 2, 4))
    signal = noise.copy()
    signal[:, 1, 0] += 4 * (2 * y - 1)  # only layer 1 holds the label
    probe = probe_by_layer({"cls": signal[:150], "mean": noise[:150]}, y[:150],
                           {"cls": signal[150:], "mean": noise[150:]}, y[150:],
                           layers=["a", "b"])
    assert probe.accuracy["cls"][1] > 0.95 and probe.accuracy["cls"][0] < 0.8
    assert probe.accuracy["mean"].max() < 0.8
    assert probe.best("cls") == ("b", probe.accuracy["cls"][1])
    assert probe.n_train == 150 and probe.n_test == 50 and 0.5 <= probe.chance < 0.7
    assert "cls" not in probe_by_layer({"cls": None, "mean": noise[:150]}, y[:150],
                                       {"cls": None, "mean": noise[150:]}, y[150:],
                                       layers=["a", "b"]).accuracy


# ---- one epoch, the study, its files -----------------------------------------------------
def test_the_study_saves_and_loads_every_number(tmp_path):
    image = np.random.default_rng(0).random((2, 1, 8, 8))
    epochs = [epoch_attention(random_patterns((2, 2, 3, 17, 17), seed=e),
                              random_patterns((6, 2, 3, 17, 17), seed=10 + e),
                              image_shape=(1, 8, 8), layers=["b0", "b1"], kinds=["sdpa"] * 2,
                              images=image, epoch=e, samples=[0, 1], labels=[3, 5],
                              check_error={"b0": 1e-7, "b1": 2e-7}, tolerance=1e-5)
              for e in (0, 2)]
    study = attention_study(epochs, extra={"n": 6})
    assert study.passed and study.change is not None and study.change.epochs == (0, 2)
    assert study.epochs[0].maps.shape == (2, 2, 3, 4, 4)
    assert study.epochs[0].rollout_map.shape == (2, 2, 4, 4)
    written = study.save(tmp_path)
    assert {p.name for p in written} == {"attention-e000.json", "attention-e000.npz",
                                         "attention-e002.json", "attention-e002.npz",
                                         "summary.json"}
    again = load_attention(tmp_path)
    assert again.extra["n"] == 6 and again.epoch_numbers == (0, 2)
    for a, b in zip(again.epochs, study.epochs, strict=True):
        np.testing.assert_allclose(a.patterns, b.patterns)
        np.testing.assert_allclose(a.maps, b.maps)
        np.testing.assert_allclose(a.stats.distance, b.stats.distance)
        assert a.layout == b.layout and a.check_error == b.check_error
    assert again.change.top(3) == study.change.top(3)
    text = "\n".join(study.summary_lines())
    assert "17 tokens = 1 prefix (CLS) + 4×4 grid of 2×2-px patches" in text
    assert "max error 2.00e-07 (tolerance 1.0e-05) — passed" in text
    assert "changed most (|Δ distance| / " in text and "b0: distance" in text


def test_a_failed_check_is_said():
    e = epoch_attention(random_patterns((1, 1, 1, 13, 13)), random_patterns((2, 1, 1, 13, 13)),
                        image_shape=(1, 8, 8), layers=["a"], check_error={"a": 0.1},
                        tolerance=1e-5)
    assert not e.passed and "FAILED" in e.check_text()
    assert e.maps is None and e.rollout_map is None and e.rollout is not None
    lines = attention_study([e]).summary_lines()
    assert any("query × key matrix" in line for line in lines)
