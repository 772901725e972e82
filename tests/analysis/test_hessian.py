"""Hessian: Lanczos, power iteration, Hutchinson and SLQ against the exact Hessian."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from shenjing.analysis.hessian import (
    HessianOperator,
    hutchinson_trace,
    lanczos_top,
    layers_with_parameters,
    power_iteration_top,
    sharpness,
    slq_density,
)
from shenjing.errors import LayerNotFoundError, UsageError


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 3)).eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(40, 3, generator=g), torch.randint(0, 3, (40,), generator=g)
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    sizes = [p.numel() for p in net.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()]).double()
    netd = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    netd.load_state_dict({k: v.double() for k, v in net.state_dict().items()})

    def f(v):
        ps = {n: t.view(s) for n, t, s in zip(names, v.split(sizes), shapes, strict=True)}
        return nn.functional.cross_entropy(functional_call(netd, ps, (x.double(),)), y)

    H = torch.autograd.functional.hessian(f, flat)
    return net, x, y, H


def test_hvp_equals_exact_hessian_times_v(tiny):
    net, x, y, H = tiny
    op = HessianOperator(net, x, y, loss="cross_entropy", dtype=torch.float64, batch_size=16)
    v = torch.randn(op.dim, dtype=torch.float64)
    torch.testing.assert_close(op(v), H @ v, rtol=1e-10, atol=1e-12)
    assert op.n_hvp == 1


def test_lanczos_top_eigenvalue_within_1_percent_and_cheaper_than_power(tiny):
    net, x, y, H = tiny
    exact = torch.linalg.eigvalsh(H).numpy()[::-1]
    op = HessianOperator(net, x, y, loss="cross_entropy")  # float32, as used for real
    lz = lanczos_top(op, op.dim, 5, tol=1e-3, seed=0)
    assert lz.converged
    assert lz.values[0] == pytest.approx(exact[0], rel=1e-2)
    np.testing.assert_allclose(lz.values, exact[:5], rtol=1e-2)
    pw = power_iteration_top(op, op.dim, 5, tol=1e-3, seed=0)
    np.testing.assert_allclose(pw.values, exact[:5], rtol=3e-2)
    assert lz.n_hvp < pw.n_hvp


def test_lanczos_eigenvectors_are_eigenvectors(tiny):
    net, x, y, H = tiny
    op = HessianOperator(net, x, y, loss="cross_entropy", dtype=torch.float64)
    lz = lanczos_top(op, op.dim, 2, tol=1e-8, return_vectors=True, max_iter=op.dim)
    for val, vec in zip(lz.values, lz.vectors, strict=True):
        torch.testing.assert_close(H @ vec, val * vec, rtol=0, atol=1e-6)


def test_hutchinson_trace_within_5_percent_with_a_confidence_interval(tiny):
    net, x, y, H = tiny
    op = HessianOperator(net, x, y, loss="cross_entropy", dtype=torch.float64)
    est = hutchinson_trace(op, op.dim, n_samples=400, seed=0)
    exact = float(torch.trace(H))
    assert est.mean == pytest.approx(exact, rel=0.05)
    assert est.ci95[0] < exact < est.ci95[1]
    assert est.stderr > 0 and est.n_samples == 400 == op.n_hvp
    with pytest.raises(UsageError, match="n_samples must be at least 2"):
        hutchinson_trace(op, op.dim, n_samples=1)


def test_slq_density_quadrature_matches_exact_spectrum(tiny):
    net, x, y, H = tiny
    exact = torch.linalg.eigvalsh(H).numpy()
    op = HessianOperator(net, x, y, loss="cross_entropy", dtype=torch.float64)
    d = slq_density(op, op.dim, n_runs=2, n_steps=op.dim, seed=0)
    np.testing.assert_allclose(d.weights.sum(axis=1), 1.0, rtol=1e-8)
    # Ritz values always lie inside the spectrum
    nodes = d.nodes[np.isfinite(d.nodes)]
    assert nodes.min() >= exact.min() - 1e-9 and nodes.max() <= exact.max() + 1e-9
    assert np.nanmax(d.nodes) == pytest.approx(exact.max(), rel=1e-6)
    area = np.trapezoid(d.density, d.grid)
    assert area == pytest.approx(1.0, rel=1e-6)


def test_per_layer_block_matches_the_exact_block(tiny):
    net, x, y, H = tiny
    op = HessianOperator(net, x, y, loss="cross_entropy", layer="2", dtype=torch.float64)
    assert op.dim == 21
    block = H[-21:, -21:]
    lz = lanczos_top(op, op.dim, 1, tol=1e-6)
    assert lz.values[0] == pytest.approx(float(torch.linalg.eigvalsh(block)[-1]), rel=1e-4)
    assert layers_with_parameters(net) == ["0", "2"]
    with pytest.raises(LayerNotFoundError, match="no layer '3' with parameters.*Layers "
                                                  "with parameters: 0, 2"):
        HessianOperator(net, x, y, loss="cross_entropy", layer="3")


def test_sharpness_report_and_model_untouched(tiny):
    net, x, y, _ = tiny
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rep = sharpness(net, x, y, loss="cross_entropy", top_k=3, trace=True, density=True,
                    layers=None, trace_samples=20, density_runs=1, density_steps=10)
    js = rep.to_json()
    assert len(js["top_eigenvalues"]) == 3 and js["n_params"] == 45
    assert set(js["per_layer"]) == {"0", "2"}
    assert js["trace"]["ci95"][0] < js["trace"]["mean"] < js["trace"]["ci95"][1]
    assert js["density"]["n_runs"] == 1
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    assert all(p.grad is None for p in net.parameters())
