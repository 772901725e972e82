"""The chain path: plain MLPs evaluated for chunks of points at once, checked against the
per-point loop and against models the trace must refuse."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shenjing.analysis.landscape import (
    EngineConfig,
    Evaluator,
    choose_engine,
    find_first_layer,
    flat_params,
    random_directions,
)
from shenjing.analysis.landscape.chain import ActivationStep, LinearStep, trace_chain
from shenjing.errors import UsageError
from shenjing.hooks import count_hooks
from shenjing.models import build_model

COEFFS = np.array([[0.0, 0.0], [0.3, -0.2], [-1.0, 1.0], [0.05, 0.7], [1.5, 1.5],
                   [-0.4, 0.0], [0.0, 0.9]])


class _FunctionalMLP(nn.Module):
    """Activations as functions and methods, not modules: what users often write."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(64, 24)
        self.b = nn.Linear(24, 16)
        self.c = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        x = F.leaky_relu(self.a(x), negative_slope=0.1)
        x = torch.tanh(self.b(x)).sigmoid()
        return F.log_softmax(F.dropout(self.c(x), 0.3, self.training), dim=1)


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(64, 64)
        self.b = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        h = self.a(x)
        return self.b(torch.relu(h) + h)


def _seq() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16),
                         nn.GELU(), nn.Dropout(0.2), nn.Linear(16, 10)).eval()


def _data(n: int = 90, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def _evaluate(net, path, *, loss="cross_entropy", bs=90, chunk=3, dtype="float32",
              x=None, y=None, classification=True, coeffs=COEFFS, cache=True):
    if x is None:
        x, y = _data()
    d = random_directions(net, 2, seed=4)
    cfg = EngineConfig(path=path, batch_size=bs, chunk=chunk, dtype=dtype)
    ev = Evaluator(net, flat_params(net), d.vectors, x, y, loss=loss,
                   classification=classification, config=cfg)
    if not cache:
        ev.path.cache_bytes = 0  # first-layer outputs recomputed for every chunk of points
    return ev.evaluate(coeffs)


def test_trace_reads_the_steps_of_a_plain_mlp():
    net = _seq()
    steps, why = trace_chain(net, "1", "cross_entropy")
    assert steps is not None, why
    kinds = [type(s) for s in steps]
    assert kinds == [ActivationStep, LinearStep, ActivationStep, LinearStep]
    assert [s.name for s in steps if isinstance(s, LinearStep)] == ["3", "6"]
    assert "Linear chain 1 → " in why
    seed_mlp = build_model("mlp", (1, 28, 28), 10)
    steps, why = trace_chain(seed_mlp, "fc1", "cross_entropy")
    assert steps is not None and [s.name for s in steps] == ["relu1", "fc2"], why


@pytest.mark.parametrize(("net", "loss", "message"), [
    (nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.BatchNorm1d(8), nn.Linear(8, 10)),
     "cross_entropy", "buffers"),
    (_Residual(), "cross_entropy", "feeds 2 operations"),
    (nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Softmax(dim=0), nn.Linear(8, 10)),
     "cross_entropy", "not a Linear or an elementwise step"),
    (_seq(), "pkg.module:loss", "is not one of"),
])
def test_trace_refuses_what_is_not_a_chain(net, loss, message):
    x, _ = _data()
    first, _ = find_first_layer(net, x)
    assert first is not None
    steps, why = trace_chain(net, first.name, loss)
    assert steps is None and message in why


def test_chain_path_refuses_a_conv_net_with_a_clear_error():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 10)).eval()
    x, y = _data()
    with pytest.raises(UsageError, match="chain path does not apply.*convolution"):
        Evaluator(net, flat_params(net), torch.zeros(2, sum(p.numel() for p in net.parameters())),
                  x, y, loss="cross_entropy", classification=True,
                  config=EngineConfig(path="chain"))


