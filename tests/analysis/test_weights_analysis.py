"""Weight statistics and histograms against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shenjing.analysis.weights import weight_history, weight_stats
from shenjing.errors import LayerNotFoundError, UsageError


def test_stats_match_numpy():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 8))
    w[0, :4] = 0.0
    state = {"fc.weight": torch.tensor(w), "fc.bias": torch.zeros(16),
             "conv.weight": torch.tensor(rng.normal(size=(2, 1, 3, 3)))}
    stats = weight_stats(state, near_zero=0.05)
    assert list(stats) == ["fc", "fc.bias", "conv"]      # every parameter, biases apart
    s = stats["fc"]
    assert s.shape == (16, 8) and s.n == 128
    assert s.mean == pytest.approx(w.mean())
    assert s.std == pytest.approx(w.std())
    assert s.norm == pytest.approx(np.linalg.norm(w))
    assert s.abs_max == pytest.approx(np.abs(w).max())
    assert s.frac_near_zero == pytest.approx((np.abs(w) <= 0.05 * np.abs(w).max()).mean())
    assert s.to_dict()["shape"] == [16, 8]
    with pytest.raises(LayerNotFoundError, match=r"no parameters for 'fc2'.*Did you mean 'fc'"):
        weight_stats(state, ["fc2"])
    with pytest.raises(UsageError, match="near_zero is a fraction"):
        weight_stats(state, near_zero=2)


def test_history_shares_bins_across_epochs():
    a = {"fc.weight": torch.linspace(-1, 1, 100).view(10, 10)}
    b = {"fc.weight": 2 * torch.linspace(-1, 1, 100).view(10, 10)}
    h = weight_history({5: b, 0: a}, bins=8)
    assert h.epochs == (0, 5) and h.layers == ("fc",)
    np.testing.assert_allclose(h.edges["fc"], np.linspace(-2, 2, 9))
    assert h.counts["fc"].shape == (2, 8)
    assert h.counts["fc"].sum(axis=1).tolist() == [100, 100]
    np.testing.assert_array_equal(h.counts["fc"][0],
                                  np.histogram(a["fc.weight"].numpy(), bins=h.edges["fc"])[0])
    np.testing.assert_allclose(h.stats["fc"]["norm"],
                               [np.linalg.norm(a["fc.weight"]), np.linalg.norm(b["fc.weight"])],
                               rtol=1e-6)
    assert h.to_dict()["stats"]["fc"]["norm"][1] == pytest.approx(2 * h.stats["fc"]["norm"][0])
    small = weight_history({0: {"c.weight": torch.randn(32, 1, 3, 3)}}, bins=60)
    assert small.counts["c"].shape == (1, 16)   # 288 weights: √n bins, not a comb of 60
    with pytest.raises(UsageError, match="at least one epoch"):
        weight_history({})


def test_groups_concatenate_a_modules_parameters():
    rng = np.random.default_rng(1)
    state = {"lstm.weight_ih_l0": torch.tensor(rng.normal(size=(8, 2))),
             "lstm.weight_hh_l0": torch.tensor(rng.normal(size=(8, 2))),
             "lstm.bias_ih_l0": torch.tensor(rng.normal(size=8)),
             "cls_token": torch.tensor(rng.normal(size=(1, 1, 4)))}
    groups = {"cls_token": ["cls_token"], "lstm": ["lstm.weight_ih_l0", "lstm.weight_hh_l0"],
              "lstm.bias": ["lstm.bias_ih_l0"]}
    stats = weight_stats(state, groups=groups)
    assert list(stats) == ["cls_token", "lstm", "lstm.bias"]
    w = np.concatenate([state["lstm.weight_ih_l0"].numpy().ravel(),
                        state["lstm.weight_hh_l0"].numpy().ravel()])
    s = stats["lstm"]
    assert s.n == 32 and s.shape == (32,) and s.params == ("lstm.weight_ih_l0",
                                                             "lstm.weight_hh_l0")
    assert s.norm == pytest.approx(np.linalg.norm(w)) and s.std == pytest.approx(w.std())
    assert stats["cls_token"].shape == (1, 1, 4)
    with pytest.raises(LayerNotFoundError, match=r"no parameters for 'lstm\.bias2'.*"
                       r"Did you mean 'lstm\.bias'"):
        weight_stats(state, ["lstm.bias2"], groups=groups)


def test_groups_inferred_from_a_checkpoint_skip_batchnorm_statistics():
    bn = torch.nn.BatchNorm1d(3)
    state = {f"bn.{k}": v for k, v in bn.state_dict().items()}
    state["fc.weight"] = torch.ones(2, 3)
    stats = weight_stats(state)
    assert set(stats) == {"bn", "bn.bias", "fc"}
    assert stats["bn"].params == ("bn.weight",)
