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


def test_a_saved_report_loads_back_equal_with_its_extra_fields(tiny, tmp_path):
    from shenjing.analysis.hessian import load_sharpness

    net, x, y, _ = tiny
    rep = sharpness(net, x, y, loss="cross_entropy", top_k=2, trace=True, density=True,
                    layers=None, trace_samples=10, density_runs=1, density_steps=8)
    paths = rep.save(tmp_path / "hessian-e003", extra={"epoch": 3},
                     arrays={"sample_indices": np.arange(40)})
    assert [p.name for p in paths] == ["hessian-e003.json", "hessian-e003.npz"]
    back, summary = load_sharpness(paths[1])
    assert summary == {**rep.to_json(), "epoch": 3}
    assert back.to_json() == rep.to_json()
    np.testing.assert_array_equal(back.top.values, rep.top.values)
    np.testing.assert_array_equal(back.trace.samples, rep.trace.samples)
    for name in ("nodes", "weights", "grid", "density"):
        np.testing.assert_array_equal(getattr(back.density, name), getattr(rep.density, name))
    with np.load(paths[1]) as z:
        assert z.files == ["eigenvalues", "sample_indices", "trace_samples", "density_grid",
                           "density", "slq_nodes", "slq_weights"]


# ---- transformers: Hessian-vector products need attention's second derivative --------

class TinyViT(nn.Module):
    """Patches → CLS token + position embedding → ``nn.TransformerEncoder`` → head.

    Dropout is on (0.1) so that the operator must use eval mode to be deterministic.
    """

    def __init__(self, dim: int = 4, n_classes: int = 3) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, dim, 2, stride=2)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.1)
        self.pos = nn.Parameter(torch.randn(1, 5, dim) * 0.1)
        layer = nn.TransformerEncoderLayer(dim, nhead=2, dim_feedforward=8, dropout=0.1,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)  # (N, 4, dim)
        tokens = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], 1) + self.pos
        return self.head(self.encoder(tokens)[:, 0])


