"""The ``vmap`` path: ``torch.func.functional_call`` + ``torch.vmap`` over chunks of
parameter sets; the GPU path (on CPU batched weights become grouped convolutions, usually
slower). Attention runs on the math backend here (:mod:`..kernels`): the fused kernels
cannot be batched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch

from shenjing.analysis.landscape.kernels import differentiable_kernels
from shenjing.analysis.landscape.paths.base import EvaluationPath, Sums

Scorer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def functional_scorer(path: EvaluationPath) -> Scorer:
    """``score(flat_params, x, y) -> (summed loss, correct)``: ``path``'s model evaluated at
    one flat parameter vector with ``functional_call``, ready for ``torch.vmap``."""
    from torch.func import functional_call

    net, layout = path.net, path.layout
    buffers = dict(net.named_buffers())
    classification, loss_sum = path.classification, path.loss_sum

    def score(flat: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        out = functional_call(net, (layout.split(flat), buffers), (xb,))
        if out.dtype in (torch.bfloat16, torch.float16):  # autocast: score in float32
            out = out.float()
        lo = loss_sum(out, yb)
        co = (out.argmax(dim=-1) == yb).sum() if classification else lo * 0
        return lo, co

    return score


class VmapPath(EvaluationPath):
    """A chunk of points at once: the model's forward batched over parameter sets."""

    name = "vmap"

    def _kernels(self) -> contextlib.AbstractContextManager[None]:
        # attention (fused kernels, the transformer fast path) has no vmap batching rule:
        # PyTorch would loop over the points one by one
        return differentiable_kernels(self.net, self.device)

    def _sums(self, c: torch.Tensor, callback: Callable[[int], None] | None) -> Sums:
        losses = np.zeros(len(c))
        correct = np.zeros(len(c))
        batches = self._batches()
        batched = torch.vmap(functional_scorer(self), in_dims=(0, None, None))
        chunk = self._chunk()
        for start in range(0, len(c), chunk):
            cc = c[start:start + chunk]
            flats = self.center[None, :] + cc @ self.directions
            for xb, yb in batches:
                lo, co = batched(flats, xb, yb)
                losses[start:start + len(cc)] += lo.double().cpu().numpy()
                correct[start:start + len(cc)] += co.double().cpu().numpy()
            if callback:
                callback(len(cc))
        return losses, correct
