"""The ``linear`` path: the first layer's outputs combined per point, the rest of the model
run as usual (see :mod:`.first_layer`). Exact up to float rounding; pays when the first
layer dominates the cost (MLPs, a wide first convolution).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from shenjing.analysis.landscape.paths.base import Sums
from shenjing.analysis.landscape.paths.first_layer import FirstLayerPath


class LinearPath(FirstLayerPath):
    """Per point: combine the cached first-layer outputs, run the rest of the model."""

    name = "linear"

    def _sums(self, c: torch.Tensor, callback: Callable[[int], None] | None) -> Sums:
        layer = self.first_module
        losses = np.zeros(len(c))
        correct = np.zeros(len(c))
        batches = self._batches()
        chunk = self._chunk()
        current: list[torch.Tensor] = []
        cache = self._first_cache(batches)
        layer.forward = lambda *a, **k: current[0]  # our private copy only
        try:
            for start in range(0, len(c), chunk):
                cc = c[start:start + chunk]
                for bi, (xb, yb) in enumerate(batches):
                    base, stacked = self._first_for(cache, bi, xb)
                    base_row = base.reshape(1, -1)
                    stacked_rows = stacked.reshape(stacked.shape[0], -1)
                    for j in range(len(cc)):
                        self._set_point(cc[j])
                        # base + Σ aₖ·outₖ as one fused matrix product
                        combo = torch.addmm(base_row, cc[j][None], stacked_rows)
                        current[:] = [combo.view_as(base)]
                        lo, co = self._score(self.forward(xb), yb)
                        losses[start + j] += lo
                        correct[start + j] += co
                if callback:
                    callback(len(cc))
        finally:
            del layer.forward
        return losses, correct