@pytest.fixture(scope="module")
def vit():
    """A tiny ViT (231 parameters), 24 samples, and its exact float64 Hessian."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    net = TinyViT().eval()
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(24, 1, 4, 4, generator=g), torch.randint(0, 3, (24,), generator=g)
    netd = TinyViT().double().eval()
    netd.load_state_dict({k: v.double() for k, v in net.state_dict().items()})
    names = [n for n, _ in netd.named_parameters()]
    shapes = [p.shape for p in netd.parameters()]
    sizes = [p.numel() for p in netd.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()]).double()

    def f(v):
        ps = {n: t.view(s) for n, t, s in zip(names, v.split(sizes), shapes, strict=True)}
        return nn.functional.cross_entropy(functional_call(netd, ps, (x.double(),)), y)

    with sdpa_kernel(SDPBackend.MATH):  # the exact Hessian needs double backward too
        H = torch.autograd.functional.hessian(f, flat)
    return net, x, y, H


def test_transformer_hvp_equals_exact_hessian_times_v(vit):
    net, x, y, H = vit
    op = HessianOperator(net, x, y, loss="cross_entropy", dtype=torch.float64, batch_size=10)
    assert op.dim == H.shape[0] == 231
    v = torch.randn(op.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(op(v), H @ v, rtol=1e-9, atol=1e-11)
    # eval mode: dropout off, so the product is the same every time
    torch.testing.assert_close(op(v), op(v), rtol=0, atol=0)


def test_transformer_top_eigenvalue_and_trace_match_the_exact_hessian(vit):
    net, x, y, H = vit
    exact = torch.linalg.eigvalsh(H).numpy()[::-1]
    op = HessianOperator(net, x, y, loss="cross_entropy")  # float32, as used for real
    lz = lanczos_top(op, op.dim, 3, tol=1e-4, seed=0)
    assert lz.converged
    np.testing.assert_allclose(lz.values, exact[:3], rtol=1e-2)
    op64 = HessianOperator(net, x, y, loss="cross_entropy", dtype=torch.float64)
    probes: list[torch.Tensor] = []

    def recorded(z):
        probes.append(z.clone())
        return op64(z)

    est = hutchinson_trace(recorded, op64.dim, n_samples=300, seed=0)
    # each probe's zᵀHz is the exact Hessian's quadratic form …
    exact_forms = np.array([float(z @ H @ z) for z in probes])
    np.testing.assert_allclose(est.samples, exact_forms, rtol=1e-8, atol=1e-10)
    # … and their mean brackets the exact trace (this Hessian is indefinite, its trace
    # small next to the probes' spread: the interval, not a relative error, is the claim)
    exact_trace = float(torch.trace(H))
    assert est.ci95[0] < exact_trace < est.ci95[1]
    assert abs(est.mean - exact_trace) < 3 * est.stderr


def test_transformer_per_layer_block_and_sharpness(vit):
    net, x, y, H = vit
    names = [n for n, _ in net.named_parameters()]
    sizes = [p.numel() for p in net.parameters()]
    lop = HessianOperator(net, x, y, loss="cross_entropy", layer="encoder.layers.0.self_attn",
                          dtype=torch.float64)
    # the block of the attention's own parameters: in_proj_weight and in_proj_bias
    idx = [i for i, (n, s) in enumerate(zip(names, sizes, strict=True))
           if n.startswith("encoder.layers.0.self_attn.in_proj")]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    sel = torch.cat([torch.arange(offsets[i], offsets[i + 1]) for i in idx])
    assert lop.dim == len(sel) == 60
    block = H[sel][:, sel]
    top = lanczos_top(lop, lop.dim, 1, tol=1e-8).values[0]
    assert top == pytest.approx(float(torch.linalg.eigvalsh(block)[-1]), rel=1e-6)
    rep = sharpness(net, x, y, loss="cross_entropy", top_k=2, trace_samples=4,
                    layers=["head", "encoder.layers.0.self_attn"])
    assert rep.top.values[0] == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-2)
    assert set(rep.per_layer) == {"head", "encoder.layers.0.self_attn"}


def test_attention_api_fallbacks(vit, monkeypatch):
    """torch 2.2 has only ``torch.backends.cuda.sdp_kernel``; without either API the HVP
    cannot be taken and the error says why, as a view that does not apply."""
    import warnings

    from shenjing.analysis.landscape import kernels
    from shenjing.errors import NotApplicableError

    net, x, y, H = vit
    v = torch.randn(H.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    assert kernels.math_attention_backend() == "sdpa_kernel"  # this torch (≥ 2.3)
    monkeypatch.setattr(kernels, "math_attention_backend", lambda: "sdp_kernel")
    op = HessianOperator(net, x, y, loss="cross_entropy", dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the old API's FutureWarning is not the user's
        torch.testing.assert_close(op(v), H @ v, rtol=1e-9, atol=1e-11)
    monkeypatch.setattr(kernels, "math_attention_backend", lambda: "none")
    with pytest.raises(NotApplicableError, match="the Hessian needs second derivatives of "
                                                 "every operation in TinyViT's forward, and "
                                                 "PyTorch .* has none for aten::_scaled_dot"):
        op(v)


def test_kernel_settings_are_restored_after_each_product(vit):
    from shenjing.analysis.landscape.kernels import differentiable_kernels

    net, x, y, _ = vit
    q = torch.randn(1, 2, 3, 4, requires_grad=True)

    def attention_kernel() -> str:
        return type(nn.functional.scaled_dot_product_attention(q, q, q).grad_fn).__name__

    fused, fastpath = attention_kernel(), torch.backends.mha.get_fastpath_enabled()
    with differentiable_kernels(net):
        assert "Flash" not in attention_kernel() and "Efficient" not in attention_kernel()
        assert not torch.backends.mha.get_fastpath_enabled()
    op = HessianOperator(net, x, y, loss="cross_entropy")
    op(torch.ones(op.dim))
    # outside the operator, attention uses its fused kernels again
    assert attention_kernel() == fused
    assert torch.backends.mha.get_fastpath_enabled() == fastpath


class _KilledError(Exception):
    """Stands for a kill: raised by a product, so nothing after the last save is kept."""


def _sharpness_with_a_kill_after(tiny, path, monkeypatch, n_products):
    """Run ``sharpness`` on ``tiny`` with a resume file, stopping it at product
    ``n_products`` (None: never); return the report (or None) and the products computed."""
    from shenjing.analysis.hessian import hessian_settings_key
    from shenjing.analysis.landscape.resume import ResumeFile

    net, x, y, _ = tiny
    settings = dict(top_k=3, trace=True, density=True, layers=["0", "2"], trace_samples=6,
                    density_runs=2, density_steps=5, tol=1e-4, seed=3)
    key = hessian_settings_key(net, x, y, loss="cross_entropy", **settings)
    real = HessianOperator._matvec
    count = [0]

    def counted(self, v):
        if n_products is not None and count[0] == n_products:
            raise _KilledError
        count[0] += 1
        return real(self, v)

    monkeypatch.setattr(HessianOperator, "_matvec", counted)
    try:
        rep = sharpness(net, x, y, loss="cross_entropy", **settings,
                        resume=ResumeFile(path, key, save_every=0.0))
    except _KilledError:
        rep = None
    monkeypatch.setattr(HessianOperator, "_matvec", real)
    return rep, count[0]


def test_a_killed_sharpness_resumes_with_the_same_numbers_and_products(tiny, tmp_path,
                                                                       monkeypatch):
    """Issue 13 item 11: hessian killed after 100 s started from zero. Every loop (Lanczos
    steps, Hutchinson probes, SLQ runs, per-layer blocks) saves its state; killed at any
    product and resumed, the report equals an uninterrupted one bit for bit, and no product
    is computed twice."""
    clean, total = _sharpness_with_a_kill_after(tiny, None, monkeypatch, None)
    assert total == clean.top.n_hvp + 6 + clean.density.n_hvp + sum(
        e["n_hvp"] + 3 for e in clean.per_layer.values())
    for stop in sorted({1, 2, 5, total // 3, total // 2, total - 4, total - 1}):
        path = tmp_path / f"stop-{stop}.npz"
        killed, done = _sharpness_with_a_kill_after(tiny, path, monkeypatch, stop)
        assert killed is None and done == stop and path.is_file()
        resumed, rest = _sharpness_with_a_kill_after(tiny, path, monkeypatch, None)
        assert done + rest == total, stop  # nothing redone
        assert resumed.to_json() == clean.to_json(), stop
        np.testing.assert_array_equal(resumed.trace.samples, clean.trace.samples)
        np.testing.assert_array_equal(resumed.density.density, clean.density.density)
        np.testing.assert_array_equal(resumed.density.nodes, clean.density.nodes)


def test_a_resume_file_of_other_settings_is_not_used(tiny, tmp_path):
    from shenjing.analysis.hessian import hessian_settings_key
    from shenjing.analysis.landscape.resume import ResumeFile

    net, x, y, _ = tiny
    path = tmp_path / "p.npz"
    key = hessian_settings_key(net, x, y, loss="cross_entropy", seed=0)
    op = HessianOperator(net, x, y, loss="cross_entropy")
    first = hutchinson_trace(op, op.dim, n_samples=4, seed=0, resume=ResumeFile(path, key))
    other = hessian_settings_key(net, x, y, loss="cross_entropy", seed=1)
    assert other != key
    assert not ResumeFile(path, other).resumed and ResumeFile(path, key).resumed
    again = hutchinson_trace(op, op.dim, n_samples=4, seed=1, resume=ResumeFile(path, other))
    assert again.mean != first.mean  # recomputed with seed 1, not read back
