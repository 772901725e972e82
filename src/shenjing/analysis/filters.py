"""Filters: a layer's weights as the small images the layer matches its input against.

Pure computation (no plotting). Three views:

- the first conv layer's kernels ``(out, in, kh, kw)``: RGB colour images when ``in == 3``,
  otherwise one grey kernel per input channel;
- deeper conv kernels as the ``out × in`` matrix of ``kh × kw`` kernels, capped;
- a first linear layer ``(k, D)`` on image input: each unit's ``D`` weights reshaped to the
  input's shape — "what each hidden unit looks at" (28×28 for MNIST, 8×8 for digits).

Weights are read from a ``state_dict`` (what ``Run.state_dict(epoch)`` returns), so no model
needs to run.

>>> import torch
>>> f = layer_filters({"conv1.weight": torch.ones(4, 3, 3, 3)}, "conv1")
>>> f.weight.shape, f.kind
((4, 3, 3, 3), 'conv')
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from shenjing.errors import LayerNotFoundError, ShapeMismatchError, UsageError, did_you_mean

FilterScale = Literal["shared", "filter"]


@dataclass(frozen=True, repr=False)
class Filters:
    """The weight of one layer: ``(out, in, kh, kw)`` for conv, ``(out, in)`` for linear."""

    layer: str
    weight: np.ndarray
    epoch: int | None = None

    @property
    def kind(self) -> str:
        """``'conv'`` for 4-D weights, ``'linear'`` for 2-D weights."""
        return "conv" if self.weight.ndim == 4 else "linear"

    @property
    def n_out(self) -> int:
        return int(self.weight.shape[0])

    @property
    def n_in(self) -> int:
        return int(self.weight.shape[1])

    def __repr__(self) -> str:
        return (f"Filters(layer={self.layer!r}, {self.kind} {tuple(self.weight.shape)}, "
                f"epoch={self.epoch})")


def weight_layers(state: Mapping[str, Any]) -> list[str]:
    """Layers that have a ``weight`` in ``state`` (module names, in state order)."""
    return [k[: -len(".weight")] for k in state if k.endswith(".weight")]


def conv_layers(state: Mapping[str, Any]) -> list[str]:
    """Layers whose weight is 4-D ``(out, in, kh, kw)``: the conv layers, in order."""
    return [k[: -len(".weight")] for k, v in state.items()
            if k.endswith(".weight") and getattr(v, "ndim", 0) == 4]


def first_conv_layer(state: Mapping[str, Any]) -> str:
    """The first conv layer of a state dict (``features.0`` for VGG16, ``conv1`` for ours)."""
    convs = conv_layers(state)
    if not convs:
        raise UsageError("the model has no conv layer (no 4-D weight); name a linear layer "
                         "with --layer to see its units as images, e.g. --layer fc1")
    return convs[0]


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().to("cpu").float().numpy()
    return np.asarray(value, dtype=np.float32)


def layer_filters(state: Mapping[str, Any], layer: str, *, epoch: int | None = None) -> Filters:
    """The weight of ``layer`` from a state dict, checked to be conv- or linear-shaped."""
    key = f"{layer}.weight"
    if key not in state:
        names = weight_layers(state)
        raise LayerNotFoundError(
            f"no weights for layer {layer!r}.{did_you_mean(layer, names)} "
            f"Layers with weights: {', '.join(names) or 'none'}."
        )
    weight = _as_numpy(state[key])
    if weight.ndim not in (2, 4):
        raise ShapeMismatchError(
            f"layer {layer!r} has a weight shaped {tuple(weight.shape)}; filters are drawn for "
            "conv (out, in, kh, kw) and linear (out, in) weights only"
        )
    return Filters(layer=layer, weight=weight, epoch=epoch)


def _rescale(x: np.ndarray, axes: tuple[int, ...] | None) -> np.ndarray:
    """Symmetric rescale to [0, 1] around 0 (0.5 = zero weight) over ``axes``."""
    bound = np.abs(x).max(axis=axes, keepdims=True)
    bound = np.where(bound > 0, bound, 1.0)
    return 0.5 + 0.5 * x / bound


def normalise_filters(weight: np.ndarray, scale: FilterScale = "shared") -> np.ndarray:
    """Weights mapped to ``[0, 1]`` with 0.5 meaning zero.

    ``'shared'``: one bound ``max|w|`` over the whole layer (kernels comparable);
    ``'filter'``: one bound per output filter (each kernel's own contrast).
    """
    if scale not in ("shared", "filter"):
        raise UsageError(f"filter scale {scale!r} is not 'shared' or 'filter'")
    w = np.asarray(weight, dtype=np.float64)
    axes = None if scale == "shared" else tuple(range(1, w.ndim))
    return _rescale(w, axes)


def rgb_filters(weight: np.ndarray, scale: FilterScale = "filter") -> np.ndarray:
    """First-layer kernels ``(out, 3, kh, kw)`` as RGB images ``(out, kh, kw, 3)`` in [0, 1]."""
    if weight.ndim != 4 or weight.shape[1] != 3:
        raise ShapeMismatchError(f"RGB filters need weights shaped (out, 3, kh, kw), got "
                                 f"{tuple(weight.shape)}")
    return normalise_filters(weight, scale).transpose(0, 2, 3, 1)


@dataclass(frozen=True, repr=False)
class KernelGrid:
    """A capped ``out × in`` matrix of kernels: ``images`` is ``(rows, cols, kh, kw)`` in
    [0, 1] for output channels ``outs`` and input channels ``ins`` (shown in that order)."""

    layer: str
    images: np.ndarray
    outs: tuple[int, ...]
    ins: tuple[int, ...]
    bound: float
    shape: tuple[int, ...]


def kernel_grid(filters: Filters, *, max_out: int = 16, max_in: int = 16,
                by: Literal["norm", "index"] = "norm") -> KernelGrid:
    """The kernel matrix of a conv layer, capped at ``max_out × max_in``.

    With ``by='norm'`` the rows and columns kept are the output/input channels with the
    largest kernel norms (shown in index order); ``'index'`` keeps the first ones.
    One symmetric colour bound (``max|w|`` over the shown kernels) for all kernels.
    """
    if filters.kind != "conv":
        raise ShapeMismatchError(f"layer {filters.layer!r} is linear; a kernel grid needs a "
                                 "conv weight (out, in, kh, kw)")
    if max_out < 1 or max_in < 1:
        raise UsageError(f"max_out and max_in must be ≥ 1, got {max_out} and {max_in}")
    w = filters.weight.astype(np.float64)
    if by == "norm":
        norms = np.sqrt((w ** 2).sum(axis=(2, 3)))
        outs = np.sort(np.argsort(-norms.sum(axis=1), kind="stable")[:max_out])
        ins = np.sort(np.argsort(-norms.sum(axis=0), kind="stable")[:max_in])
    elif by == "index":
        outs = np.arange(min(max_out, w.shape[0]))
        ins = np.arange(min(max_in, w.shape[1]))
    else:
        raise UsageError(f"by={by!r} must be 'norm' or 'index'")
    sub = w[np.ix_(outs, ins)]
    bound = float(np.abs(sub).max())
    images = _rescale(sub, None)
    return KernelGrid(layer=filters.layer, images=images, outs=tuple(map(int, outs)),
                      ins=tuple(map(int, ins)), bound=bound, shape=tuple(w.shape))


def unit_images(filters: Filters, input_shape: Sequence[int], *, max_units: int | None = None,
                scale: FilterScale = "filter") -> np.ndarray:
    """A first linear layer's rows as images of the input: ``(units, H, W)`` (or RGB
    ``(units, H, W, 3)`` for 3-channel input), in [0, 1] with 0.5 = zero weight.

    ``input_shape`` is one sample's shape, e.g. ``(1, 28, 28)``; the layer's in-features
    must equal its size (a later layer's inputs are not an image).
    """
    if filters.kind != "linear":
        raise ShapeMismatchError(f"layer {filters.layer!r} is a conv layer; use its kernels "
                                 "(plot_filters) instead of unit images")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or math.prod(shape) != filters.n_in:
        raise ShapeMismatchError(
            f"layer {filters.layer!r} takes {filters.n_in} features, which is not an image "
            f"of shape {tuple(input_shape)}; unit images exist only for the first linear "
            "layer on image input (e.g. fc1 of the mlp on 28×28 MNIST)"
        )
    w = filters.weight[: max_units or filters.n_out].reshape(-1, *shape)
    normed = normalise_filters(w, scale)
    if shape[0] == 3:
        return normed.transpose(0, 2, 3, 1)
    if shape[0] != 1:
        return normed.mean(axis=1)
    return normed[:, 0]


def filter_change(before: Filters, after: Filters, top: int = 10) -> dict[str, Any]:
    """Relative change ``‖w_b − w_a‖ / ‖w_a‖`` of each output filter, and the top changed."""
    if before.weight.shape != after.weight.shape:
        raise ShapeMismatchError(f"weights shaped {before.weight.shape} and "
                                 f"{after.weight.shape} cannot be compared")
    a = before.weight.reshape(before.n_out, -1).astype(np.float64)
    b = after.weight.reshape(after.n_out, -1).astype(np.float64)
    norm_a = np.linalg.norm(a, axis=1)
    change = np.linalg.norm(b - a, axis=1) / np.where(norm_a > 0, norm_a, np.inf)
    order = np.argsort(-change, kind="stable")[:top]
    total = float(np.linalg.norm(b - a) / max(np.linalg.norm(a), 1e-300))
    return {"layer": after.layer, "epochs": [before.epoch, after.epoch],
            "relative_change": total, "per_filter_change": change.tolist(),
            "top_changed": [{"filter": int(i), "relative_change": float(change[i])}
                            for i in order]}
