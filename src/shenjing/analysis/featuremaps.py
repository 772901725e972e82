"""Feature maps: what one layer outputs for one input, and how that changes with training.

Pure computation (no plotting). A layer's output for one sample is either *spatial*,
``(channels, height, width)`` — a conv-like layer, drawn as a grid of channel images — or
a *vector* ``(features,)`` — a linear layer, drawn as a strip, never reshaped into a fake
image (seed 004 reshaped a 64-d vector into 28×28).

Layer outputs are observed through :func:`shenjing.hooks.forward_hooks`, so no hook is
ever left on the model, also when forward raises.

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
>>> fm = feature_maps(net, torch.zeros(1, 6, 6), "1")
>>> fm.values.shape, fm.spatial
((4, 6, 6), True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from shenjing.errors import LayerNotFoundError, ShapeMismatchError, UsageError, did_you_mean
from shenjing.hooks import forward_hooks

Scale = Literal["shared", "channel", "global"]
Order = Literal["layer", "mean", "max"]
SCALES: tuple[str, ...] = ("shared", "channel", "global")
ORDERS: tuple[str, ...] = ("layer", "mean", "max")


@dataclass(frozen=True, repr=False)
class FeatureMaps:
    """One layer's output for one input sample.

    ``values`` is ``(channels, height, width)`` for conv-like layers or ``(features,)`` for
    vector layers; ``input`` is the sample itself, ``(channels, height, width)`` or
    ``(features,)``; ``index`` is its position in the split it came from.
    """

    layer: str
    values: np.ndarray
    epoch: int | None = None
    index: int | None = None
    label: Any = None
    input: np.ndarray | None = field(default=None)

    @property
    def spatial(self) -> bool:
        """True for channel maps ``(C, H, W)``, False for vectors ``(D,)``."""
        return self.values.ndim == 3

    @property
    def n_channels(self) -> int:
        """Channels of a spatial output, features of a vector."""
        return int(self.values.shape[0])

    def channel_means(self) -> np.ndarray:
        """Mean activation of each channel, ``(channels,)`` (the value itself for vectors)."""
        if not self.spatial:
            return self.values.astype(np.float64)
        return self.values.reshape(self.n_channels, -1).mean(axis=1).astype(np.float64)

    def dead(self, atol: float = 0.0) -> np.ndarray:
        """Boolean ``(channels,)``: channels with no positive value for this input."""
        return dead_channels(self.values, atol=atol)

    def __repr__(self) -> str:
        kind = "maps" if self.spatial else "vector"
        return (f"FeatureMaps(layer={self.layer!r}, {kind} {tuple(self.values.shape)}, "
                f"epoch={self.epoch}, index={self.index}, label={self.label!r})")


@dataclass(frozen=True, repr=False)
class MapChange:
    """How one layer's output for the same input changed between two epochs.

    ``per_channel`` is the mean absolute change of each channel, ``(channels,)``;
    ``top`` lists the channels that changed most, most first.
    """

    layer: str
    epochs: tuple[int | None, int | None]
    mean_abs_change: float
    relative_change: float
    per_channel: np.ndarray
    top: tuple[int, ...]
    mean_before: np.ndarray
    mean_after: np.ndarray

    def table(self) -> list[dict[str, float | int]]:
        """The top changed channels as rows: channel, change, mean before, mean after."""
        return [{"channel": int(c), "mean_abs_change": float(self.per_channel[c]),
                 "mean_before": float(self.mean_before[c]),
                 "mean_after": float(self.mean_after[c])} for c in self.top]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (what the maps stage writes next to its figure)."""
        return {"layer": self.layer, "epochs": list(self.epochs),
                "mean_abs_change": self.mean_abs_change,
                "relative_change": self.relative_change,
                "per_channel_change": self.per_channel.tolist(),
                "top_changed": self.table()}

    def __repr__(self) -> str:
        a, b = self.epochs
        return (f"MapChange(layer={self.layer!r}, epochs {a}→{b}, "
                f"mean_abs_change={self.mean_abs_change:.4g}, top={list(self.top[:5])})")


# ---- capturing -----------------------------------------------------------------------
def layer_names(model: nn.Module) -> list[str]:
    """Names of every submodule (what ``layer=`` accepts), in definition order."""
    return [name for name, _ in model.named_modules() if name]


