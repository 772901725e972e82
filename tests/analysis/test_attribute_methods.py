"""attribute(): each method against an exact, hand-computed attribution on models with
hand-set weights; the checks (one line, before compute); eval mode; no hook left behind."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shenjing.analysis.attribute import METHODS, attribute, default_layer, spatial_layers
from shenjing.errors import NotApplicableError, ShapeMismatchError, UsageError
from shenjing.hooks import count_hooks


def _linear(c: int = 1, h: int = 6, w: int = 6, k: int = 3, seed: int = 0) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, k))
    with torch.no_grad():
        net[1].weight.copy_(torch.randn(k, c * h * w, generator=g))
        net[1].bias.copy_(torch.randn(k, generator=g))
    return net


def _x(n: int = 4, c: int = 1, h: int = 6, w: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def _w(net: nn.Sequential, targets: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return net[1].weight.detach().numpy()[targets].reshape(len(targets), *shape)


# ---- exact attributions on a linear model --------------------------------------------------
def test_saliency_of_a_linear_model_is_abs_w_max_over_channels():
    net, x = _linear(c=2), _x(c=2)
    a = attribute(net, x, method="saliency")
    w = _w(net, a.targets, (2, 6, 6))
    np.testing.assert_allclose(a.raw, np.abs(w), atol=1e-6)
    np.testing.assert_allclose(a.maps, np.abs(w).max(axis=1), atol=1e-6)
    assert not a.signed and a.maps.dtype == np.float32


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_middle"])
def test_integrated_gradients_of_a_linear_model_is_x_minus_baseline_times_w(rule):
    net, x = _linear(c=2), _x(c=2)
    mean = torch.full((2, 6, 6), 0.25)
    a = attribute(net, x, method="integrated_gradients", baseline="mean", data_mean=mean,
                  steps=7, ig_method=rule, target="label", labels=[0, 1, 2, 1])
    w = _w(net, np.array([0, 1, 2, 1]), (2, 6, 6))
    expected = (x.numpy() - 0.25) * w
    np.testing.assert_allclose(a.raw, expected, atol=1e-5)
    np.testing.assert_allclose(a.maps, expected.sum(axis=1), atol=1e-5)
    # completeness: Σ attributions = f(x) − f(baseline), computed here directly
    with torch.no_grad():
        fx = net(x).numpy()[np.arange(4), [0, 1, 2, 1]]
        fb = net(mean.expand(4, -1, -1, -1)).numpy()[np.arange(4), [0, 1, 2, 1]]
    c = a.completeness
    assert c is not None
    np.testing.assert_allclose(c.f_x - c.f_baseline, fx - fb, atol=1e-5)
    np.testing.assert_allclose(c.sum_attr, fx - fb, atol=1e-4)
    assert c.fraction_within(0.01) == 1.0 and c.p95 < 1e-4
    assert a.options["steps"] == 7 and a.options["baseline"] == "mean"
    assert a.options["ig_method"] == rule


def test_occlusion_of_a_linear_model_is_window_sums():
    net, x = _linear(c=2), _x(c=2)
    a = attribute(net, x, method="occlusion", window=3, stride=3)
    w = _w(net, a.targets, (2, 6, 6))
    contrib = (x.numpy() * w).sum(axis=1)  # baseline zeros, all channels in the window
    expected = np.zeros_like(contrib)
    for i in range(0, 6, 3):
        for j in range(0, 6, 3):
            expected[:, i:i + 3, j:j + 3] = contrib[:, i:i + 3, j:j + 3].sum(
                axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(a.maps, expected, atol=1e-5)
    assert a.options["window"] == 3 and a.options["stride"] == 3
    assert a.options["n_windows"] == 4 and a.signed


def test_smoothgrad_of_a_linear_model_is_abs_w_and_records_the_noise():
    net, x = _linear(), _x()
    a = attribute(net, x, method="smoothgrad", noise=0.2, n_noise=4)
    np.testing.assert_allclose(a.maps, np.abs(_w(net, a.targets, (6, 6))), atol=1e-6)
    span = float(x.max() - x.min())
    assert a.options["noise_std"] == pytest.approx(0.2 * span)
    assert a.options["n_noise"] == 4 and a.options["seed"] == 0


# ---- Grad-CAM on a model whose last conv map is known --------------------------------------
class _GapHead(nn.Module):
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.fc = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(weight)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.fc(a.mean(dim=(2, 3)))


def _cam_net() -> tuple[nn.Sequential, np.ndarray, np.ndarray, np.ndarray]:
    wk = np.array([1.5, -0.5], dtype=np.float32)   # 1×1 conv: A_k = w_k·x + b_k
    bk = np.array([0.1, 0.2], dtype=np.float32)
    head = np.array([[1.0, 2.0], [-1.0, 0.5], [0.3, -2.0]], dtype=np.float32)
    conv = nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(wk).reshape(2, 1, 1, 1))
        conv.bias.copy_(torch.from_numpy(bk))
    net = nn.Sequential()
    net.add_module("conv", conv)
    net.add_module("pool", nn.AvgPool2d(2))
    net.add_module("head", _GapHead(torch.from_numpy(head)))
    return net, wk, bk, head


def test_gradcam_equals_the_hand_computed_cam():
    net, wk, bk, head = _cam_net()
    x = _x(n=3, h=8, w=8)
    a = attribute(net, x, method="gradcam", target=[0, 1, 2])
    assert a.layer == "pool" == default_layer(net, x)
    xs = x.numpy()[:, 0]
    pooled = xs.reshape(3, 4, 2, 4, 2).mean(axis=(2, 4))            # (3, 4, 4)
    acts = wk[None, :, None, None] * pooled[:, None] + bk[None, :, None, None]
    alpha = head[[0, 1, 2]] / 16.0                                   # d score / d A_k, averaged
    cam = np.maximum((alpha[:, :, None, None] * acts).sum(axis=1), 0)
    np.testing.assert_allclose(a.raw, cam, atol=1e-6)
    up = F.interpolate(torch.from_numpy(cam)[:, None], size=(8, 8), mode="bilinear",
                       align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(a.maps, up, atol=1e-6)
    assert a.maps.shape == (3, 8, 8) and not a.signed


def test_gradcam_on_a_vit_reshapes_tokens_to_the_patch_grid():
    from shenjing.models import build_model

    torch.manual_seed(0)
    vit = build_model("vit", (1, 28, 28), 10)
    x = torch.rand(2, 1, 28, 28)
    a = attribute(vit, x, method="gradcam")
    assert a.layer is not None and a.layer.startswith("blocks.")
    assert a.raw.shape == (2, 4, 4) and a.maps.shape == (2, 28, 28)   # 16 patches of 7 px
    assert np.isfinite(a.maps).all() and a.maps.max() > 0
    assert count_hooks(vit) == 0
    names = [n for n, _ in spatial_layers(vit, x)]
    assert a.layer in names


class _Tokens(nn.Module):
    """13 tokens of width 4 on an 8×8 input: no square patch grid."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(64, 13 * 4)
        self.tokens = nn.Unflatten(1, (13, 4))
        self.head = nn.Linear(52, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.tokens(self.embed(x.flatten(1))).flatten(1))


