"""The evaluation engine: every path gives the same numbers, checked against closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from shenjing.analysis.landscape import (
    Directions,
    EngineConfig,
    Evaluator,
    ParamLayout,
    choose_engine,
    evaluate_landscape,
    find_first_layer,
    flat_params,
    make_axis,
    plane,
    random_directions,
)
from shenjing.errors import UsageError
from shenjing.hooks import count_hooks


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()


def _bn_cnn() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10))
    net.train()
    with torch.no_grad():
        net(torch.randn(64, 1, 8, 8))  # non-trivial running statistics
    return net.eval()


def _data(n: int = 90) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


COEFFS = np.array([[0.0, 0.0], [0.3, -0.2], [-1.0, 1.0], [0.05, 0.7]])


def _evaluate(net, path, bs, dtype="float32", coeffs=COEFFS, cl=False):
    x, y = _data()
    d = random_directions(net, 2, seed=4)
    cfg = EngineConfig(path=path, batch_size=bs, dtype=dtype, chunk=3, channels_last=cl)
    ev = Evaluator(net, flat_params(net), d.vectors, x, y, loss="cross_entropy",
                   classification=True, config=cfg)
    return ev.evaluate(coeffs)


@pytest.mark.parametrize("make", [_mlp, _bn_cnn])
def test_all_paths_and_batch_sizes_agree(make):
    net = make()
    ref_loss, ref_acc = _evaluate(net, "loop", 90, dtype="float64")
    paths = ["loop", "linear", "linear-vmap", "vmap"] + (["chain"] if make is _mlp else [])
    for path in paths:
        for bs in (7, 32, 90):
            loss, acc = _evaluate(net, path, bs)
            rel = np.max(np.abs(loss - ref_loss) / np.abs(ref_loss))
            assert rel <= 1e-5, (path, bs, rel)
            np.testing.assert_array_equal(acc, ref_acc)
    loss64, _ = _evaluate(net, "linear", 32, dtype="float64")
    np.testing.assert_allclose(loss64, ref_loss, rtol=1e-12)


class _RowTransformer(nn.Module):
    """Image rows as tokens → ``nn.TransformerEncoder`` (batch_first, dropout 0.1) → head."""

    def __init__(self, free_token: bool = False) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 8)
        self.cls = nn.Parameter(torch.randn(1, 1, 8) * 0.1) if free_token else None
        layer = nn.TransformerEncoderLayer(8, nhead=2, dim_feedforward=16, dropout=0.1,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        tokens = self.embed(x.squeeze(1))  # (N, 8 rows, 8)
        if self.cls is not None:
            tokens = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], 1)
        return self.head(self.encoder(tokens).mean(1))


@pytest.mark.parametrize("free_token", [False, True])
def test_transformer_encoder_paths_agree_or_are_refused_with_a_reason(free_token):
    import warnings

    torch.manual_seed(0)
    net = _RowTransformer(free_token).eval()
    ref_loss, ref_acc = _evaluate(net, "loop", 90, dtype="float64")
    applicable = ["loop", "vmap"] + ([] if free_token else ["linear", "linear-vmap"])
    for path in applicable:
        with warnings.catch_warnings():
            # vmap must batch attention itself, not loop over the points (PyTorch warns
            # "There is a performance drop because we have not yet implemented the
            # batching rule for aten::_transformer_encoder_layer_fwd" when it falls back)
            warnings.filterwarnings("error", message=".*performance drop.*")
            loss, acc = _evaluate(net, path, 32)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, err_msg=path)
        np.testing.assert_array_equal(acc, ref_acc)
    refused = {"chain": "the first layer's input is not \\(samples, features\\)"}
    if free_token:  # a free parameter (the CLS token) runs before the first layer
        refused = {p: "first parametric module 'model' is a _RowTransformer"
                   for p in ("linear", "linear-vmap", "chain")}
    for path, why in refused.items():
        with pytest.raises(UsageError, match=f"the {path} path does not apply to this "
                                             f"model: {why}"):
            _evaluate(net, path, 32)
    x, y = _data()
    d = random_directions(net, 2, seed=4)
    cfg = choose_engine(net, flat_params(net), d.vectors, x, y, loss="cross_entropy",
                        classification=True, config=EngineConfig(device="cpu"), n_points=9)
    assert cfg.path in applicable


def test_channels_last_gives_the_same_numbers():
    net = _bn_cnn()
    a, _ = _evaluate(net, "loop", 32)
    b, _ = _evaluate(net, "loop", 32, cl=True)
    np.testing.assert_allclose(b, a, rtol=1e-5)


def test_centre_point_is_the_models_own_loss_and_model_is_untouched():
    net = _bn_cnn()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = _data()
    loss, acc = _evaluate(net, "linear", 32)
    with torch.no_grad():
        out = net(x)
    assert loss[0] == pytest.approx(float(nn.functional.cross_entropy(out, y)), rel=1e-6)
    assert acc[0] == pytest.approx(float((out.argmax(1) == y).float().mean()))
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert count_hooks(net) == 0
    assert not net.training


def _quadratic(n=50, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, 1, generator=g, dtype=torch.float64)
    net = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        net.weight.copy_(torch.randn(1, d, generator=g, dtype=torch.float64))
    return net, x, y


@pytest.mark.parametrize("path", ["loop", "linear", "linear-vmap", "chain", "vmap"])
def test_quadratic_model_matches_closed_form(path):
    """MSE of a linear model is quadratic in w: L(a,b) known exactly from moments."""
    net, x, y = _quadratic()
    layout = ParamLayout.of(net)
    g = torch.Generator().manual_seed(3)
    dirs = torch.randn(2, layout.size, generator=g, dtype=torch.float64)
    directions = Directions(dirs, layout, {"kind": "test"})
    axis = make_axis(-2, 2, 9)
    ls = evaluate_landscape(net, directions, (axis, axis), x, y, loss="mse",
                            engine=EngineConfig(path=path, device="cpu", dtype="float64",
                                                batch_size=16))
    X = x.numpy()
    r = X @ net.weight.detach().numpy().ravel() - y.numpy().ravel()
    u, v = X @ dirs[0].numpy(), X @ dirs[1].numpy()
    A, B = np.meshgrid(axis, axis, indexing="ij")
    expected = (np.mean(r * r) + 2 * A * np.mean(r * u) + 2 * B * np.mean(r * v)
                + A * A * np.mean(u * u) + 2 * A * B * np.mean(u * v) + B * B * np.mean(v * v))
    np.testing.assert_allclose(ls.loss, expected, rtol=1e-10)
    assert np.isnan(ls.accuracy).all()  # regression: no accuracy
    ls32 = evaluate_landscape(net.float(), directions, (axis, axis), x.float(), y.float(),
                              loss="mse",
                              engine=EngineConfig(path=path, device="cpu", batch_size=16))
    np.testing.assert_allclose(ls32.loss, expected, rtol=1e-5)


class _SqrtNet(nn.Module):
    """out = x · sqrt(w): NaN once w < 0, so some grid points have a NaN loss."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ torch.sqrt(self.w)


