"""The linearity of the first parametric layer, shared by the ``linear``, ``linear-vmap`` and
``chain`` paths.

A layer's output is linear in its own weights, so for the first parametric layer
f(x; W*+Σaₖδₖ) = f(x; W*) + Σ aₖ·f(x; δₖ) (bias alike). When nothing with parameters runs
before it, its input is the same at every grid point: those k+1 outputs are computed once
per batch (and kept, when they fit), and each point only combines them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shenjing.analysis.landscape.paths.base import Batch, EvaluationPath
from shenjing.errors import UsageError
from shenjing.hooks import forward_pre_hooks


class _StopForward(Exception):  # noqa: N818 (a signal, not an error)
    """Raised by a pre-hook to stop a forward pass once the wanted input is captured."""


@dataclass(frozen=True)
class FirstLayer:
    """The first parametric module of a forward pass: its name and ``linear``/``conv``."""

    name: str
    kind: str  # "linear" | "conv"


def find_first_layer(model: nn.Module, x: torch.Tensor) -> tuple[FirstLayer | None, str]:
    """The first parametric module run by ``model(x)`` if the linearity trick applies to it.

    It applies when that module is an ``nn.Linear`` or ``nn.Conv1d/2d/3d``, is called
    exactly once per forward, and nothing with parameters runs before it (so its input is
    the same at every grid point). Returns ``(layer, reason)``; layer is None if not.
    """
    order: list[str] = []
    calls: dict[str, int] = {}

    def count(name: str) -> Any:
        def pre(mod: nn.Module, args: tuple[Any, ...]) -> None:
            calls[name] = calls.get(name, 0) + 1
            if any(True for _ in mod.parameters(recurse=False)):
                order.append(name)
        return pre

    with forward_pre_hooks(model, {name: count(name) for name, _ in model.named_modules()}), \
            torch.inference_mode():
        model(x[:2])
    if not order:
        return None, "no module with parameters ran"
    name = order[0]
    module = model.get_submodule(name) if name else model
    if isinstance(module, nn.Linear):
        kind = "linear"
    elif isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        kind = "conv"
    else:
        return None, f"first parametric module {name or 'model'!r} is a " \
                     f"{type(module).__name__}, not Linear/Conv"
    if calls.get(name, 0) != 1:
        return None, f"first layer {name!r} runs {calls.get(name, 0)} times per forward"
    return FirstLayer(name, kind), f"first layer {name!r} ({type(module).__name__})"


def refuse(path: str, why: str, instead: str = "'loop' or 'auto'") -> UsageError:
    """The error for a path forced on a model it does not apply to."""
    return UsageError(f"the {path} path does not apply to this model: {why}; "
                      f"use path={instead}")


class FirstLayerPath(EvaluationPath):
    """A path that combines the first layer's outputs instead of recomputing them."""

    cache_bytes: int = 512 * 2**20
    """First-layer outputs of all samples are kept when they take at most this much."""

    @classmethod
    def applies(cls, model: nn.Module, batch: Batch) -> str | None:
        first, why = find_first_layer(model, batch.x)
        return None if first is not None else why

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        first, why = find_first_layer(self.net, self.x)
        if first is None:
            raise refuse(self.name, why)
        self.first = first
        self.first_module = self.net.get_submodule(first.name)
        self._cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._cache_refused = False
        # the first layer's own weights never need writing: its output is combined
        slices = self.layout.slices()
        prefix = f"{first.name}." if first.name else ""
        skip = [(slices[name].start, slices[name].stop) for name in self.layout.names
                if name.startswith(prefix) and name[len(prefix):] in ("weight", "bias")]
        segments, pos = [], 0
        for s0, e0 in sorted(skip):
            if s0 > pos:
                segments.append((pos, s0))
            pos = max(pos, e0)
        if pos < self.layout.size:
            segments.append((pos, self.layout.size))
        self._segments = segments

    def _first_outputs(self, xb: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The first layer's output at θ* and at each direction alone (weights δₖ)."""
        layer = self.first_module
        captured: list[torch.Tensor] = []

        def grab(mod: nn.Module, args: tuple[Any, ...]) -> None:
            captured.append(args[0])
            raise _StopForward

        with forward_pre_hooks(self.net, {self.first.name: grab}), \
                contextlib.suppress(_StopForward):
            self.net(xb)
        xin = captured[0]
        self.flat.copy_(self.center)
        base = type(layer).forward(layer, xin)  # the class's forward: ours is overridden
        outs = []
        for weight, bias in self._first_directions():
            if self.first.kind == "linear":
                outs.append(F.linear(xin, weight, bias))
            else:
                outs.append(layer._conv_forward(xin, weight, bias))  # type: ignore[operator]
        return base, outs

    def _first_directions(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Each direction's part for the first layer: ``(weight, bias)`` shaped like them."""
        prefix = f"{self.first.name}." if self.first.name else ""
        has_bias = getattr(self.first_module, "bias", None) is not None
        res = []
        for d in self.directions:
            parts = self.layout.split(d)
            res.append((parts[prefix + "weight"], parts[prefix + "bias"] if has_bias else None))
        return res

    def _first_cache(self, batches: list[tuple[torch.Tensor, torch.Tensor]]
                     ) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """First-layer outputs (θ* and each direction) for every batch, computed once, if
        they fit in ``cache_bytes``; None means recompute them per chunk of points."""
        if self._cache is not None:
            return self._cache
        if self._cache_refused:
            return None
        xb = batches[0][0]
        base, outs = self._first_outputs(xb)
        per_sample = base[0].numel() * (1 + len(outs)) * base.element_size()
        if per_sample * self.n > self.cache_bytes:
            self._cache_refused = True
            return None
        cache = [(base, torch.stack(outs))]
        for xb, _ in batches[1:]:
            b, o = self._first_outputs(xb)
            cache.append((b, torch.stack(o)))
        self._cache = cache
        return cache

    def _first_for(self, cache: list[tuple[torch.Tensor, torch.Tensor]] | None, index: int,
                   xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``index``'s first-layer outputs ``(base, stacked (k, batch, ...))``."""
        if cache is not None:
            return cache[index]
        base, outs = self._first_outputs(xb)
        return base, torch.stack(outs)