def test_gradcam_refuses_tokens_without_a_grid_and_non_spatial_layers():
    with pytest.raises(NotApplicableError,
                       match=r"'tokens' outputs \(13, 4\).*Spatial layers: none"):
        attribute(_Tokens(), _x(h=8, w=8), method="gradcam", layer="tokens")
    with pytest.raises(NotApplicableError, match="no spatial layer"):
        attribute(_Tokens(), _x(h=8, w=8), method="gradcam")
    net, *_ = _cam_net()
    with pytest.raises(NotApplicableError,
                       match=r"'head' outputs \(3,\).*Spatial layers: conv, pool"):
        attribute(net, _x(h=8, w=8), method="gradcam", layer="head")
    with pytest.raises(UsageError, match="Did you mean 'pool'"):
        attribute(net, _x(h=8, w=8), method="gradcam", layer="pol")


# ---- bad input: one line, before any compute ------------------------------------------------
class _Counting(nn.Module):
    def __init__(self, out_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.fc = nn.Linear(36, 3)
        self.calls = 0
        self.out_shape = out_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        y = self.fc(x.flatten(1))
        return y.reshape(len(x), *self.out_shape) if self.out_shape else y


@pytest.mark.parametrize(("kwargs", "error", "pattern"), [
    ({"method": "salency"}, UsageError, "Did you mean 'saliency'"),
    ({"method": "integrated_gradients", "steps": 0}, UsageError, "steps"),
    ({"method": "saliency", "target": 3}, UsageError, r"target class 3 is out of range.*0–2"),
    ({"method": "saliency", "target": [0, 1]}, UsageError, "2 targets for 4 inputs"),
    ({"method": "saliency", "target": "label"}, UsageError, "needs labels"),
    ({"method": "integrated_gradients", "baseline": torch.zeros(1, 5, 5)},
     ShapeMismatchError, r"baseline shaped \(1, 5, 5\) does not fit"),
    ({"method": "integrated_gradients", "baseline": "mean"}, UsageError, "needs data_mean"),
    ({"method": "smoothgrad", "n_noise": 0}, UsageError, "n_noise"),
    ({"method": "integrated_gradients", "ig_method": "riemann_trapezoid"}, UsageError,
     r"sum to \(steps − 1\)/steps"),
    ({"method": "integrated_gradients", "ig_method": "simpson"}, UsageError,
     "Integrated Gradients rule"),
    ({"method": "occlusion", "window": 9}, UsageError, "window"),
])
def test_bad_options_fail_in_one_line(kwargs, error, pattern):
    with pytest.raises(error, match=pattern) as info:
        attribute(_Counting(), _x(), **kwargs)
    assert "\n" not in str(info.value)


def test_bad_names_and_steps_fail_before_any_forward():
    model = _Counting()
    for kwargs in ({"method": "salency"}, {"method": "integrated_gradients", "steps": 0},
                   {"method": "integrated_gradients", "baseline": torch.zeros(2, 2)},
                   {"method": "integrated_gradients", "baseline": "mean"}):
        with pytest.raises(UsageError):
            attribute(model, _x(), **kwargs)
    assert model.calls == 0


def test_a_non_classifier_is_refused():
    with pytest.raises(NotApplicableError, match=r"returns \(4, 3, 1\).*class scores"):
        attribute(_Counting(out_shape=(3, 1)), _x(), method="saliency")
    with pytest.raises(ShapeMismatchError, match="samples, channels, height, width"):
        attribute(_Counting(), torch.rand(4, 36), method="saliency")


# ---- eval mode, batching, user methods, hooks ------------------------------------------------
def _small_cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Dropout(0.5), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 36, 3))


