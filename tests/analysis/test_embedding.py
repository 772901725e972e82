"""Embeddings: PCA against numpy's SVD, seeded t-SNE, aligned sequences, the UMAP extra."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from scipy.spatial import procrustes

from shenjing.analysis.embed import embed, embed_sequence
from shenjing.analysis.separability import loo_knn_accuracy, trustworthiness
from shenjing.errors import MissingExtraError, UnknownNameError, UsageError


@pytest.fixture(scope="module")
def digit_feats():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x[:400].astype(np.float32), y[:400]


def test_pca_matches_svd_up_to_sign():
    x = np.random.default_rng(0).normal(size=(50, 6)) * np.arange(1, 7)
    coords = embed(x, "pca").coords
    xc = x - x.mean(0)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    expected = u[:, :2] * s[:2]
    np.testing.assert_allclose(np.abs(coords), np.abs(expected), rtol=1e-4, atol=1e-4)


def test_tsne_is_seeded_and_separates_digits(digit_feats):
    x, y = digit_feats
    a = embed(x, "tsne", random_state=3, n_jobs=1, labels=y)
    b = embed(x, "tsne", random_state=3, n_jobs=1)
    np.testing.assert_array_equal(a.coords, b.coords)
    assert a.coords.shape == (400, 2) and a.params["pca_dims"] == 50
    assert loo_knn_accuracy(a.coords, y, 5) > 0.9
    assert trustworthiness(x, a.coords, 10) > 0.9
    np.testing.assert_array_equal(a.labels, y)


def test_aligned_tsne_sequence_stays_in_place(digit_feats):
    from scipy.stats import ortho_group

    x, _ = digit_feats
    # a rotated, noisy copy: same neighbourhoods, different principal axes (a new epoch)
    q = ortho_group.rvs(64, random_state=0)
    noisy = (x @ q + np.random.default_rng(0).normal(scale=2, size=x.shape)).astype(np.float32)
    aligned = embed_sequence([x, noisy], "tsne", random_state=0, n_jobs=1)
    free = embed(noisy, "tsne", random_state=0, n_jobs=1)
    assert aligned[1].params["aligned"] and not aligned[0].params["aligned"]
    # procrustes allows rotation/scale: compare raw positions instead via correlation
    ref = aligned[0].coords

    def raw_gap(c):
        a = (ref - ref.mean(0)) / ref.std()
        b = (c - c.mean(0)) / c.std()
        return float(np.mean(np.sum((a - b) ** 2, 1)))

    assert raw_gap(aligned[1].coords) < 0.25 * raw_gap(free.coords)
    assert procrustes(ref, aligned[1].coords)[2] < 0.2


def test_aligned_pca_undoes_rotation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2)) * [3.0, 1.0]
    theta = 0.7
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    maps = embed_sequence({0: x, 5: x @ rot}, "pca")
    np.testing.assert_allclose(maps[1].coords, maps[0].coords, atol=1e-4)


def test_pca_dims_reduce_before_tsne(digit_feats):
    x, _ = digit_feats
    e = embed(x, "tsne", pca_dims=20, n_iter=50, early_exaggeration_iter=50, n_jobs=1)
    assert e.params["pca_dims"] == 20 and e.params["n_features"] == 64


def test_umap_without_the_extra_gives_the_pip_line(monkeypatch):
    import shenjing.analysis.embed as mod

    monkeypatch.setitem(sys.modules, "umap", None)  # import umap now raises ImportError
    monkeypatch.setattr(mod, "_UMAP_CACHE_READY", False)
    with pytest.raises(MissingExtraError,
                       match=r"method='umap' needs the 'umap' extra .*"
                             r'pip install "shenjing\[umap\]"'):
        embed(np.zeros((20, 3)), "umap")


@pytest.mark.slow
def test_umap_runs_and_is_seeded(digit_feats):
    pytest.importorskip("umap")
    x, y = digit_feats
    a = embed(x, "umap", random_state=0)
    b = embed(x, "umap", random_state=0)
    np.testing.assert_allclose(a.coords, b.coords)
    assert loo_knn_accuracy(a.coords, y, 5) > 0.85


def test_bad_arguments():
    with pytest.raises(UnknownNameError, match="unknown embedding method 'tnse'. Did you mean "
                                               "'tsne'"):
        embed(np.zeros((10, 2)), "tnse")
    with pytest.raises(UsageError, match=r"perplexity must be < n_samples / 3 \(got "
                                         r"perplexity=30.0, n_samples=32\)"):
        embed(np.random.default_rng(0).normal(size=(32, 3)), "tsne")
    with pytest.raises(UsageError, match="features contain NaN"):
        embed(np.full((10, 2), np.nan), "pca")
    with pytest.raises(UsageError, match=r"init must have shape \(10, 2\)"):
        embed(np.ones((10, 3)), "pca", init=np.zeros((9, 2)))


def test_a_vanished_signal_still_gets_a_map_and_faithful_numbers():
    """Activations of ~1e-28 (a deep untrained net) underflow float32 distances: without
    rescaling every map collapsed to one point and trustworthiness was meaningless."""
    from shenjing.analysis.embed import embed
    from shenjing.analysis.separability import map_quality

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    tiny = x * np.float32(1e-28)
    normal = embed(x, "pca")
    small = embed(tiny, "pca")
    assert small.coords.std() > 0
    np.testing.assert_allclose(small.coords / small.coords.std(),
                               normal.coords / normal.coords.std(), rtol=1e-4, atol=1e-4)
    assert map_quality(tiny, small.coords)["trustworthiness"] == pytest.approx(
        map_quality(x, normal.coords)["trustworthiness"], abs=1e-6)


@pytest.mark.parametrize("labelled", [True, False])
def test_a_saved_map_loads_back_equal(tmp_path, labelled):
    from shenjing.analysis.embed import Embedding, load_embedding

    rng = np.random.default_rng(0)
    emb = Embedding(coords=rng.normal(size=(6, 2)).astype(np.float32), method="pca",
                    params={"method": "pca", "epoch": 3, "perplexity": None},
                    labels=np.arange(6) % 2 if labelled else None, indices=np.arange(6) + 10,
                    metrics={"trustworthiness": 0.9, "silhouette_2d": None})
    back = load_embedding(emb.save(tmp_path / "relu1-pca-epoch-003.npz"))
    np.testing.assert_array_equal(back.coords, emb.coords)
    np.testing.assert_array_equal(back.indices, emb.indices)
    assert back.coords.dtype == np.float32
    assert (back.method, back.params, back.metrics) == (emb.method, emb.params, emb.metrics)
    if labelled:
        np.testing.assert_array_equal(back.labels, emb.labels)
    else:
        assert back.labels is None