def check_layer(model: nn.Module, layer: str) -> nn.Module:
    """The submodule called ``layer``, or a :class:`LayerNotFoundError` that suggests names."""
    modules = dict(model.named_modules())
    if layer and layer in modules:
        return modules[layer]
    names = layer_names(model)
    shown = ", ".join(names[:40]) + (" …" if len(names) > 40 else "")
    raise LayerNotFoundError(
        f"no layer {layer!r} in {type(model).__name__}.{did_you_mean(layer, names)} "
        f"Layers: {shown}. See `shenjing layers RUN`."
    )


def _first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for item in out:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def layer_output(model: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """Run ``model`` on the batch ``x`` and return ``layer``'s output (detached, on CPU).

    ``x`` is ``(batch, …)`` and is moved to the model's device. The model runs under
    ``torch.inference_mode()`` in whatever train/eval mode it is in (runs give eval models).
    """
    check_layer(model, layer)
    seen: dict[str, torch.Tensor] = {}

    def keep(_mod: nn.Module, _args: tuple[Any, ...], out: Any) -> None:
        tensor = _first_tensor(out)
        if tensor is not None and "out" not in seen:
            # copy now: a following ReLU(inplace=True) (VGG16 has them) would overwrite it
            seen["out"] = tensor.detach().to("cpu", copy=True)

    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    with forward_hooks(model, {layer: keep}), torch.inference_mode():
        model(x.to(device))
    if "out" not in seen:
        raise UsageError(f"layer {layer!r} did not run in {type(model).__name__}.forward, "
                         "so it has no output to show; choose a layer that forward uses")
    return seen["out"]


def feature_maps(model: nn.Module, x: torch.Tensor, layer: str, *, epoch: int | None = None,
                 index: int | None = None, label: Any = None) -> FeatureMaps:
    """``layer``'s output for one sample ``x`` (shaped like one input, without batch).

    Outputs shaped ``(1, C, H, W)`` become channel maps; ``(1, D)`` become vectors; other
    ranks are flattened to a vector (their layout is not an image).
    """
    if x.ndim == 0:
        raise ShapeMismatchError("feature_maps needs one input sample, got a scalar")
    out = layer_output(model, x.unsqueeze(0), layer)[0].float().numpy()
    if out.ndim not in (1, 3):
        out = out.reshape(-1)
    return FeatureMaps(layer=layer, values=np.ascontiguousarray(out), epoch=epoch,
                       index=index, label=label, input=x.detach().cpu().float().numpy())


def require_spatial(fm: FeatureMaps) -> None:
    """Refuse to draw a vector layer as a grid of images, and say what to do instead."""
    if not fm.spatial:
        raise ShapeMismatchError(
            f"layer {fm.layer!r} outputs a vector of {fm.n_channels} features, not channel "
            "maps (batch, channels, height, width); a grid would reshape it into a fake "
            "image. Show it as a vector instead: plot_feature_vector(...) or "
            "`shenjing maps RUN --view vector`; or pick a conv layer"
        )


# ---- ordering, selection, dead channels ----------------------------------------------
def channel_scores(values: np.ndarray, by: Order = "mean") -> np.ndarray:
    """Per-channel activity ``(channels,)``: mean or max over the map (the value for vectors)."""
    flat = values.reshape(values.shape[0], -1).astype(np.float64)
    if by == "mean" or by == "layer":
        return flat.mean(axis=1)
    if by == "max":
        return flat.max(axis=1)
    raise UsageError(f"order {by!r} is not one of {', '.join(ORDERS)}")


def channel_order(values: np.ndarray, order: Order = "layer") -> np.ndarray:
    """Channel indices in layer order, or by descending mean/max activation (stable ties)."""
    if order not in ORDERS:
        raise UsageError(f"order {order!r} is not one of {', '.join(ORDERS)}; "
                         "use 'layer' to keep the layer's own order")
    n = values.shape[0]
    if order == "layer":
        return np.arange(n)
    return np.argsort(-channel_scores(values, order), kind="stable")


def top_channels(values: np.ndarray, k: int, by: Order = "mean") -> np.ndarray:
    """Indices of the ``k`` most active channels, most active first."""
    if k < 1:
        raise UsageError(f"top-k must be at least 1, got {k}")
    return channel_order(values, "mean" if by == "layer" else by)[:k]


def select_channels(values: np.ndarray, *, order: Order = "layer",
                    top_k: int | None = None) -> np.ndarray:
    """The channels a figure shows: ``top_k`` most active (by ``order``, default mean),
    else all channels in ``order``."""
    if top_k is not None and top_k < values.shape[0]:
        return top_channels(values, top_k, by=order)
    return channel_order(values, order)


def dead_channels(values: np.ndarray, atol: float = 0.0) -> np.ndarray:
    """Boolean ``(channels,)``: channels whose maximum is ≤ ``atol`` for this input.

    After a ReLU such a channel is all zero: it says nothing about this input. On a
    pre-activation (conv) output it means the following ReLU will silence it.
    """
    flat = values.reshape(values.shape[0], -1)
    return flat.max(axis=1) <= atol


def grid_shape(n: int, max_aspect: float = 3.0) -> tuple[int, int]:
    """Rows × columns for ``n`` panels: 32 → (4, 8), 64 → (8, 8), 10 → (2, 5), 7 → (2, 4).

    Prefers an exact factorisation no wider than ``max_aspect`` times its height, and
    otherwise a near-square grid with a partly empty last row.
    """
    if n < 1:
        raise UsageError(f"a grid needs at least one panel, got {n}")
    rows = max(r for r in range(1, math.isqrt(n) + 1) if n % r == 0)
    cols = n // rows
    if cols <= max_aspect * rows:
        return rows, cols
    rows = math.isqrt(n)
    cols = math.ceil(n / rows)
    return rows, cols


# ---- colour scales -------------------------------------------------------------------
def normalise_maps(stack: np.ndarray, scale: Scale = "shared") -> tuple[np.ndarray,
                                                                         np.ndarray, np.ndarray]:
    """Map activations to ``[0, 1]`` for drawing; return ``(normed, lo, hi)``.

    ``stack`` is ``(panels, channels, …)`` (one panel per epoch/input). ``scale``:
    ``'shared'`` one range per panel over all its channels, ``'channel'`` one range per
    channel of each panel, ``'global'`` one range over every panel (shows magnitude change).
    ``lo`` and ``hi`` are ``(panels, channels)``: the value drawn as 0 and as 1. When the
    range holds negative values it is made symmetric, so 0.5 always means zero.
    """
    if scale not in SCALES:
        raise UsageError(f"scale {scale!r} is not one of {', '.join(SCALES)}")
    x = np.asarray(stack, dtype=np.float64)
    p, c = x.shape[:2]
    flat = x.reshape(p, c, -1)
    if scale == "channel":
        lo, hi = flat.min(axis=2), flat.max(axis=2)
    elif scale == "shared":
        lo = np.repeat(flat.min(axis=(1, 2))[:, None], c, axis=1)
        hi = np.repeat(flat.max(axis=(1, 2))[:, None], c, axis=1)
    else:
        lo, hi = np.full((p, c), flat.min()), np.full((p, c), flat.max())
    signed = lo < 0
    bound = np.maximum(np.abs(lo), np.abs(hi))
    lo = np.where(signed, -bound, lo)
    hi = np.where(signed, bound, hi)
    span = hi - lo
    safe = np.where(span > 0, span, 1.0)
    normed = (flat - lo[..., None]) / safe[..., None]
    normed = np.where((span > 0)[..., None], normed, np.where(signed, 0.5, 0.0)[..., None])
    return normed.reshape(x.shape), lo, hi


# ---- change between epochs -------------------------------------------------------------
def compare_feature_maps(before: FeatureMaps, after: FeatureMaps, top: int = 10) -> MapChange:
    """Mean absolute change of ``layer``'s output between two epochs for the same input.

    ``relative_change`` is ``mean|after − before| / mean|before|`` (inf when before is 0).
    """
    if before.values.shape != after.values.shape:
        raise ShapeMismatchError(
            f"cannot compare maps shaped {before.values.shape} and {after.values.shape}; "
            "compare the same layer of the same architecture"
        )
    a = before.values.astype(np.float64)
    b = after.values.astype(np.float64)
    diff = np.abs(b - a)
    per_channel = diff.reshape(diff.shape[0], -1).mean(axis=1)
    base = float(np.abs(a).mean())
    mean_abs = float(diff.mean())
    order = np.argsort(-per_channel, kind="stable")[:max(0, top)]
    return MapChange(
        layer=after.layer, epochs=(before.epoch, after.epoch), mean_abs_change=mean_abs,
        relative_change=mean_abs / base if base > 0 else float("inf"),
        per_channel=per_channel, top=tuple(int(i) for i in order),
        mean_before=before.channel_means(), mean_after=after.channel_means(),
    )


def stack_values(maps: Sequence[FeatureMaps]) -> np.ndarray:
    """Stack several FeatureMaps of one layer into ``(panels, channels, …)``."""
    shapes = {m.values.shape for m in maps}
    if len(shapes) != 1:
        raise ShapeMismatchError(f"feature maps of different shapes {sorted(shapes)} cannot "
                                 "share one figure; pass maps of one layer")
    return np.stack([m.values for m in maps])