@pytest.mark.parametrize("method", METHODS)
def test_eval_mode_during_the_call_and_training_flags_restored(method):
    net = _small_cnn()
    net.train()
    net[3].eval()  # a mixed state must come back as it was
    x = _x()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        before = net.eval()(x)
    net.train()
    net[3].eval()
    a1 = attribute(net, x, method=method, steps=8, n_noise=3)
    a2 = attribute(net, x, method=method, steps=8, n_noise=3)
    np.testing.assert_allclose(a1.maps, a2.maps, atol=1e-6)  # no dropout, no BN update
    assert [m.training for m in net.modules()] == [True, True, True, True, False, True,
                                                   True, True, True]
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k
    with torch.no_grad():
        np.testing.assert_allclose(net.eval()(x).numpy(), before.numpy(), atol=0)
    np.testing.assert_allclose(a1.probabilities, torch.softmax(before, 1).numpy(), atol=1e-6)
    np.testing.assert_array_equal(a1.predictions, before.argmax(1).numpy())


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients", "occlusion", "gradcam"])
def test_batched_equals_one_batch(method):
    net, x = _small_cnn().eval(), _x(n=5)
    big = attribute(net, x, method=method, steps=10, batch_size=128)
    small = attribute(net, x, method=method, steps=10, batch_size=2)
    np.testing.assert_allclose(small.maps, big.maps, atol=1e-5, rtol=1e-4)


def test_integrated_gradients_completeness_on_a_relu_cnn():
    net, x = _small_cnn().eval(), _x(n=6)
    a = attribute(net, x, method="integrated_gradients", steps=64)
    c = a.completeness
    assert c is not None
    with torch.no_grad():
        fx = net(x).numpy()[np.arange(6), a.targets]
        fb = net(torch.zeros_like(x)).numpy()[np.arange(6), a.targets]
    np.testing.assert_allclose(c.f_x - c.f_baseline, fx - fb, atol=1e-5)
    np.testing.assert_allclose(c.sum_attr, a.raw.sum(axis=(1, 2, 3)), rtol=1e-4, atol=1e-6)
    rel = np.abs(c.sum_attr - (fx - fb)) / np.abs(fx - fb)
    np.testing.assert_allclose(c.relative_error, rel, rtol=1e-3, atol=1e-7)
    assert "completeness" in c.text() and c.to_dict()["fraction_within_1pct"] == \
        c.fraction_within(0.01)


def test_a_user_callable_method():
    net, x = _linear(), _x()

    def edges(_model, inputs, _targets):
        return F.pad((inputs[:, :, 1:] - inputs[:, :, :-1]).abs(), (0, 0, 0, 1))

    a = attribute(net, x, method=edges)
    expected = np.pad(np.abs(np.diff(x.numpy()[:, 0], axis=1)), ((0, 0), (0, 1), (0, 0)))
    np.testing.assert_allclose(a.maps, expected, atol=1e-6)
    assert a.method == "edges"


class _Fuse(nn.Module):
    """A CNN whose forward raises on its ``fuse``-th call (after its conv ran)."""

    def __init__(self, fuse: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.head = nn.Linear(72, 3)
        self.fuse = fuse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x)
        self.fuse -= 1
        if self.fuse == 0:
            raise RuntimeError("boom midway through forward")
        return self.head(torch.relu(a).flatten(1))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("fuse", [1, 2, 3, 4])
def test_no_hook_left_also_when_forward_raises(method, fuse):
    net = _Fuse(fuse)
    try:
        attribute(net, _x(), method=method, steps=4, n_noise=2, batch_size=2)
    except RuntimeError as exc:
        assert "boom" in str(exc)
    assert count_hooks(net) == 0
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
               for m in net.modules())
    assert all(m.training for m in net.modules())


def test_no_hook_left_on_the_vit_when_forward_raises():
    from shenjing.models import build_model

    torch.manual_seed(0)
    vit = build_model("vit", (1, 28, 28), 10)
    layer = default_layer(vit, torch.rand(1, 1, 28, 28))
    block = vit.get_submodule(layer)
    calls = {"n": 0}

    def boom(_m, _a, _o):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom in the block")

    handle = block.register_forward_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        attribute(vit, torch.rand(2, 1, 28, 28), method="gradcam", layer=layer)
    handle.remove()
    assert count_hooks(vit) == 0
