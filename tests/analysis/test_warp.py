"""Per-layer warps of a grid and the data, projections, probes and decision maps, checked
against the layer outputs computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from shenjing.analysis.warp import (
    check_points_2d,
    data_bounds,
    decision_map,
    fit_projection,
    layer_outputs,
    layer_sequence,
    linear_probe,
    make_grid,
    warp_layers,
)
from shenjing.errors import LayerNotFoundError, ShapeMismatchError
from shenjing.hooks import count_hooks
from shenjing.models import build_model

ROT = np.array([[0.0, -2.0], [1.0, 0.5]])
SHIFT = np.array([0.3, -0.2])


def rotate_net() -> nn.Module:
    """mlp 2-2-2 with hand-set weights: fc1 rotates/stretches/shifts, relu1 folds."""
    net = build_model("mlp", (2,), 2, hidden=(2,))
    with torch.no_grad():
        net.fc1.weight.copy_(torch.tensor(ROT, dtype=torch.float32))
        net.fc1.bias.copy_(torch.tensor(SHIFT, dtype=torch.float32))
        net.fc2.weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
        net.fc2.bias.zero_()
    return net.eval()


def blobs(n=200, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 2)) * 0.3 + np.where(y[:, None] == 1, 1.0, -1.0)
    return x, y


def test_layer_sequence_kinds():
    net = build_model("mlp", (2,), 2, hidden=(8, 8))
    assert layer_sequence(net) == [("fc1", "linear"), ("relu1", "activation"),
                                   ("fc2", "linear"), ("relu2", "activation"),
                                   ("fc3", "output")]


def test_grid_shape_and_lines():
    g = make_grid(((0, 1), (10, 20)), n_lines=3, n_per_line=5)
    assert g.shape == (2, 3, 5, 2)
    np.testing.assert_allclose(g[0, 1, :, 1], 15)          # horizontal line at y = 15
    np.testing.assert_allclose(g[0, 1, :, 0], np.linspace(0, 1, 5))
    np.testing.assert_allclose(g[1, 2, :, 0], 1)           # vertical line at x = 1


def test_warped_grid_equals_layer_outputs_for_grid_points():
    """Acceptance: the warped grid's coordinates are the layer outputs of those points."""
    net = rotate_net()
    x, y = blobs()
    w = warp_layers(net, x[:150], y[:150], x[150:], y[150:], n_lines=5, n_per_line=7)
    pts = w.grid.reshape(-1, 2)
    pre = pts @ ROT.T + SHIFT
    post = np.maximum(pre, 0)
    out = post @ np.array([[1.0, -1.0], [-1.0, 1.0]]).T
    assert [v.name for v in w.layers] == ["input", "fc1", "relu1", "fc2"]
    assert all(v.projection.method == "identity" for v in w.layers)
    np.testing.assert_allclose(w["input"].grid_2d.reshape(-1, 2), pts)
    np.testing.assert_allclose(w["fc1"].grid_2d.reshape(-1, 2), pre, atol=1e-5)
    np.testing.assert_allclose(w["relu1"].grid_2d.reshape(-1, 2), post, atol=1e-5)
    np.testing.assert_allclose(w["fc2"].grid_2d.reshape(-1, 2), out, atol=1e-5)
    data = np.concatenate([x[:150], x[150:]])
    np.testing.assert_allclose(w["fc1"].data_2d, data @ ROT.T + SHIFT, atol=1e-5)
    assert count_hooks(net) == 0


def test_wide_layer_is_shown_through_pca_of_its_data():
    torch.manual_seed(0)
    net = build_model("mlp", (2,), 2, hidden=(8,)).eval()
    x, y = blobs()
    w = warp_layers(net, x[:150], y[:150], x[150:], y[150:], n_lines=4, n_per_line=6)
    relu = w["relu1"]
    assert relu.n_features == 8 and relu.projection.method == "pca"
    from sklearn.decomposition import PCA

    feats_data = np.maximum(x @ net.fc1.weight.detach().double().numpy().T
                            + net.fc1.bias.detach().double().numpy(), 0)
    feats_grid = np.maximum(w.grid.reshape(-1, 2) @ net.fc1.weight.detach().double().numpy().T
                            + net.fc1.bias.detach().double().numpy(), 0)
    pca = PCA(n_components=2, svd_solver="full").fit(feats_data)
    np.testing.assert_allclose(relu.data_2d, pca.transform(feats_data), atol=1e-5)
    np.testing.assert_allclose(relu.grid_2d.reshape(-1, 2), pca.transform(feats_grid),
                               atol=1e-5)
    np.testing.assert_allclose(relu.projection.explained_variance_ratio,
                               pca.explained_variance_ratio_, rtol=1e-6)
    assert "PCA" in relu.projection.label and "% of variance" in relu.projection.label


