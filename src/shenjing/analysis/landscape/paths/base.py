"""What every evaluation path shares: a private copy of the model whose parameters are views
into one flat buffer, the samples in batches, and the loss/accuracy of one forward pass.

A path is a subclass that says whether it applies (:meth:`EvaluationPath.applies`) and
computes the summed loss and correct count at a set of points (``_sums``); the base turns
those into means under the config's threads and precision, so all paths return the same
kind of numbers in the same way.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from shenjing.analysis.landscape.config import (
    EngineConfig,
    intra_op_threads,
    reduced_precision,
    torch_dtype,
)
from shenjing.analysis.landscape.directions import ParamLayout
from shenjing.errors import UsageError
from shenjing.training.losses import loss_function

Sums = tuple[np.ndarray, np.ndarray]
"""Summed loss and correct count over all samples, one ``(n_points,)`` array each."""


@dataclass(frozen=True)
class Batch:
    """Samples a path is asked about: inputs, targets as stored, and the loss's name."""

    x: torch.Tensor
    y: torch.Tensor
    loss: str


class EvaluationPath:
    """Loss/accuracy at points ``center + coeffs @ directions`` over fixed samples, one way.

    ``center``: flat ``(n_params,)``; ``directions``: ``(k, n_params)``; ``x``/``y`` the
    samples (moved to the device once). ``config`` is a full config for this path (see
    :class:`~shenjing.analysis.landscape.engine.Evaluator`, which checks it first).
    """

    name: ClassVar[str]
    stores_nhwc: ClassVar[bool] = False
    """Whether 4-D weights are kept NHWC in the flat buffer when ``channels_last`` is on."""

    @classmethod
    def applies(cls, model: nn.Module, batch: Batch) -> str | None:
        """None if this path can evaluate ``model`` on ``batch``, else the reason it cannot."""
        return None

    def __init__(self, model: nn.Module, center: torch.Tensor, directions: torch.Tensor,
                 x: torch.Tensor, y: torch.Tensor, *, loss: str, classification: bool,
                 config: EngineConfig, bn_data: torch.Tensor | None = None) -> None:
        self.config = config
        self.device = torch.device(config.device)
        self.dtype = torch_dtype(config.dtype)
        self.classification = classification
        self.loss = loss
        self.loss_sum = loss_function(loss, "sum")
        self.n = int(x.shape[0])
        if self.n == 0:
            raise UsageError("no samples to evaluate the landscape on")
        net = copy.deepcopy(model).to(self.device, self.dtype).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        self.layout = ParamLayout.of(net)
        n_params = self.layout.size
        if center.numel() != n_params or directions.shape[-1] != n_params:
            raise UsageError(f"centre ({center.numel()}) / directions ({directions.shape[-1]}) "
                             f"do not match the model's {n_params} parameters")
        self.center = center.detach().to(self.device, self.dtype).reshape(-1)
        self.directions = directions.detach().to(self.device, self.dtype).reshape(
            -1, n_params)
        nhwc = self.stores_nhwc and bool(config.channels_last) and x.ndim == 4
        self.flat = self._bind_parameters(net, nhwc=nhwc)
        self.x = x.to(self.device, self.dtype)
        if config.channels_last and x.ndim == 4:
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.y = y.to(self.device)
        if not classification and self.y.is_floating_point():
            self.y = self.y.to(self.dtype)
        self.bn_data = None if bn_data is None else bn_data.to(self.device, self.dtype)
        self.net = net
        self.forward: Callable[[torch.Tensor], torch.Tensor] = net
        self._dirs_t = self.directions.T.contiguous()  # (n_params, k) for addmv
        self._segments = [(0, n_params)]

    def _bind_parameters(self, net: nn.Module, *, nhwc: bool) -> torch.Tensor:
        """Make the parameters views into one flat buffer (one fused update per point).

        With ``nhwc``, 4-D weights are stored NHWC in the buffer (centre and directions
        permuted alike once) so the convolutions see channels_last weights, as a model
        converted with ``.to(memory_format=...)`` would.
        """
        params = list(net.parameters())
        spans = list(self.layout.slices().values())
        if nhwc:
            self.center = self.center.clone()
            self.directions = self.directions.clone()
            for p, span in zip(params, spans, strict=True):
                if p.ndim == 4:
                    o, i, h, w = p.shape
                    for vec in (self.center[span], *self.directions[:, span]):
                        vec.copy_(vec.view(o, i, h, w).permute(0, 2, 3, 1).reshape(-1))
        flat = self.center.clone()
        for p, span in zip(params, spans, strict=True):
            if nhwc and p.ndim == 4:
                o, i, h, w = p.shape
                p.data = flat[span].view(o, h, w, i).permute(0, 3, 1, 2)
            else:
                p.data = flat[span].view_as(p)
        return flat

    # ---- what paths share -------------------------------------------------------------
    def _batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        bs = max(1, int(self.config.batch_size or 1))
        return [(self.x[i:i + bs], self.y[i:i + bs]) for i in range(0, self.n, bs)]

    def _set_point(self, coeff: torch.Tensor) -> None:
        # one fused update per contiguous segment of parameters that matter on this path
        for s, e in self._segments:
            torch.addmv(self.center[s:e], self._dirs_t[s:e], coeff, out=self.flat[s:e])

    def _score(self, out: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        out = out.float() if out.dtype in (torch.bfloat16, torch.float16) else out
        loss = float(self.loss_sum(out, y))
        correct = float((out.argmax(dim=-1) == y).sum()) if self.classification else math.nan
        return loss, correct

    def _chunk(self) -> int:
        return max(1, int(self.config.chunk or 1))

    def _kernels(self) -> contextlib.AbstractContextManager[None]:
        """Kernel settings this path needs around its work (none by default)."""
        return contextlib.nullcontext()

    # ---- the one public operation -----------------------------------------------------
    def evaluate(self, coeffs: np.ndarray | Sequence[Sequence[float]],
                 callback: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Mean loss and accuracy at each point: two ``(n_points,)`` float64 arrays.

        ``coeffs`` is ``(n_points, k)``. ``callback(n)`` is called after each ``n`` points.
        Non-finite losses are returned as they are (the caller records them).
        """
        coeffs_np = np.asarray(coeffs, dtype=np.float64).reshape(-1, self.directions.shape[0])
        c = torch.as_tensor(coeffs_np, dtype=self.dtype, device=self.device)
        with torch.inference_mode(), intra_op_threads(self.config.threads), \
                reduced_precision(self.config.precision, self.device), self._kernels():
            loss, correct = self._sums(c, callback)
        acc = correct / self.n if self.classification else np.full(len(loss), np.nan)
        return loss / self.n, acc

    def _sums(self, c: torch.Tensor, callback: Callable[[int], None] | None) -> Sums:
        """Summed loss and correct count at the points ``c`` ``(n_points, k)``."""
        raise NotImplementedError
