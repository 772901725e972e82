"""Separability and map-faithfulness numbers, checked against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.manifold import trustworthiness as sk_trustworthiness
from sklearn.neighbors import NearestNeighbors

from shenjing.analysis.separability import (
    SILHOUETTE_NOTE,
    knn_accuracy,
    knn_indices,
    knn_recall,
    linear_probe,
    loo_knn_accuracy,
    map_quality,
    reduce_features,
    separability,
    trustworthiness,
)
from shenjing.errors import UsageError


@pytest.fixture
def blobs():
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=4, size=(3, 20))
    y = rng.integers(0, 3, size=300)
    x = centers[y] + rng.normal(size=(300, 20))
    return x.astype(np.float32), y


@pytest.mark.parametrize("k", [1, 5, 12])
def test_trustworthiness_matches_sklearn(blobs, k):
    x, _ = blobs
    low = x @ np.random.default_rng(1).normal(size=(20, 2))
    ours = trustworthiness(x, low, k, chunk=37)
    assert ours == pytest.approx(sk_trustworthiness(x, low, n_neighbors=k), abs=1e-9)


def test_knn_recall_against_sklearn_neighbours(blobs):
    x, _ = blobs
    low = x[:, :2]
    a = NearestNeighbors(n_neighbors=8).fit(x).kneighbors(return_distance=False)
    b = NearestNeighbors(n_neighbors=8).fit(low).kneighbors(return_distance=False)
    expected = np.mean([len(set(a[i]) & set(b[i])) / 8 for i in range(len(x))])
    assert knn_recall(x, low, 8) == pytest.approx(expected)
    assert knn_recall(x, x, 8) == 1.0


def test_knn_indices_exclude_self_and_match_sklearn(blobs):
    x, _ = blobs
    ours = knn_indices(x, 4, chunk=50)
    ref = NearestNeighbors(n_neighbors=4).fit(x).kneighbors(return_distance=False)
    np.testing.assert_array_equal(ours, ref)


def test_loo_knn_accuracy_with_one_neighbour():
    x = np.array([[0.0], [0.1], [5.0], [5.2], [10.0]])
    y = np.array([0, 0, 1, 1, 0])
    # the last point's nearest other point (5.2) has class 1: 4 of 5 right
    assert loo_knn_accuracy(x, y, k=1) == pytest.approx(0.8)


def test_probe_and_knn_see_signal_and_chance(blobs):
    x, y = blobs
    probe, probe_train, note = linear_probe(x[:200], y[:200], x[200:], y[200:])
    assert probe > 0.95 and probe_train > 0.95 and note is None
    shuffled = np.random.default_rng(3).permutation(y)
    chance, _, _ = linear_probe(x[:200], shuffled[:200], x[200:], shuffled[200:])
    assert chance < 0.55
    assert knn_accuracy(x[:200], y[:200], x[200:], y[200:], k=5) > 0.95
    sep = separability(x[:200], y[:200], x[200:], y[200:])
    assert sep.n_train == 200 and sep.n_test == 100 and sep.n_features == 20
    assert sep.to_dict()["probe_accuracy"] == pytest.approx(probe)


def test_wide_conv_maps_are_pooled_and_said_so():
    x = np.random.default_rng(0).random((6, 32, 28, 28), dtype=np.float32)
    out, note = reduce_features(x, 1024, chunk=4)
    assert out.shape == (6, 32 * 5 * 5)
    expected = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x), 5).reshape(6, -1)
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-6)
    assert note == "average-pooled 32×28×28 to 32×5×5 (25088 values per sample)"


def test_wide_vectors_get_a_seeded_projection():
    x = np.random.default_rng(0).random((10, 3000), dtype=np.float32)
    a, note = reduce_features(x, 64, random_state=4)
    b, _ = reduce_features(x[:5], 64, random_state=4, chunk=2)
    assert a.shape == (10, 64) and "random projection 3000→64" in note
    # train and test get the same projection
    np.testing.assert_allclose(a[:5], b, rtol=1e-4, atol=1e-4)


def test_map_quality_reports_faithfulness_and_the_silhouette_note(blobs):
    x, y = blobs
    q = map_quality(x, x[:, :2], y)
    assert set(q) >= {"trustworthiness", "knn_recall", "knn_accuracy_2d", "silhouette_2d"}
    assert 0 < q["trustworthiness"] < 1
    assert q["silhouette_note"] == SILHOUETTE_NOTE


def test_bad_inputs():
    with pytest.raises(UsageError, match="labels must be class ids of shape"):
        linear_probe(np.zeros((4, 2)), np.zeros((4, 2)), np.zeros((4, 2)), np.zeros(4))
    with pytest.raises(UsageError, match="train features have 4 samples but labels have 3"):
        knn_accuracy(np.zeros((4, 2)), np.zeros(3), np.zeros((4, 2)), np.zeros(4))
    with pytest.raises(UsageError, match=r"n_neighbors \(10\) must be < n_samples / 2"):
        trustworthiness(np.zeros((12, 2)), np.zeros((12, 2)), 10)


def test_small_probe_runs_on_one_blas_thread_and_restores_the_pools(monkeypatch):
    """The probe's one-thread limit holds only while it fits, and changes no number."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_info, threadpool_limits

    import shenjing.analysis.separability as sep

    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 12))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    seen: list[list[int]] = []
    real_fit = LogisticRegression.fit

    def spying_fit(self, *args, **kwargs):
        seen.append([p["num_threads"] for p in threadpool_info()])
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(LogisticRegression, "fit", spying_fit)
    with threadpool_limits(2):  # two threads going in, whatever the environment set
        before = [p["num_threads"] for p in threadpool_info()]
        acc, _, _ = sep.linear_probe(x[:200], y[:200], x[200:], y[200:])
        after = [p["num_threads"] for p in threadpool_info()]
    assert 2 in before and seen and all(n == 1 for n in seen[0])
    assert after == before
    monkeypatch.setattr(LogisticRegression, "fit", real_fit)
    scaler = StandardScaler().fit(x[:200])
    direct = real_fit(LogisticRegression(max_iter=300, tol=1e-3),
                      scaler.transform(x[:200]), y[:200])
    assert acc == pytest.approx(direct.score(scaler.transform(x[200:]), y[200:]))