def test_nan_losses_are_recorded_as_computed_and_counted():
    net = _SqrtNet()
    x, y = torch.randn(20, 1), torch.randn(20, 1)
    layout = ParamLayout.of(net)
    d = Directions(torch.tensor([[1.0]]), layout, {"kind": "test"})
    axis = make_axis(-3, 1, 9)  # w = 1 + a < 0 for a < -1
    ls = evaluate_landscape(net, d, (axis,), x, y, loss="mse",
                            engine=EngineConfig(path="loop", device="cpu"))
    assert ls.done.all()
    bad = axis < -1
    assert np.isnan(ls.loss[bad]).all() and np.isfinite(ls.loss[~bad]).all()
    assert ls.n_nonfinite == int(bad.sum()) == ls.meta["n_nonfinite"]
    assert ls.minimum()[1] == pytest.approx(np.nanmin(ls.loss))


def test_each_path_says_whether_it_applies_and_why_not():
    from shenjing.analysis.landscape.paths import PATH_TYPES, Batch

    x, labels = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    models = {
        "mlp": _mlp(),
        "cnn": nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 10)).eval(),
        "bn first": nn.Sequential(nn.Flatten(), nn.BatchNorm1d(64), nn.Linear(64, 10)).eval(),
    }
    reasons = {(model, name): cls.applies(net, Batch(x, labels, "cross_entropy"))
               for model, net in models.items() for name, cls in PATH_TYPES.items()}
    assert all(why is None for (_, name), why in reasons.items()
               if name in ("loop", "vmap")), reasons
    assert reasons["mlp", "linear"] is None and reasons["mlp", "chain"] is None
    assert reasons["cnn", "linear"] is None and reasons["cnn", "linear-vmap"] is None
    assert reasons["cnn", "chain"] == "the first layer '0' is a convolution"
    for name in ("linear", "linear-vmap", "chain"):
        assert reasons["bn first", name] == ("first parametric module '1' is a BatchNorm1d, "
                                             "not Linear/Conv")
    soft = labels.float()
    assert PATH_TYPES["chain"].applies(models["mlp"], Batch(x, soft, "cross_entropy")) == \
        "the targets are not class indices"
    assert all(count_hooks(net) == 0 for net in models.values())  # every probe hook removed


