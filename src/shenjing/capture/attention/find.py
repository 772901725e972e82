"""Finding a model's attention layers: one observed forward pass, then names and shapes.

:func:`find_attention_layers` is the public face; :func:`probe` is the same step inside a
capture (on the capture's own observer), and :func:`select` turns a ``layers=`` choice into
layers, with the errors that name what the model does have.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from shenjing.capture.attention.observer import Observer, Seen
from shenjing.capture.attention.result import AttentionLayer
from shenjing.capture.batches import to_device
from shenjing.capture.core import device_for, shape_of
from shenjing.capture.keys import output_key
from shenjing.errors import (
    LayerNotFoundError,
    NotApplicableError,
    ShapeMismatchError,
    UsageError,
    did_you_mean,
)

#: what each kind of attention is, for messages
SUPPORTED = ("'sdpa' (calls of F.scaled_dot_product_attention), 'multihead' "
             "(nn.MultiheadAttention, also inside nn.TransformerEncoderLayer and its fused "
             "fast path) and 'softmax' (a softmax over the last axis whose output is the "
             "left operand of a matmul, as vit-pytorch's Attention computes it)")


@dataclass(frozen=True)
class Found:
    """The attention layers one forward showed, and the ``(module, call)`` each came from."""

    layers: tuple[AttentionLayer, ...]
    sources: tuple[tuple[str, int], ...]
    dtypes: tuple[torch.dtype, ...]


def probe(observer: Observer, x: Any) -> Found:
    """Run one forward of ``x`` through ``observer`` and name every attention it saw."""
    seen: list[Seen] = []
    sink, wants = observer.sink, observer.wants
    observer.sink, observer.wants = seen.append, lambda _m, _c: True
    try:
        observer.forward(x)
    finally:
        observer.sink, observer.wants = sink, wants
    n_calls = Counter(s.module for s in seen)
    layers = []
    for s in seen:
        _, heads, queries, keys = s.pattern.shape
        layers.append(AttentionLayer(
            name=str(output_key(s.module, s.call, n_calls[s.module], ())), kind=s.kind,
            module_type=s.module_type, heads=int(heads), tokens=int(queries), keys=int(keys),
            dim=int(s.tokens.shape[-1]) if s.tokens is not None else None))
    return Found(tuple(layers), tuple((s.module, s.call) for s in seen),
                 tuple(s.dtype for s in seen))


def find_attention_layers(model: nn.Module, example: Any) -> list[AttentionLayer]:
    """Every attention layer of ``model``, from one forward pass of ``example`` (a small
    batch); ``[]`` when the model computes no attention.

    The model runs in eval mode (its training flag is restored) without gradients; all
    hooks, wrappers and the function mode are removed afterwards, also when forward raises.

    >>> from shenjing.models import build_model
    >>> [str(layer) for layer in find_attention_layers(
    ...     build_model("vit", (1, 8, 8), 10, depth=1), torch.zeros(2, 1, 8, 8))]
    ['blocks.0.attn (SelfAttention, sdpa): 4 heads × 17×17']
    """
    x = to_device(example, device_for(model, None), False)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), Observer(model).observing() as observer:
            return list(probe(observer, x).layers)
    finally:
        model.train(was_training)


def module_inventory(model: nn.Module) -> str:
    """``'Linear ×3, ReLU ×2'``: the model's module types with counts, in order of first
    appearance (the model itself left out)."""
    counts = Counter(type(m).__name__ for name, m in model.named_modules() if name)
    if not counts:
        return "no submodules"
    return ", ".join(f"{kind} ×{n}" for kind, n in counts.items())


def no_attention(model: nn.Module, x: Any) -> NotApplicableError:
    """The error for a model that computed no attention on ``x``."""
    return NotApplicableError(
        f"{type(model).__name__} has no attention layer: none ran on an input of shape "
        f"{shape_of(x)}. The model has {module_inventory(model)}. The attention capture "
        f"supports {SUPPORTED}")


def select(model: nn.Module, found: Found, layers: Sequence[str] | None) -> list[int]:
    """The positions in ``found`` of the chosen layers (all for None), all of one shape."""
    names = [layer.name for layer in found.layers]
    if layers is None:
        chosen = list(range(len(names)))
    else:
        if isinstance(layers, str):
            layers = [layers]
        if not layers:
            raise UsageError("layers=[] chooses no attention layer; pass None for all of "
                             f"them, or some of: {', '.join(names)}")
        chosen = []
        for name in layers:
            if name not in names:
                raise LayerNotFoundError(
                    f"{name!r} is not an attention layer of {type(model).__name__}."
                    f"{did_you_mean(name, names)} Its attention layers: {', '.join(names)}; "
                    f"give one or more of them, e.g. {names[0]!r}")
            if names.index(name) not in chosen:
                chosen.append(names.index(name))
    shapes = {found.layers[i].shape for i in chosen}
    if len(shapes) > 1:
        first = found.layers[chosen[0]].shape
        same = [names[i] for i in chosen if found.layers[i].shape == first]
        listing = ", ".join(f"{names[i]} {found.layers[i].shape}" for i in chosen)
        raise ShapeMismatchError(
            "the attention layers differ in (heads, queries, keys): "
            f"{listing}; their patterns are stacked into one array, so choose layers of one "
            f"shape, e.g. layers={same!r}")
    return chosen