@pytest.mark.parametrize("make", [_seq, _FunctionalMLP])
@pytest.mark.parametrize(("bs", "chunk", "cache"), [(90, 3, True), (7, 2, True), (32, 7, False)])
def test_chain_equals_the_loop_in_float32_and_float64(make, bs, chunk, cache):
    torch.manual_seed(0)
    net = make().eval()
    loss = "nll" if isinstance(net, _FunctionalMLP) else "cross_entropy"
    ref_loss, ref_acc = _evaluate(net, "loop", loss=loss, dtype="float64")
    got_loss, got_acc = _evaluate(net, "chain", loss=loss, bs=bs, chunk=chunk, cache=cache)
    assert np.max(np.abs(got_loss - ref_loss) / np.abs(ref_loss)) <= 1e-5
    np.testing.assert_array_equal(got_acc, ref_acc)
    loss64, acc64 = _evaluate(net, "chain", loss=loss, bs=bs, chunk=chunk, dtype="float64",
                              cache=cache)
    np.testing.assert_allclose(loss64, ref_loss, rtol=1e-12)
    np.testing.assert_array_equal(acc64, ref_acc)


def test_tied_logits_count_like_argmax():
    """argmax takes the first of equal maxima; the chain's accuracy must do the same."""
    net = _seq()
    with torch.no_grad():
        net[6].weight.zero_()
        net[6].bias.copy_(torch.tensor([0.0, 2.0, 2.0, 1.0, 2.0, 0, 0, 0, 0, 0]))
    x, y = _data(200)
    d = random_directions(net, 2, seed=4).vectors
    d[:, -(16 * 10 + 10):] = 0  # the last layer stays tied at every point
    acc = {}
    for path in ("loop", "chain"):
        ev = Evaluator(net, flat_params(net), d, x, y, loss="cross_entropy",
                       classification=True, config=EngineConfig(path=path, chunk=4))
        acc[path] = ev.evaluate(COEFFS)[1]
    expected = float((y == 1).float().mean())  # class 1 is the first of the tied maxima
    np.testing.assert_allclose(acc["loop"], expected)
    np.testing.assert_array_equal(acc["chain"], acc["loop"])


def test_chain_regression_matches_the_loop():
    torch.manual_seed(0)
    net = build_model("curve_mlp", (1,), 1).eval()
    x = torch.linspace(-3, 3, 120)[:, None]
    y = torch.sin(x)
    ref, _ = _evaluate(net, "loop", loss="mse", x=x, y=y, classification=False,
                       dtype="float64")
    got, acc = _evaluate(net, "chain", loss="mse", x=x, y=y, classification=False, bs=50)
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    assert np.isnan(acc).all()


def test_chain_leaves_the_model_untouched():
    net = _seq()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    _evaluate(net, "chain")
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert count_hooks(net) == 0


def test_choose_engine_measures_the_chain_for_an_mlp():
    net = build_model("mlp", (1, 8, 8), 10).eval()
    x, y = _data(300)
    d = random_directions(net, 2, seed=0).vectors
    cfg = choose_engine(net, flat_params(net), d, x, y, loss="cross_entropy",
                        classification=True, config=EngineConfig(device="cpu"), n_points=400)
    assert any(k.startswith("path chain") for k in cfg.measurements), cfg.measurements
    assert "chain" in cfg.reason


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(256, 10)).eval()


def test_auto_compile_is_only_tried_for_long_grids(monkeypatch):
    import shenjing.analysis.landscape.engine as engine

    net = _cnn()
    x, y = _data(64)
    d = random_directions(net, 2, seed=0).vectors
    tried: list[float] = []

    def fake_try(config, *args, eager_s_per_point, **kwargs):
        tried.append(eager_s_per_point)
        return config

    monkeypatch.setattr(engine, "_try_compile", fake_try)
    for path in ("loop", "auto"):
        kwargs = dict(loss="cross_entropy", classification=True)
        config = EngineConfig(device="cpu", path=path)
        choose_engine(net, flat_params(net), d, x, y, n_points=10, config=config, **kwargs)
        assert not tried  # ten points: compiling cannot pay
        choose_engine(net, flat_params(net), d, x, y, n_points=10,
                      config=replace(config, compile=False), **kwargs)
        assert not tried
    monkeypatch.setattr(engine, "COMPILE_WORTH_S", 0.0)  # every grid is "long" now
    cfg = choose_engine(net, flat_params(net), d, x, y, n_points=10, loss="cross_entropy",
                        classification=True, config=EngineConfig(device="cpu", path="loop"))
    assert cfg.path == "loop" and len(tried) == 1 and tried[0] > 0  # eager loop was timed
    choose_engine(net, flat_params(net), d, x, y, n_points=10, loss="cross_entropy",
                  classification=True,
                  config=EngineConfig(device="cpu", path="loop", compile=False))
    assert len(tried) == 1  # an explicit choice is respected