def test_linear_path_refuses_models_it_does_not_fit():
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x * self.scale)

    x = torch.randn(5, 4)
    first, why = find_first_layer(Scaled(), x)
    assert first is None and "not Linear/Conv" in why
    shared = nn.Linear(4, 4)
    twice = nn.Sequential(shared, nn.ReLU(), shared)
    first, why = find_first_layer(twice, x)
    assert first is None and "runs 2 times" in why
    net = Scaled()
    with pytest.raises(UsageError, match="linear path does not apply"):
        Evaluator(net, flat_params(net), torch.zeros(1, 11), x, torch.zeros(5, dtype=torch.long),
                  loss="cross_entropy", classification=True,
                  config=EngineConfig(path="linear"))


def test_bn_recompute_policy_re_estimates_statistics():
    net = _bn_cnn()
    x, y = _data()
    d = random_directions(net, 2, seed=4)
    cfg = EngineConfig(path="loop", batch_size=32, bn="recompute")
    ev = Evaluator(net, flat_params(net), d.vectors, x, y, loss="cross_entropy",
                   classification=True, config=cfg, bn_data=x)
    loss, _ = ev.evaluate(np.zeros((1, 2)))
    # reference: statistics of x itself (one cumulative pass), then eval
    ref = _bn_cnn()
    bn = ref[1]
    bn.reset_running_stats()
    bn.momentum = None
    ref.train()
    with torch.no_grad():
        for i in range(0, 90, 32):
            ref(x[i:i + 32])
    ref.eval()
    with torch.no_grad():
        expected = float(nn.functional.cross_entropy(ref(x), y))
    assert loss[0] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(UsageError, match="needs the loop path"):
        Evaluator(net, flat_params(net), d.vectors, x, y, loss="cross_entropy",
                  classification=True, config=EngineConfig(path="linear", bn="recompute"))


def test_choose_engine_measures_and_records():
    net = _mlp()
    x, y = _data(200)
    d = random_directions(net, 2, seed=0)
    cfg = choose_engine(net, flat_params(net), d.vectors, x, y, loss="cross_entropy",
                        classification=True, config=EngineConfig(device="cpu"), n_points=100)
    assert cfg.path in ("loop", "linear", "linear-vmap", "chain")
    assert any(k.startswith("forward bs=") for k in cfg.measurements)
    assert any(k.startswith("path linear") for k in cfg.measurements)
    assert "fastest measured" in cfg.reason
    with pytest.raises(UsageError, match="unknown evaluation path 'fast'"):
        choose_engine(net, flat_params(net), d.vectors, x, y, loss="cross_entropy",
                      classification=True, config=EngineConfig(path="fast"))


def test_the_engine_records_the_thread_count_it_runs_with():
    """A config with threads=None would run with whatever count the process has, so a
    resume in another process could compute differently: the count is always recorded."""
    net = _mlp()
    x, y = _data(200)
    x = x.flatten(1)  # (samples, features) and a batch size: nothing to time the forward on
    d = random_directions(net, 2, seed=0)
    torch.set_num_threads(1)
    for path in ("loop", "linear", "auto"):
        cfg = choose_engine(net, flat_params(net), d.vectors, x, y, loss="cross_entropy",
                            classification=True, n_points=9,
                            config=EngineConfig(device="cpu", path=path, batch_size=64))
        assert cfg.threads == 1, (path, cfg)


def test_compiled_evaluation_uses_static_shapes(monkeypatch):
    """torch.compile's automatic dynamic shapes make the kernels depend on the batch sizes a
    process saw before (a resumed run would compute with other kernels): compile static."""
    seen = {}

    def fake_compile(model, **kwargs):
        seen.update(kwargs)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    net = _mlp()
    x, y = _data(50)
    d = random_directions(net, 2, seed=0)
    Evaluator(net, flat_params(net), d.vectors, x, y, loss="cross_entropy",
              classification=True, config=EngineConfig(path="loop", compile=True))
    assert seen.get("dynamic") is False


def test_plane_records_provenance_and_symmetric_grid():
    net = _mlp()
    x, y = _data()
    ls = plane(net, x, y, loss="cross_entropy", steps=6, range_=(-1, 1), device="cpu",
               provenance={"note": "test"})
    assert ls.axes[0][0] == -1 and ls.axes[0][-1] == 1 and 0.0 in ls.axes[0]
    np.testing.assert_allclose(ls.axes[0], -ls.axes[0][::-1], atol=1e-15)
    i, j = ls.center_index
    with torch.no_grad():
        assert ls.loss[i, j] == pytest.approx(float(nn.functional.cross_entropy(net(x), y)),
                                              rel=1e-6)
    for key in ("engine", "directions", "bn_policy", "data_sha256", "center_sha256",
                "provenance", "loss_name"):
        assert key in ls.meta
    assert ls.meta["directions"]["seed"] == 0 and ls.meta["directions"]["norm"] == "filter"
    assert ls.meta["engine"]["path"] in ("loop", "linear", "chain")


