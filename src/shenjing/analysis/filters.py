"""Filters: a layer's weights as the small images or signals the layer matches its input
against.

Pure computation (no plotting). The views:

- the first conv layer's kernels ``(out, in, kh, kw)``: RGB colour images when ``in == 3``,
  otherwise one grey kernel per input channel;
- deeper conv kernels as the ``out × in`` matrix of ``kh × kw`` kernels, capped;
- Conv1d kernels ``(out, in, k)`` as 1-D signals (:func:`kernel_signals`): out × in small
  line plots, capped and ordered by how much each filter changed since a reference epoch;
- a first linear layer ``(k, D)`` that reads the whole input: each unit's ``D`` weights
  reshaped to the input's shape — "what each hidden unit looks at" (28×28 for MNIST).

Other layers have no kernels to draw — an LSTM, a LayerNorm, attention, an Embedding, a
hidden Linear, a Conv3d: :func:`layer_filters` and :func:`unit_images` raise
:class:`~shenjing.errors.NotApplicableError` saying so, which stages record as ``skipped``.

Weights are read from a ``state_dict`` (what ``Run.state_dict(epoch)`` returns), so no model
needs to run (and no user code is imported).

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

from shenjing.errors import (
    LayerNotFoundError,
    NotApplicableError,
    ShapeMismatchError,
    UsageError,
    did_you_mean,
)

FilterScale = Literal["shared", "filter"]
WHAT_FILTERS_ARE = ("filters are drawn for Conv1d/Conv2d kernels and for a first Linear "
                    "layer that reads the whole input")
#: module types whose weight has a kernel-like shape but is not a filter of the input
_NOT_KERNELS = {"Embedding", "EmbeddingBag", "Bilinear", "ConvTranspose1d", "ConvTranspose2d",
                "ConvTranspose3d", "LazyConvTranspose1d", "LazyConvTranspose2d"}


@dataclass(frozen=True, repr=False)
class Filters:
    """The weight of one layer: ``(out, in, kh, kw)`` for conv, ``(out, in, k)`` for Conv1d,
    ``(out, in)`` for linear."""

    layer: str
    weight: np.ndarray
    epoch: int | None = None

    @property
    def kind(self) -> str:
        """``'conv'`` for 4-D weights, ``'conv1d'`` for 3-D, ``'linear'`` for 2-D."""
        return {4: "conv", 3: "conv1d"}.get(self.weight.ndim, "linear")

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


def conv_layers(state: Mapping[str, Any],
                module_types: Mapping[str, str] | None = None) -> list[str]:
    """Layers whose weight is a conv kernel, 4-D ``(out, in, kh, kw)`` or 3-D ``(out, in,
    k)`` (Conv2d, Conv1d), in order; ``module_types`` (name → type) drops look-alikes."""
    types = module_types or {}
    return [k[: -len(".weight")] for k, v in state.items()
            if k.endswith(".weight") and getattr(v, "ndim", 0) in (3, 4)
            and types.get(k[: -len(".weight")]) not in _NOT_KERNELS]


def first_conv_layer(state: Mapping[str, Any],
                     module_types: Mapping[str, str] | None = None) -> str:
    """The first conv layer of a state dict (``features.0`` for VGG16, ``conv1`` for ours)."""
    convs = conv_layers(state, module_types)
    if not convs:
        raise UsageError("the model has no conv layer (no 3-D or 4-D weight); name a linear "
                         "layer with --layer to see its units as images, e.g. --layer fc1")
    return convs[0]


def _article(word: str) -> str:
    """``an`` before a vowel sound: ``an Embedding``, ``an LSTM``, ``a GRU``, ``a ReLU``."""
    acronym = word[:2].isupper()
    return "an" if word[:1].upper() in ("AEFHILMNORSX" if acronym else "AEIOU") else "a"


def _guess_kind(params: Mapping[str, Any]) -> str:
    """What a layer is, guessed from its parameter names and shapes (no model at hand)."""
    names = set(params)
    if any(n.startswith(("weight_ih_l", "weight_hh_l")) for n in names):
        return "a recurrent layer (RNN/LSTM/GRU: weight_ih_l0, weight_hh_l0 …)"
    if "in_proj_weight" in names or "q_proj_weight" in names:
        return "an attention layer (in_proj_weight)"
    weight = params.get("weight")
    if weight is not None and getattr(weight, "ndim", 0) == 1:
        return (f"a layer with a per-channel weight shaped {tuple(weight.shape)} (a "
                "normalisation layer or scale)")
    if weight is not None:
        return f"a layer with a weight shaped {tuple(weight.shape)}"
    shown = ", ".join(sorted(names)[:4]) + (" …" if len(names) > 4 else "")
    return f"a layer whose parameters ({shown}) hold no kernel"


def not_applicable_reason(state: Mapping[str, Any], layer: str,
                          module_type: str | None = None) -> str | None:
    """Why ``layer`` has no filters to draw, or None when it has a kernel weight.

    ``module_type`` (e.g. from the run's ``layers.json``) names the layer in the reason
    (``'lstm' is an LSTM``); without it the reason is guessed from the parameter names.
    A layer absent from ``state`` with no ``module_type`` is not judged here (None).
    """
    prefix = f"{layer}."
    params = {k[len(prefix):]: v for k, v in state.items()
              if k.startswith(prefix) and "." not in k[len(prefix):]}
    weight = params.get("weight")
    kernel = (weight is not None and getattr(weight, "ndim", 0) in (2, 3, 4)
              and module_type not in _NOT_KERNELS)
    if kernel:
        return None
    if module_type:
        what = f"{_article(module_type)} {module_type}"
        if not params:
            children = [k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)]
            what += (" (a container: name one of its layers, e.g. "
                     f"{layer}.{children[0]})" if children else " and has no weights")
        elif weight is not None:
            what += f" (weight shaped {tuple(weight.shape)})"
    elif params:
        what = _guess_kind(params)
    else:
        return None
    return f"filters: {layer!r} is {what}; {WHAT_FILTERS_ARE}"


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().to("cpu").float().numpy()
    return np.asarray(value, dtype=np.float32)


def layer_filters(state: Mapping[str, Any], layer: str, *, epoch: int | None = None,
                  module_type: str | None = None) -> Filters:
    """The weight of ``layer`` from a state dict, checked to be a kernel.

    A layer without a kernel (an LSTM, a norm layer, attention, a Conv3d) raises
    :class:`~shenjing.errors.NotApplicableError` with the reason; a name that is no layer
    with parameters raises :class:`~shenjing.errors.LayerNotFoundError`.
    """
    reason = not_applicable_reason(state, layer, module_type)
    if reason is not None:
        raise NotApplicableError(reason)
    check_weight_layer(state, layer)
    return Filters(layer=layer, weight=_as_numpy(state[f"{layer}.weight"]), epoch=epoch)


def check_weight_layer(state: Mapping[str, Any], layer: str) -> None:
    """Refuse a name with no ``.weight`` in ``state``, suggesting the layers that have one."""
    if f"{layer}.weight" not in state:
        names = weight_layers(state)
        raise LayerNotFoundError(
            f"no weights for layer {layer!r}.{did_you_mean(layer, names)} "
            f"Layers with weights: {', '.join(names) or 'none'}."
        )


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
        raise NotApplicableError(
            f"filters: layer {filters.layer!r} takes {filters.n_in} features, which is not the "
            f"whole image input {tuple(input_shape)} (a hidden or per-step layer); "
            f"{WHAT_FILTERS_ARE} (e.g. fc1 of the mlp on 28×28 MNIST)"
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
    change = reference_change(before, after)
    a = before.weight.astype(np.float64)
    b = after.weight.astype(np.float64)
    order = np.argsort(-change, kind="stable")[:top]
    total = float(np.linalg.norm(b - a) / max(np.linalg.norm(a), 1e-300))
    return {"layer": after.layer, "epochs": [before.epoch, after.epoch],
            "relative_change": total, "per_filter_change": change.tolist(),
            "top_changed": [{"filter": int(i), "relative_change": float(change[i])}
                            for i in order]}


def reference_change(before: Filters, after: Filters) -> np.ndarray:
    """Relative change ``‖w_after − w_before‖ / ‖w_before‖`` of each output filter,
    ``(out,)`` (inf where the reference filter is zero and the filter moved, 0 if not)."""
    if before.weight.shape != after.weight.shape:
        raise ShapeMismatchError(f"weights shaped {before.weight.shape} and "
                                 f"{after.weight.shape} cannot be compared")
    a = before.weight.reshape(before.n_out, -1).astype(np.float64)
    b = after.weight.reshape(after.n_out, -1).astype(np.float64)
    moved = np.linalg.norm(b - a, axis=1)
    norm_a = np.linalg.norm(a, axis=1)
    return np.where(norm_a > 0, moved / np.where(norm_a > 0, norm_a, 1.0),
                    np.where(moved > 0, np.inf, 0.0))


@dataclass(frozen=True, repr=False)
class KernelSignals:
    """Capped Conv1d kernels as signals: ``weights`` ``(rows, cols, k)`` for output
    channels ``outs`` (rows, most changed first) and input channels ``ins`` (columns, index
    order); ``reference`` the same kernels at the reference epoch (or None) and ``change``
    each shown filter's relative change since then ``(rows,)`` (or None). ``bound`` is
    ``max|w|`` over everything shown (one y range for all plots)."""

    layer: str
    weights: np.ndarray
    outs: tuple[int, ...]
    ins: tuple[int, ...]
    bound: float
    shape: tuple[int, ...]
    epoch: int | None = None
    reference: np.ndarray | None = None
    reference_epoch: int | None = None
    change: np.ndarray | None = None

    def __repr__(self) -> str:
        return (f"KernelSignals(layer={self.layer!r}, {len(self.outs)}×{len(self.ins)} of "
                f"{self.shape}, epoch={self.epoch}, reference={self.reference_epoch})")


def kernel_signals(filters: Filters, reference: Filters | None = None, *, max_out: int = 16,
                   max_in: int = 8) -> KernelSignals:
    """A Conv1d layer's kernels ``(out, in, k)``, capped at ``max_out × max_in``.

    With a ``reference`` (the same layer at an earlier epoch, e.g. the untrained net) the
    output filters kept are the ``max_out`` that changed most since it, most changed first;
    without, those with the largest kernel norms, largest first. Input channels: the
    ``max_in`` with the largest summed kernel norms, in index order.
    """
    if filters.kind != "conv1d":
        raise ShapeMismatchError(f"layer {filters.layer!r} has a weight shaped "
                                 f"{filters.weight.shape}; kernel signals need a Conv1d weight "
                                 "(out, in, k)")
    if max_out < 1 or max_in < 1:
        raise UsageError(f"max_out and max_in must be ≥ 1, got {max_out} and {max_in}")
    w = filters.weight.astype(np.float64)
    norms = np.sqrt((w ** 2).sum(axis=2))                           # (out, in)
    change_all = reference_change(reference, filters) if reference is not None else None
    score = change_all if change_all is not None else norms.sum(axis=1)
    outs = np.argsort(-score, kind="stable")[:max_out]
    ins = np.sort(np.argsort(-norms.sum(axis=0), kind="stable")[:max_in])
    shown = w[np.ix_(outs, ins)]
    ref = (reference.weight.astype(np.float64)[np.ix_(outs, ins)]
           if reference is not None else None)
    bound = float(max(np.abs(shown).max(), np.abs(ref).max() if ref is not None else 0.0))
    return KernelSignals(
        layer=filters.layer, weights=shown, outs=tuple(map(int, outs)),
        ins=tuple(map(int, ins)), bound=bound, shape=tuple(w.shape), epoch=filters.epoch,
        reference=ref, reference_epoch=reference.epoch if reference is not None else None,
        change=change_all[outs] if change_all is not None else None)


def filters_to_follow(history: Sequence[Filters], max_filters: int) -> np.ndarray:
    """The output filters an across-epochs view shows: all when there are at most
    ``max_filters``, else the ``max_filters`` that changed most from the first to the last
    epoch, most changed first."""
    if max_filters < 1:
        raise UsageError(f"max_filters must be ≥ 1, got {max_filters}")
    n = history[0].n_out
    if n <= max_filters:
        return np.arange(n)
    change = reference_change(history[0], history[-1])
    return np.argsort(-change, kind="stable")[:max_filters]