def test_probe_is_high_on_separable_and_near_chance_on_xor():
    x, y = blobs(400)
    tr, te = linear_probe(x[:300], y[:300], x[300:], y[300:])
    assert tr == 1.0 and te == 1.0
    rng = np.random.default_rng(2)
    xo = rng.uniform(-1, 1, (800, 2))
    yo = ((xo[:, 0] > 0) ^ (xo[:, 1] > 0)).astype(int)
    _, te = linear_probe(xo[:600], yo[:600], xo[600:], yo[600:])
    assert te < 0.65


def test_linear_layer_keeps_separability_relu_changes_it():
    net = rotate_net()
    rng = np.random.default_rng(2)
    xo = rng.uniform(-1, 1, (600, 2))
    yo = ((xo[:, 0] > 0) ^ (xo[:, 1] > 0)).astype(int)
    w = warp_layers(net, xo[:400], yo[:400], xo[400:], yo[400:], n_lines=3, n_per_line=3)
    # an invertible affine map does not change what a linear probe can separate
    assert w["fc1"].probe_test_accuracy == pytest.approx(w["input"].probe_test_accuracy,
                                                         abs=0.02)


def test_projection_of_one_feature_pads():
    p = fit_projection(np.arange(5.0).reshape(-1, 1))
    np.testing.assert_array_equal(p.apply(np.array([[2.0]])), [[2.0, 0.0]])


@pytest.mark.parametrize("bad", [np.zeros((10, 3)), np.zeros((10, 1, 8, 8)), np.zeros(10)])
def test_not_n_by_2_is_refused(bad):
    with pytest.raises(ShapeMismatchError, match=r"warp needs 2-D points, an \(N, 2\) array"):
        check_points_2d(bad, "the data")


def test_net_not_on_2d_inputs_is_refused():
    net = build_model("mlp", (3,), 2, hidden=(4,))
    x, y = blobs(20)
    with pytest.raises(ShapeMismatchError, match="first linear layer takes 3 features"):
        warp_layers(net, x, y, x, y)


def test_unknown_layer_names_are_refused():
    x, y = blobs(20)
    with pytest.raises(LayerNotFoundError, match="relu9"):
        warp_layers(rotate_net(), x, y, x, y, layers=["relu9"])


def test_layer_outputs_in_batches_equal_one_batch():
    torch.manual_seed(0)
    net = build_model("mlp", (2,), 2, hidden=(5, 5)).eval()
    pts = np.random.default_rng(0).normal(size=(103, 2))
    a = layer_outputs(net, pts, ["relu1", "fc3"], batch_size=10)
    b = layer_outputs(net, pts, ["relu1", "fc3"], batch_size=1000)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-6)
    np.testing.assert_allclose(a["fc3"], net(torch.tensor(pts, dtype=torch.float32))
                               .detach().numpy(), atol=1e-6)


def test_decision_map_of_a_linear_net():
    net = nn.Sequential(nn.Linear(2, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.0, 0.0], [4.0, 0.0]]))
        net[0].bias.zero_()
    dm = decision_map(net, ((-1, 1), (-2, 2)), resolution=21)
    assert dm.proba.shape == (21, 21, 2)
    np.testing.assert_allclose(dm.proba.sum(-1), 1.0)
    # class 1 wins exactly where x1 > 0, whatever x2
    np.testing.assert_array_equal(dm.predicted, np.broadcast_to(dm.xs > 0, (21, 21)))
    np.testing.assert_allclose(dm.proba[0, :, 1], 1 / (1 + np.exp(-4 * dm.xs)), atol=1e-6)


def test_data_bounds():
    (x0, x1), (y0, y1) = data_bounds(np.array([[0.0, 0.0], [10.0, 2.0]]), margin=0.1)
    assert (x0, x1, y0, y1) == pytest.approx((-1.0, 11.0, -0.2, 2.2))
