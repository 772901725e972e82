"""Linear CKA against the textbook Gram-matrix formula, and its invariances."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ortho_group

from shenjing.analysis.cka import cka_matrix, linear_cka
from shenjing.errors import UsageError


def naive_cka(x: np.ndarray, y: np.ndarray) -> float:
    """tr(KHLH) / sqrt(tr(KHKH) tr(LHLH)) with K = XXᵀ, L = YYᵀ (Kornblith et al., eq. 3)."""
    n = x.shape[0]
    h = np.eye(n) - 1.0 / n
    k, l_ = x @ x.T, y @ y.T
    hsic = lambda a, b: np.trace(a @ h @ b @ h)  # noqa: E731
    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


@pytest.fixture
def feats():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 7))
    y = np.tanh(x @ rng.normal(size=(7, 5))) + 0.3 * rng.normal(size=(60, 5))
    z = rng.normal(size=(60, 9))
    return x, y, z


def test_matches_the_gram_formula(feats):
    x, y, z = feats
    r = cka_matrix({"x": x, "y": y, "z": z}, chunk=7)
    assert r["x", "y"] == pytest.approx(naive_cka(x, y), rel=1e-6)
    assert r["x", "z"] == pytest.approx(naive_cka(x, z), rel=1e-6)
    np.testing.assert_allclose(np.diag(r.matrix), 1.0)
    np.testing.assert_allclose(r.matrix, r.matrix.T)


def test_invariant_to_rotation_scale_and_shift(feats):
    x, y, _ = feats
    q = ortho_group.rvs(7, random_state=1)
    assert linear_cka(x, 2.5 * x @ q + 4.0) == pytest.approx(1.0, abs=1e-6)
    assert linear_cka(x @ q, y) == pytest.approx(linear_cka(x, y), rel=1e-6)


def test_gram_route_for_wide_layers_is_exact():
    rng = np.random.default_rng(2)
    wide = rng.normal(size=(30, 2000))
    other = wide[:, :50] + 0.1 * rng.normal(size=(30, 50))
    r = cka_matrix({"wide": wide, "other": other}, max_features=None, chunk=300)
    assert r["wide", "other"] == pytest.approx(naive_cka(wide, other), rel=1e-6)
    assert r.reductions == {"wide": None, "other": None}


def test_wide_layers_reduced_by_default_and_recorded():
    rng = np.random.default_rng(3)
    conv = rng.random((40, 16, 12, 12)).astype(np.float32)
    r = cka_matrix({"conv": conv, "pooled": conv.mean((2, 3))}, max_features=256)
    assert "average-pooled 16×12×12 to 16×4×4" in r.reductions["conv"]
    assert 0.5 < r["conv", "pooled"] <= 1.0


def test_sample_count_must_agree():
    with pytest.raises(UsageError, match="'a' has 5 samples, 'b' has 4"):
        cka_matrix({"a": np.zeros((5, 2)), "b": np.zeros((4, 2))})