def test_a_failing_compile_keeps_the_eager_loop(monkeypatch):
    import shenjing.analysis.landscape.engine as engine

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", broken)
    net = _cnn()
    x, y = _data(64)
    d = random_directions(net, 2, seed=0).vectors
    eager = EngineConfig(path="loop", batch_size=32, compile=False,
                         reason="fastest measured: loop")
    cfg = engine._try_compile(eager, net, flat_params(net), d, x, y, loss="cross_entropy",
                              classification=True, eager_s_per_point=1.0, probe_points=2)
    assert cfg.compile is False
    assert "torch.compile failed (RuntimeError), eager kept" in cfg.reason
    assert "torch.compile failed" in cfg.measurements


def test_bf16_surface_states_its_error_against_exact_evaluation():
    from shenjing.analysis.landscape import plane

    torch.manual_seed(0)
    net = _seq()
    x, y = _data(200)
    kwargs = dict(loss="cross_entropy", steps=5, range_=(-1, 1), device="cpu")
    exact = plane(net, x, y, **kwargs)
    fast = plane(net, x, y, precision="bf16", **kwargs)
    assert "precision" not in exact.meta
    assert fast.meta["engine"]["precision"] == "bf16" and fast.meta["engine"]["path"] == "loop"
    rel = np.abs(fast.loss - exact.loss) / np.abs(exact.loss)
    assert 0 < rel.max() < 0.05  # really bf16, and close
    prec = fast.meta["precision"]
    assert prec["mode"] == "bf16" and 3 <= len(prec["checked_coords"]) <= 5
    assert [0.0, 0.0] in prec["checked_coords"]
    # the recorded error is the error at the checked points, computed independently here
    axis = list(exact.axes[0])
    at = [(axis.index(a), axis.index(b)) for a, b in prec["checked_coords"]]
    expected = max(rel[i, j] for i, j in at)
    assert prec["max_rel_loss_error"] == pytest.approx(expected, rel=1e-6)
    from shenjing.plot.landscape import caption

    assert "bf16 arithmetic: loss within" in caption(fast)


def test_reduced_precision_refuses_what_it_cannot_do():
    net = _seq()
    x, y = _data()
    d = random_directions(net, 2, seed=0).vectors
    center = flat_params(net)
    for config, message in [
        (EngineConfig(path="loop", precision="tf32", device="cpu"), "needs a CUDA device"),
        (EngineConfig(path="chain", precision="bf16"), "chain path is exact algebra"),
        (EngineConfig(path="loop", precision="bf16", dtype="float64"), "starts from float32"),
        (EngineConfig(path="loop", precision="fp8"), "precision must be one of"),
    ]:
        with pytest.raises(UsageError, match=message):
            Evaluator(net, center, d, x, y, loss="cross_entropy", classification=True,
                      config=config)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "tf32"])
def test_reduced_precision_on_cuda_states_a_small_error(precision):
    from shenjing.analysis.landscape import plane

    net = _seq()
    x, y = _data(200)
    ls = plane(net, x, y, loss="cross_entropy", steps=5, device="cuda", precision=precision)
    assert ls.meta["precision"]["mode"] == precision
    assert ls.meta["precision"]["max_rel_loss_error"] < 0.05
