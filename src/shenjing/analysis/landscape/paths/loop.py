"""The ``loop`` path: each point is one fused in-place update of the flat parameter buffer,
then the samples go through the model in batches.

The reference path, and the only one that can re-estimate BatchNorm statistics at every
point (``bn='recompute'``) or run under ``torch.compile``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from shenjing.analysis.landscape.paths.base import EvaluationPath, Sums


class LoopPath(EvaluationPath):
    """One point at a time through the model's own forward pass."""

    name = "loop"
    stores_nhwc = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.config.compile:
            # static shapes: with automatic dynamic shapes the kernels would depend on the
            # batch sizes this process saw before, and a resumed grid would differ in bits
            self.forward = torch.compile(self.net, dynamic=False)

    def _sums(self, c: torch.Tensor, callback: Callable[[int], None] | None) -> Sums:
        losses = np.zeros(len(c))
        correct = np.zeros(len(c))
        batches = self._batches()
        for i in range(len(c)):
            self._set_point(c[i])
            if self.config.bn == "recompute":
                with torch.no_grad():
                    self._recompute_bn()
            for xb, yb in batches:
                lo, co = self._score(self.forward(xb), yb)
                losses[i] += lo
                correct[i] += co
            if callback:
                callback(1)
        return losses, correct

    def _recompute_bn(self) -> None:
        """Re-estimate every BatchNorm's statistics at the current point from ``bn_data``."""
        bns = [m for m in self.net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not bns or self.bn_data is None:
            return
        saved = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
            m.train()
        bs = max(1, int(self.config.batch_size or 1))
        for i in range(0, self.bn_data.shape[0], bs):
            self.net(self.bn_data[i:i + bs])
        for m, mom in zip(bns, saved, strict=True):
            m.momentum = mom
            m.eval()
