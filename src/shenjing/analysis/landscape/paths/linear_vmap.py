"""The ``linear-vmap`` path: the first layer by linearity (:mod:`.first_layer`), then the rest
of the model batched over the chunk's points with ``vmap`` (pays when the rest is small, e.g.
an MLP's head on a GPU).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch

from shenjing.analysis.landscape.kernels import differentiable_kernels
from shenjing.analysis.landscape.paths.base import Sums
from shenjing.analysis.landscape.paths.first_layer import FirstLayerPath
from shenjing.analysis.landscape.paths.vmap import functional_scorer


class LinearVmapPath(FirstLayerPath):
    """Combined first-layer outputs, then the rest of the model vmapped over points."""

    name = "linear-vmap"

    def _kernels(self) -> contextlib.AbstractContextManager[None]:
        # as on the vmap path: attention must run on kernels vmap can batch
        return differentiable_kernels(self.net, self.device)

    def _sums(self, c: torch.Tensor, callback: Callable[[int], None] | None) -> Sums:
        layer = self.first_module
        losses = np.zeros(len(c))
        correct = np.zeros(len(c))
        batches = self._batches()
        cache = self._first_cache(batches)
        current: list[torch.Tensor] = []
        score = functional_scorer(self)

        def one(flat: torch.Tensor, combo: torch.Tensor, xb: torch.Tensor,
                yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            current[:] = [combo]
            return score(flat, xb, yb)

        batched = torch.vmap(one, in_dims=(0, 0, None, None))
        chunk = self._chunk()
        if cache is not None:
            # bound the batched activations: ~4 tensors like the first layer's output
            per_point = 4 * cache[0][0].numel() * cache[0][0].element_size()
            chunk = max(1, min(chunk, (256 * 2**20) // max(per_point, 1)))
        layer.forward = lambda *a, **k: current[0]  # our private copy only
        try:
            for start in range(0, len(c), chunk):
                cc = c[start:start + chunk]
                flats = torch.addmm(self.center[None, :], cc, self.directions)
                for bi, (xb, yb) in enumerate(batches):
                    base, stacked = self._first_for(cache, bi, xb)
                    combos = base[None] + torch.tensordot(cc, stacked, dims=1)
                    lo, co = batched(flats, combos, xb, yb)
                    losses[start:start + len(cc)] += lo.double().cpu().numpy()
                    correct[start:start + len(cc)] += co.double().cpu().numpy()
                if callback:
                    callback(len(cc))
        finally:
            del layer.forward
        return losses, correct