def test_device_auto_and_bad_device():
    from shenjing._device import resolve_device

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.gpu
@pytest.mark.parametrize(("make", "paths"), [
    (_bn_cnn, ("loop", "linear", "vmap")),
    (_mlp, ("loop", "linear-vmap", "chain", "vmap")),
])
def test_gpu_paths_agree_with_cpu(make, paths):
    net = make()
    x, y = _data()
    d = random_directions(net, 2, seed=4)
    ref, ref_acc = _evaluate(net, "loop", 90, dtype="float64")
    for path in paths:
        cfg = EngineConfig(path=path, batch_size=32, device="cuda", chunk=3)
        ev = Evaluator(net, flat_params(net), d.vectors, x, y, loss="cross_entropy",
                       classification=True, config=cfg)
        loss, acc = ev.evaluate(COEFFS)
        np.testing.assert_allclose(loss, ref, rtol=1e-4)
        np.testing.assert_array_equal(acc, ref_acc)


@pytest.mark.slow
def test_compiled_loop_agrees():
    net = _bn_cnn()
    ref, _ = _evaluate(net, "loop", 32)
    x, y = _data()
    d = random_directions(net, 2, seed=4)
    cfg = EngineConfig(path="loop", batch_size=32, compile=True)
    ev = Evaluator(net, flat_params(net), d.vectors, x, y, loss="cross_entropy",
                   classification=True, config=cfg)
    loss, _ = ev.evaluate(COEFFS)
    np.testing.assert_allclose(loss, ref, rtol=1e-5)


def test_linear_path_without_the_first_layer_cache_agrees():
    net = _bn_cnn()
    x, y = _data()
    d = random_directions(net, 2, seed=4)
    results = []
    for budget in (512 * 2**20, 0):
        ev = Evaluator(net, flat_params(net), d.vectors, x, y, loss="cross_entropy",
                       classification=True, config=EngineConfig(path="linear", batch_size=32,
                                                                 chunk=3))
        ev.path.cache_bytes = budget
        results.append(ev.evaluate(COEFFS)[0])
        assert (ev.path._cache is not None) == (budget > 0)
    np.testing.assert_allclose(results[1], results[0], rtol=1e-6)


def test_loss_function_sums_match_means_and_bad_names():
    from shenjing.errors import UnknownNameError
    from shenjing.training.losses import loss_function, loss_task

    out, tgt = torch.randn(10, 3), torch.randn(10, 3)
    total = loss_function("mse", "sum")(out[:4], tgt[:4]) + loss_function("mse", "sum")(
        out[4:], tgt[4:])
    assert float(total) / 10 == pytest.approx(float(nn.functional.mse_loss(out, tgt)))
    assert loss_function("mse", "none")(out, tgt).shape == (10,)
    logits, labels = torch.randn(10, 4), torch.randint(0, 4, (10,))
    assert float(loss_function("cross_entropy")(logits, labels)) == pytest.approx(
        float(nn.functional.cross_entropy(logits, labels)))
    assert loss_task("nll") == "classification" and loss_task("mse") == "regression"
    with pytest.raises(UnknownNameError, match="unknown loss 'crossentropy'.*cross_entropy"):
        loss_function("crossentropy")
    with pytest.raises(UsageError, match="reduction must be"):
        loss_function("mse", "avg")  # type: ignore[arg-type]


def test_plane_takes_an_engine_config_or_the_keywords_that_build_one():
    net = _mlp()
    x, y = torch.randn(40, 1, 8, 8), torch.randint(0, 10, (40,))
    kw = dict(loss="cross_entropy", steps=3, range_=(-1, 1))
    by_keywords = plane(net, x, y, engine="loop", device="cpu", batch_size=16, **kw)
    config = EngineConfig(path="loop", device="cpu", batch_size=16)
    by_config = plane(net, x, y, engine=config, **kw)
    assert by_config.loss.tobytes() == by_keywords.loss.tobytes()
    assert by_config.meta["engine"]["batch_size"] == 16
    # a keyword refines a given config
    refined = plane(net, x, y, engine=config, batch_size=8, **kw)
    assert refined.meta["engine"]["batch_size"] == 8


def test_bn_recompute_with_the_automatic_engine_on_a_grid_of_more_than_four_points():
    """The automatic choice times the loop path on a real grid, with the BatchNorm samples
    (it once built its timing evaluator without them and refused every such grid)."""
    from shenjing.analysis.landscape import plane

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    auto = plane(net, x, y, loss="cross_entropy", steps=3, bn="recompute", bn_data=x,
                 device="cpu")
    given = plane(net, x, y, loss="cross_entropy", steps=3, engine="loop", bn="recompute",
                  bn_data=x, device="cpu", batch_size=auto.meta["engine"]["batch_size"])
    assert auto.meta["engine"]["path"] == "loop" and auto.complete
    np.testing.assert_allclose(auto.loss, given.loss, rtol=1e-6)
