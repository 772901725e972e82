"""Attribution maps: which input pixels a classifier's score depends on.

The methods are Captum's (Saliency, IntegratedGradients, NoiseTunnel/SmoothGrad,
Occlusion, LayerGradCam); shenjing adds the checks (one line each, before any compute),
the batching, eval mode, the token → patch-grid reshape for Grad-CAM on a ViT, the
completeness check of Integrated Gradients, and one display map per input.

Display maps are ``(N, H, W)``: saliency and SmoothGrad take the largest |gradient| over
channels (Simonyan et al., 2014); Integrated Gradients sums the signed per-channel
attributions (so the map still sums to the attributed score change); occlusion hides all
channels of a window at once, so every channel of a pixel carries the same value, the one
shown;
Grad-CAM is ReLU(Σ_k α_k A_k) (Selvaraju et al., 2017) upsampled bilinearly to H×W.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from shenjing._checks import bounded_int, finite_float
from shenjing.errors import ShapeMismatchError, UsageError, unknown_name

from ._model import (
    check_layer,
    check_targets,
    class_outputs,
    default_layer,
    eval_mode,
    model_device,
    tokens_as_grid,
)

METHODS = ("saliency", "integrated_gradients", "smoothgrad", "occlusion", "gradcam")
#: methods whose maps keep a sign
SIGNED = {"integrated_gradients", "occlusion"}
#: Integrated Gradients' default steps and rule: chosen so completeness holds within 1 %
#: on ≥ 95 % of MNIST test inputs of simple_cnn (see the tests and the lead's report)
STEPS = 64
IG_METHOD = "gausslegendre"
#: Captum 0.9's ``riemann_trapezoid`` step sizes sum to (steps − 1)/steps, so its
#: attributions fall short of f(x) − f(baseline) by 1/steps even on a linear model: refused
IG_RULES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle")

AttributionFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Completeness:
    """Integrated Gradients' completeness per sample: Σ attributions against
    f(x) − f(baseline) of the target logit; ``delta`` is Captum's convergence delta and
    ``relative_error`` = |delta| / max(|f(x) − f(baseline)|, 1e-12)."""

    sum_attr: np.ndarray
    f_x: np.ndarray
    f_baseline: np.ndarray
    delta: np.ndarray
    relative_error: np.ndarray

    def fraction_within(self, tol: float = 0.01) -> float:
        return float(np.mean(self.relative_error <= tol))

    @property
    def median(self) -> float:
        return float(np.median(self.relative_error))

    @property
    def p95(self) -> float:
        return float(np.percentile(self.relative_error, 95))

    def text(self) -> str:
        return (f"completeness: relative error ≤ 1% on {self.fraction_within():.1%} of "
                f"{len(self.delta)} inputs (median {self.median:.2e}, 95th pct "
                f"{self.p95:.2e})")

    def to_dict(self) -> dict[str, Any]:
        return {"fraction_within_1pct": self.fraction_within(), "median": self.median,
                "p95": self.p95, "max": float(np.max(self.relative_error)),
                "relative_error": self.relative_error.tolist(), "text": self.text()}


@dataclass(frozen=True)
class AttributionMaps:
    """The maps of one method on N inputs: ``maps`` ``(N, H, W)`` for display, ``raw`` the
    method's own output (``(N, C, H, W)``; Grad-CAM: the ``(N, h, w)`` CAM before
    upsampling), the classes attributed (``targets``), the model's ``predictions`` and
    ``probabilities`` ``(N, classes)``, and every option used."""

    method: str
    maps: np.ndarray
    raw: np.ndarray
    targets: np.ndarray
    predictions: np.ndarray
    probabilities: np.ndarray
    signed: bool
    options: dict[str, Any] = field(default_factory=dict)
    layer: str | None = None
    completeness: Completeness | None = None

    @property
    def n_samples(self) -> int:
        return int(self.maps.shape[0])

    def __repr__(self) -> str:
        extra = f", layer={self.layer!r}" if self.layer else ""
        return (f"AttributionMaps(method={self.method!r}, maps={tuple(self.maps.shape)}"
                f"{extra}, signed={self.signed})")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "shape": list(self.maps.shape), "signed": self.signed,
                "layer": self.layer, "options": dict(self.options),
                "targets": self.targets.tolist(), "predictions": self.predictions.tolist(),
                "completeness": (self.completeness.to_dict()
                                 if self.completeness is not None else None)}


# ---- checks ------------------------------------------------------------------------------
def _as_input(x: Any) -> torch.Tensor:
    t = torch.as_tensor(x).float() if not isinstance(x, torch.Tensor) else x.float()
    if t.ndim != 4:
        raise ShapeMismatchError(f"attribution takes images shaped (samples, channels, "
                                 f"height, width); got {tuple(t.shape)}")
    if len(t) == 0:
        raise UsageError("attribution needs at least one input, got 0 samples")
    return t


def resolve_targets(target: Any, logits: torch.Tensor, labels: Any) -> torch.Tensor:
    """``'predicted'`` | ``'label'`` | one class | one class per sample → ``(N,)`` int64."""
    n, n_classes = logits.shape
    if isinstance(target, str):
        if target == "predicted":
            return logits.argmax(dim=1).cpu()
        if target == "label":
            if labels is None:
                raise UsageError("target='label' needs labels=…; give the inputs' labels or "
                                 "use target='predicted'")
            t = torch.as_tensor(labels).long().reshape(-1).cpu()
        else:
            raise UsageError(f"target {target!r}: expected 'predicted', 'label', a class "
                             "number or one class per input, e.g. target='predicted'")
    elif isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        t = torch.full((n,), int(target), dtype=torch.long)
    else:
        t = torch.as_tensor(target).long().reshape(-1).cpu()
    if len(t) != n:
        raise UsageError(f"{len(t)} targets for {n} inputs; give one class per input or a "
                         "single class, e.g. target=0")
    check_targets(t, n_classes)
    return t


def resolve_baseline(baseline: Any, x: torch.Tensor, data_mean: Any) -> tuple[torch.Tensor, str]:
    """The baseline ``(N, C, H, W)`` (broadcast) and its kind for the record."""
    if isinstance(baseline, str):
        if baseline == "zeros":
            return torch.zeros_like(x), "zeros"
        if baseline == "mean":
            if data_mean is None:
                raise UsageError("baseline='mean' needs data_mean=… (the training inputs' "
                                 "mean image, shaped (channels, height, width)); or use "
                                 "baseline='zeros'")
            b = torch.as_tensor(data_mean).float().to(x.device)
            kind = "mean"
        else:
            raise UsageError(f"baseline {baseline!r}: expected 'zeros', 'mean' or a tensor "
                             "shaped like one input, e.g. baseline='zeros'")
    else:
        b = torch.as_tensor(baseline).float().to(x.device)
        kind = "tensor"
    if b.shape == x.shape[1:]:
        b = b.unsqueeze(0)
    if b.ndim != 4 or b.shape[1:] != x.shape[1:] or b.shape[0] not in (1, len(x)):
        raise ShapeMismatchError(
            f"baseline shaped {tuple(b.shape)} does not fit inputs shaped {tuple(x.shape)}: "
            f"give one image {tuple(x.shape[1:])} or one per input")
    return b.expand_as(x).contiguous(), kind


def _default_window(h: int, w: int) -> int:
    return max(1, round(min(h, w) / 7))


# ---- the methods -------------------------------------------------------------------------
def _chunks(n: int, size: int) -> list[slice]:
    return [slice(s, min(n, s + size)) for s in range(0, n, size)]


def attribute(model: nn.Module, x: Any, *, method: str | AttributionFn,
              target: str | int | Sequence[int] | Any = "predicted", labels: Any = None,
              baseline: str | torch.Tensor = "zeros", data_mean: Any = None,
              steps: int = STEPS, ig_method: str = IG_METHOD, noise: float = 0.15,
              n_noise: int = 25, window: int | None = None, stride: int | None = None,
              layer: str | None = None, batch_size: int = 128,
              device: str | torch.device | None = None, seed: int = 0) -> AttributionMaps:
    """Attribution maps of ``model`` for the classes ``target`` on inputs ``x``
    ``(N, C, H, W)``.

    ``method``: one of :data:`METHODS` or a callable ``(model, x, targets) → maps``
    (``(N, H, W)`` or ``(N, C, H, W)``, channels summed). Integrated Gradients integrates
    from ``baseline`` (``'zeros'``, ``'mean'`` = ``data_mean``, or a tensor) in ``steps``
    points (``ig_method`` rule), in batches of ``batch_size`` model rows; SmoothGrad
    averages |gradient| over ``n_noise`` copies with Gaussian noise of std
    ``noise × (max − min)`` of the inputs (Smilkov et al., 2017: 10–20 %); occlusion slides
    a ``window``² patch (all channels) by ``stride`` (default: side/7 and the window),
    filled with the baseline; Grad-CAM uses ``layer`` (default :func:`default_layer`).

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    >>> attribute(net, torch.ones(3, 1, 2, 2), method="saliency").maps.shape
    (3, 2, 2)
    """
    x = _as_input(x)
    batch_size = bounded_int("batch_size", batch_size, low=1, example=128)
    name = method if isinstance(method, str) else getattr(method, "__name__", "custom")
    if isinstance(method, str) and method not in METHODS:
        raise unknown_name("attribution method", method, METHODS)
    if name == "integrated_gradients":
        steps = bounded_int("steps", steps, low=1, example=STEPS,
                            why="Integrated Gradients needs points on the path")
        if ig_method == "riemann_trapezoid":
            raise UsageError("ig_method='riemann_trapezoid': Captum's trapezoid weights sum to "
                             "(steps − 1)/steps, breaking completeness; use "
                             "ig_method='gausslegendre' or 'riemann_middle'")
        if ig_method not in IG_RULES:
            raise unknown_name("Integrated Gradients rule", ig_method, IG_RULES)
    if name == "smoothgrad":
        n_noise = bounded_int("n_noise", n_noise, low=1, example=25)
        noise = finite_float("noise", noise, low=0.0, low_open=True, example=0.15)
    dev = torch.device(device) if device is not None else model_device(model)
    old_dev = model_device(model)
    model.to(dev)
    x = x.to(dev)
    try:
        b, b_kind = resolve_baseline(baseline, x, data_mean)  # checked before any forward
        with eval_mode(model):
            logits = class_outputs(model, x, batch_size)
            targets = resolve_targets(target, logits, labels)
            options: dict[str, Any] = {"batch_size": batch_size, "target": (
                target if isinstance(target, (str, int)) else "per-sample")}
            comp = None
            lname = None
            if callable(method) and not isinstance(method, str):
                raw = method(model, x, targets.to(dev)).detach().float()
                maps = raw.sum(dim=1) if raw.ndim == 4 else raw
                options["combine"] = "channels summed"
                signed = True
            elif name == "gradcam":
                lname = layer if layer is not None else default_layer(model, x)
                raw, maps = _gradcam(model, x, targets.to(dev), lname, batch_size)
                options.update(layer=lname, relu=True, upsample="bilinear",
                               combine="ReLU(Σ_k α_k A_k), upsampled")
                signed = False
            else:
                raw, comp = _input_method(model, x, targets.to(dev), b, name, options,
                                          steps=steps, ig_method=ig_method, noise=noise,
                                          n_noise=n_noise, window=window, stride=stride,
                                          batch_size=batch_size, seed=seed, logits=logits)
                if name == "occlusion":
                    # the window covers every channel, so each channel carries the same
                    # value (the score drop of the windows over that pixel): take one
                    maps = raw.mean(dim=1)
                    options["combine"] = "the score drop of the windows over each pixel " \
                                         "(all channels occluded together)"
                elif name in SIGNED:
                    maps = raw.sum(dim=1)
                    options["combine"] = "channels summed (signed)"
                else:
                    maps = raw.abs().amax(dim=1)
                    options["combine"] = "max over channels of |gradient|"
                if name in ("integrated_gradients", "occlusion"):
                    options["baseline"] = b_kind
                signed = name in SIGNED
            probs = torch.softmax(logits, dim=1)
    finally:
        model.to(old_dev)
    if tuple(maps.shape) != (x.shape[0], x.shape[2], x.shape[3]):
        raise ShapeMismatchError(f"method {name!r} returned maps shaped {tuple(maps.shape)};"
                                 f" expected {(x.shape[0], x.shape[2], x.shape[3])} or "
                                 f"{tuple(x.shape)}")
    return AttributionMaps(
        method=name, maps=maps.detach().cpu().numpy().astype(np.float32),
        raw=raw.detach().cpu().numpy().astype(np.float32), targets=targets.numpy(),
        predictions=logits.argmax(dim=1).cpu().numpy(),
        probabilities=probs.cpu().numpy().astype(np.float32), signed=signed,
        options=options, layer=lname, completeness=comp)


def _input_method(model: nn.Module, x: torch.Tensor, targets: torch.Tensor,
                  b: torch.Tensor, name: str, options: dict[str, Any], *, steps: int,
                  ig_method: str, noise: float, n_noise: int, window: int | None,
                  stride: int | None, batch_size: int, seed: int, logits: torch.Tensor
                  ) -> tuple[torch.Tensor, Completeness | None]:
    """Per-pixel methods: Captum on chunks of inputs, each chunk's model rows batched."""
    from captum.attr import IntegratedGradients, NoiseTunnel, Occlusion, Saliency

    n, c, h, w = x.shape
    out = []
    deltas = []
    if name == "integrated_gradients":
        # one chunk of inputs × (steps per forward) rows ≤ batch_size
        chunk = max(1, min(n, batch_size))
        options.update(steps=steps, ig_method=ig_method)
        ig = IntegratedGradients(model)
        for s in _chunks(n, chunk):
            a, d = ig.attribute(x[s], baselines=b[s], target=targets[s], n_steps=steps,
                                method=ig_method, internal_batch_size=batch_size,
                                return_convergence_delta=True)
            out.append(a.detach())
            deltas.append(d.detach())
        raw = torch.cat(out)
        delta = torch.cat(deltas).float().cpu()
        with torch.no_grad():
            fb = class_outputs(model, b, batch_size)
        idx = torch.arange(n)
        fx = logits[idx, targets.cpu()].cpu() if logits.device.type == "cpu" else \
            logits.cpu()[idx, targets.cpu()]
        fbt = fb.cpu()[idx, targets.cpu()]
        gap = (fx - fbt).double()
        sums = raw.double().sum(dim=(1, 2, 3)).cpu()
        rel = (sums - gap).abs() / gap.abs().clamp_min(1e-12)
        return raw, Completeness(sum_attr=sums.numpy(), f_x=fx.double().numpy(),
                                 f_baseline=fbt.double().numpy(),
                                 delta=delta.double().numpy(), relative_error=rel.numpy())
    if name == "saliency":
        sal = Saliency(model)
        for s in _chunks(n, batch_size):
            out.append(sal.attribute(x[s].clone().requires_grad_(True), target=targets[s],
                                     abs=True).detach())
        return torch.cat(out), None
    if name == "smoothgrad":
        span = float(x.max() - x.min()) or 1.0
        std = noise * span
        options.update(noise=noise, noise_std=std, n_noise=n_noise, seed=seed)
        nt = NoiseTunnel(Saliency(model))
        chunk = max(1, min(n, batch_size))
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            torch.manual_seed(seed)
            for s in _chunks(n, chunk):
                per = max(1, batch_size // (s.stop - s.start))
                out.append(nt.attribute(x[s].clone().requires_grad_(True), nt_type="smoothgrad",
                                        nt_samples=n_noise, nt_samples_batch_size=per,
                                        stdevs=std, target=targets[s], abs=True).detach())
        return torch.cat(out), None
    # occlusion
    k = window if window is not None else _default_window(h, w)
    k = bounded_int("window", k, low=1, high=min(h, w), example=_default_window(h, w))
    st = bounded_int("stride", stride if stride is not None else k, low=1, high=min(h, w),
                     example=k)
    options.update(window=k, stride=st)
    occ = Occlusion(model)
    n_windows = (math.floor((h - k) / st) + 1) * (math.floor((w - k) / st) + 1)
    options["n_windows"] = n_windows
    chunk = max(1, min(n, batch_size))
    with torch.no_grad():
        for s in _chunks(n, chunk):
            per = max(1, batch_size // (s.stop - s.start))
            out.append(occ.attribute(x[s], sliding_window_shapes=(c, k, k),
                                     strides=(c, st, st), baselines=b[s], target=targets[s],
                                     perturbations_per_eval=per).detach())
    return torch.cat(out), None


def _gradcam(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, layer: str,
             batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM on ``layer``: ``(N, h, w)`` CAM and ``(N, H, W)`` upsampled."""
    from captum.attr import LayerAttribution, LayerGradCam

    module, kind = check_layer(model, x, layer)
    h, w = x.shape[2:]
    cams = []
    if kind == "tokens":
        with tokens_as_grid(module, tuple(x.shape[1:])) as grid:
            gc = LayerGradCam(model, grid)
            for s in _chunks(len(x), batch_size):
                cams.append(gc.attribute(x[s], target=targets[s],
                                         relu_attributions=True).detach())
    else:
        gc = LayerGradCam(model, module)
        for s in _chunks(len(x), batch_size):
            cams.append(gc.attribute(x[s], target=targets[s], relu_attributions=True).detach())
    cam = torch.cat(cams)
    up = LayerAttribution.interpolate(cam, (int(h), int(w)), interpolate_mode="bilinear")
    return cam[:, 0], up[:, 0]
