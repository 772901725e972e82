"""The ``chain`` path: a plain MLP evaluated for a chunk of points at once.

The first layer by linearity (:mod:`.first_layer`), then the rest of a traced chain of
Linear and elementwise layers as batched matrix products in feature-major layout
(:mod:`shenjing.analysis.landscape.chain`). The fast path for MLPs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from shenjing.analysis.landscape.chain import ChainRunner, Step, trace_chain
from shenjing.analysis.landscape.paths.base import Batch, Sums
from shenjing.analysis.landscape.paths.first_layer import (
    FirstLayer,
    FirstLayerPath,
    find_first_layer,
    refuse,
)
from shenjing.hooks import forward_pre_hooks


def chain_steps(net: nn.Module, first: FirstLayer, loss: str, x: torch.Tensor,
                y: torch.Tensor) -> tuple[list[Step] | None, str]:
    """The chain path's steps for ``net`` (None and why when it does not apply)."""
    if first.kind != "linear":
        return None, f"the first layer {first.name!r} is a convolution"
    if loss in ("cross_entropy", "nll") and (y.ndim != 1 or y.is_floating_point()):
        return None, "the targets are not class indices"
    seen: list[int] = []
    with forward_pre_hooks(net, {first.name: lambda mod, args: seen.append(args[0].ndim)}), \
            torch.inference_mode():
        net(x[:1])
    if seen != [2]:
        return None, "the first layer's input is not (samples, features)"
    return trace_chain(net, first.name, loss)


def _feature_major(base: torch.Tensor, stacked: torch.Tensor) -> torch.Tensor:
    """θ*'s and the directions' first-layer outputs as one ``(k+1, features, samples)``."""
    return torch.cat([base[None], stacked]).transpose(1, 2).contiguous()


class ChainPath(FirstLayerPath):
    """Chunks of points at once through a Linear chain."""

    name = "chain"

    @classmethod
    def applies(cls, model: nn.Module, batch: Batch) -> str | None:
        first, why = find_first_layer(model, batch.x)
        if first is None:
            return why
        steps, why = chain_steps(model, first, batch.loss, batch.x, batch.y)
        return None if steps is not None else why

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        steps, why = chain_steps(self.net, self.first, self.loss, self.x, self.y)
        if steps is None:
            raise refuse(self.name, why, "'linear', 'loop' or 'auto'")
        self._chain = ChainRunner(steps, self.center, self.directions, self.y,
                                  loss=self.loss, classification=self.classification)
        self._chain_cache: list[torch.Tensor] | None = None

    def _sums(self, c: torch.Tensor, callback: Callable[[int], None] | None) -> Sums:
        losses = np.zeros(len(c))
        correct = np.zeros(len(c))
        batches = self._batches()
        if self._chain_cache is None:
            cache = self._first_cache(batches)
            if cache is not None:
                self._chain_cache = [_feature_major(b, s) for b, s in cache]
                self._cache = None  # the feature-major copy replaces it

        def firsts() -> Iterator[torch.Tensor]:
            if self._chain_cache is not None:
                yield from self._chain_cache
                return
            for xb, _ in batches:
                base, outs = self._first_outputs(xb)
                yield _feature_major(base, torch.stack(outs))

        chunk = self._chunk()
        for start in range(0, len(c), chunk):
            cc = c[start:start + chunk]
            lo, co = self._chain.score(cc, firsts())
            losses[start:start + len(cc)] = lo.double().cpu().numpy()
            correct[start:start + len(cc)] = co.double().cpu().numpy()
            if callback:
                callback(len(cc))
        return losses, correct
