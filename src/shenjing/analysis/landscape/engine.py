"""The evaluation engine: loss (and accuracy) at many points θ* + Σ aₖ·dₖ, exactly and fast.

Three paths compute the same numbers:

``loop``
    One private copy of the model whose parameters are views into one flat buffer; each
    point is one fused in-place update of that buffer, then the samples go through in
    batches (batch size and ``channels_last`` chosen by measurement; ``torch.compile``
    optional). The reference path; the only one that can re-estimate BatchNorm statistics.
``linear``
    A layer's output is linear in its own weights, so for the first parametric layer
    f(x; W*+Σaₖδₖ) = f(x; W*) + Σ aₖ·f(x; δₖ) (bias alike). Those k+1 outputs are computed
    once per batch and chunk of points; each point then only combines them and runs the
    rest of the net. Exact up to float rounding; pays when the first layer dominates (MLPs).
``chain``
    For a plain MLP (a traced chain of Linear and elementwise layers): the linear trick for
    the first layer, then the rest evaluated for a chunk of points at once with batched
    matrix products in feature-major layout (:mod:`.chain`). The fast path for MLPs.
``vmap``
    ``torch.func.functional_call`` + ``torch.vmap`` over chunks of parameter sets: the GPU
    path (on CPU batched weights become grouped convolutions, usually slower). Attention
    runs on the math backend there (:mod:`.kernels`): the fused kernels cannot be batched.

:func:`choose_engine` times the candidates on the actual model, samples and device and
returns the fastest with the measurements, so a run records why a path was used. The
user's model is never touched: the engine works on a deep copy.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shenjing._device import resolve_device
from shenjing.analysis.landscape.chain import ChainRunner, trace_chain
from shenjing.analysis.landscape.kernels import differentiable_kernels
from shenjing.errors import UsageError
from shenjing.training.losses import loss_function

PATHS: tuple[str, ...] = ("loop", "linear", "linear-vmap", "chain", "vmap")
BN_POLICIES: tuple[str, ...] = ("eval", "recompute")
PRECISIONS: tuple[str, ...] = ("exact", "bf16", "tf32")
"""``exact``: compute in the chosen dtype. ``bf16``: the model's forward under
``torch.autocast(bfloat16)`` (CUDA, or CPUs with bf16 units). ``tf32``: TensorFloat-32
matrix products and convolutions (NVIDIA GPUs). The reduced modes trade exactness for speed;
:func:`~shenjing.analysis.landscape.core.evaluate_landscape` measures and records the error
they cause."""
REDUCED_PRECISION_PATHS: tuple[str, ...] = ("loop", "vmap")


class _StopForward(Exception):  # noqa: N818 (a signal, not an error)
    """Raised by a pre-hook to stop a forward pass once the wanted input is captured."""




@dataclass(frozen=True)
class EngineConfig:
    """How points are evaluated: path, sample batch size, memory layout, dtype, device."""

    path: str = "loop"
    batch_size: int = 256
    channels_last: bool = False
    compile: bool = False
    dtype: str = "float32"
    device: str = "cpu"
    chunk: int = 16
    bn: str = "eval"
    threads: int | None = None
    precision: str = "exact"
    measurements: dict[str, float] = field(default_factory=dict)
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _torch_dtype(name: str) -> torch.dtype:
    table = {"float32": torch.float32, "float64": torch.float64}
    if name not in table:
        raise UsageError(f"dtype must be float32 or float64, got {name!r}")
    return table[name]


@dataclass(frozen=True)
class _FirstLayer:
    name: str
    kind: str  # "linear" | "conv"


def find_first_layer(model: nn.Module, x: torch.Tensor) -> tuple[_FirstLayer | None, str]:
    """The first parametric module run by ``model(x)`` if the linearity trick applies to it.

    It applies when that module is an ``nn.Linear`` or ``nn.Conv1d/2d/3d``, is called
    exactly once per forward, and nothing with parameters runs before it (so its input is
    the same at every grid point). Returns ``(layer, reason)``; layer is None if not.
    """
    order: list[str] = []
    calls: dict[str, int] = {}
    handles = []
    names = {id(m): n for n, m in model.named_modules()}
    try:
        for module in model.modules():
            def pre(mod: nn.Module, args: Any) -> None:
                name = names[id(mod)]
                calls[name] = calls.get(name, 0) + 1
                if any(True for _ in mod.parameters(recurse=False)):
                    order.append(name)
            handles.append(module.register_forward_pre_hook(pre))
        with torch.inference_mode():
            model(x[:2])
    finally:
        for h in handles:
            h.remove()
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
    return _FirstLayer(name, kind), f"first layer {name!r} ({type(module).__name__})"


class Evaluator:
    """Evaluates loss/accuracy at points ``center + coeffs @ directions`` over fixed samples.

    ``center``: flat ``(n_params,)``; ``directions``: ``(k, n_params)``; ``x``/``y`` the
    samples (moved to the device once). ``loss`` is a name (``cross_entropy``, ``nll``,
    ``mse``). ``bn='recompute'`` re-estimates BatchNorm statistics at every point from
    ``bn_data`` (loop path only). Call :meth:`evaluate` with ``coeffs`` ``(n_points, k)``.
    """

    def __init__(self, model: nn.Module, center: torch.Tensor, directions: torch.Tensor,
                 x: torch.Tensor, y: torch.Tensor, *, loss: str, classification: bool,
                 config: EngineConfig, bn_data: torch.Tensor | None = None) -> None:
        if config.path not in PATHS:
            raise UsageError(f"unknown evaluation path {config.path!r}; choose one of "
                             f"{', '.join(PATHS)} or auto")
        validate_settings(path=config.path, bn=config.bn, dtype=config.dtype,
                          precision=config.precision, device=config.device,
                          batch_size=config.batch_size)
        if config.bn == "recompute" and bn_data is None:
            raise UsageError("bn='recompute' needs bn_data: training inputs to re-estimate "
                             "BatchNorm statistics from")
        self.config = config
        self.device = torch.device(config.device)
        self.dtype = _torch_dtype(config.dtype)
        self.classification = classification
        self.loss_sum = loss_function(loss, "sum")
        self.n = int(x.shape[0])
        if self.n == 0:
            raise UsageError("no samples to evaluate the landscape on")
        net = copy.deepcopy(model).to(self.device, self.dtype).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        n_params = sum(p.numel() for p in net.parameters())
        if center.numel() != n_params or directions.shape[-1] != n_params:
            raise UsageError(f"centre ({center.numel()}) / directions ({directions.shape[-1]}) "
                             f"do not match the model's {n_params} parameters")
        self.center = center.detach().to(self.device, self.dtype).reshape(-1)
        self.directions = directions.detach().to(self.device, self.dtype).reshape(
            -1, n_params)
        # parameters become views into one flat buffer: one fused update per point.
        # On the loop path with channels_last, 4-D weights are stored NHWC in the buffer
        # (centre and directions permuted alike once) so the convolutions see
        # channels_last weights, as a model converted with .to(memory_format=...) would.
        nhwc = config.channels_last and config.path == "loop" and x.ndim == 4
        if nhwc:
            self.center = self.center.clone()
            self.directions = self.directions.clone()
        offset = 0
        self._names = []
        layouts: list[tuple[nn.Parameter, int, int, tuple[int, int, int, int] | None]] = []
        for name, p in net.named_parameters():
            k = p.numel()
            if nhwc and p.ndim == 4:
                o, i, h, w = p.shape
                for vec in (self.center[offset:offset + k], *self.directions[:, offset:offset + k]):
                    vec.copy_(vec.view(o, i, h, w).permute(0, 2, 3, 1).reshape(-1))
                layouts.append((p, offset, k, (o, h, w, i)))
            else:
                layouts.append((p, offset, k, None))
            self._names.append(name)
            offset += k
        self.flat = self.center.clone()
        for p, off, k, nhwc_shape in layouts:
            seg = self.flat[off:off + k]
            p.data = seg.view(nhwc_shape).permute(0, 3, 1, 2) if nhwc_shape else seg.view_as(p)
        memory = torch.channels_last if config.channels_last and x.ndim == 4 else None
        self.x = x.to(self.device, self.dtype)
        if memory is not None:
            self.x = self.x.contiguous(memory_format=memory)
        self.y = y.to(self.device)
        if not classification and self.y.is_floating_point():
            self.y = self.y.to(self.dtype)
        self.bn_data = None if bn_data is None else bn_data.to(self.device, self.dtype)
        self.net = net
        self.forward: Callable[[torch.Tensor], torch.Tensor] = net
        if config.compile and config.path == "loop":
            # static shapes: with automatic dynamic shapes the kernels would depend on the
            # batch sizes this process saw before, and a resumed grid would differ in bits
            self.forward = torch.compile(net, dynamic=False)
        self._dirs_t = self.directions.T.contiguous()  # (n_params, k) for addmv
        self._segments = [(0, n_params)]
        self.first: _FirstLayer | None = None
        self.cache_bytes = 512 * 2**20
        self._cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._cache_refused = False
        self._chain: ChainRunner | None = None
        self._chain_cache: list[torch.Tensor] | None = None
        if config.path in ("linear", "linear-vmap", "chain"):
            first, why = find_first_layer(net, self.x)
            if first is None:
                raise UsageError(f"the {config.path} path does not apply to this model: "
                                 f"{why}; use path='loop' or 'auto'")
            self.first = first
            if config.path == "chain":
                steps, why = chain_steps(net, first, loss, self.x, self.y)
                if steps is None:
                    raise UsageError(f"the chain path does not apply to this model: {why}; "
                                     "use path='linear', 'loop' or 'auto'")
                self._chain = ChainRunner(steps, self.center, self.directions, self.y,
                                          loss=loss, classification=classification)
            # the first layer's own weights never need writing: its output is combined
            prefix = f"{first.name}." if first.name else ""
            skip, offset = [], 0
            for name, p in net.named_parameters():
                if name.startswith(prefix) and name[len(prefix):] in ("weight", "bias"):
                    skip.append((offset, offset + p.numel()))
                offset += p.numel()
            segments, pos = [], 0
            for s0, e0 in sorted(skip):
                if s0 > pos:
                    segments.append((pos, s0))
                pos = max(pos, e0)
            if pos < n_params:
                segments.append((pos, n_params))
            self._segments = segments

    # ---- helpers ----------------------------------------------------------------------
    def _batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        bs = max(1, int(self.config.batch_size))
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

    def _recompute_bn(self) -> None:
        bns = [m for m in self.net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not bns or self.bn_data is None:
            return
        saved = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
            m.train()
        bs = max(1, int(self.config.batch_size))
        for i in range(0, self.bn_data.shape[0], bs):
            self.net(self.bn_data[i:i + bs])
        for m, mom in zip(bns, saved, strict=True):
            m.momentum = mom
            m.eval()

    # ---- paths ------------------------------------------------------------------------
    def evaluate(self, coeffs: np.ndarray | Sequence[Sequence[float]],
                 callback: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Mean loss and accuracy at each point: two ``(n_points,)`` float64 arrays.

        ``coeffs`` is ``(n_points, k)``. ``callback(n)`` is called after each ``n`` points.
        Non-finite losses are returned as they are (the caller records them).
        """
        coeffs_np = np.asarray(coeffs, dtype=np.float64).reshape(-1, self.directions.shape[0])
        c = torch.as_tensor(coeffs_np, dtype=self.dtype, device=self.device)
        with torch.inference_mode(), _threads(self.config.threads), \
                _precision(self.config.precision, self.device):
            if self.config.path == "loop":
                out = self._loop(c, callback)
            elif self.config.path == "linear":
                out = self._linear(c, callback)
            elif self.config.path == "chain":
                out = self._chain_path(c, callback)
            else:
                # attention (fused kernels, the transformer fast path) has no vmap batching
                # rule: PyTorch would loop over the points one by one
                with differentiable_kernels(self.net, self.device):
                    out = (self._linear_vmap(c, callback) if self.config.path == "linear-vmap"
                           else self._vmap(c, callback))
        loss, correct = out
        acc = correct / self.n if self.classification else np.full(len(loss), np.nan)
        return loss / self.n, acc

    def _loop(self, c: torch.Tensor, callback: Callable[[int], None] | None
              ) -> tuple[np.ndarray, np.ndarray]:
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

    def _first_outputs(self, xb: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        assert self.first is not None
        layer = self.net.get_submodule(self.first.name)
        captured: list[torch.Tensor] = []

        def grab(mod: nn.Module, args: Any) -> None:
            captured.append(args[0])
            raise _StopForward

        handle = layer.register_forward_pre_hook(grab)
        try:
            self.net(xb)
        except _StopForward:
            pass
        finally:
            handle.remove()
        xin = captured[0]
        self.flat.copy_(self.center)
        base = type(layer).forward(layer, xin)  # the class's forward: ours is overridden
        split = self._split_first(layer)
        outs = []
        for weight, bias in split:
            if self.first.kind == "linear":
                outs.append(F.linear(xin, weight, bias))
            else:
                outs.append(layer._conv_forward(xin, weight, bias))  # type: ignore[operator]
        return base, outs

    def _split_first(self, layer: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        assert self.first is not None
        prefix = f"{self.first.name}." if self.first.name else ""
        offsets = {}
        offset = 0
        for name, p in self.net.named_parameters():
            offsets[name] = (offset, p.numel(), p.shape)
            offset += p.numel()
        res = []
        for d in self.directions:
            o, k, shape = offsets[prefix + "weight"]
            w = d[o:o + k].view(shape)
            b = None
            if getattr(layer, "bias", None) is not None:
                o, k, shape = offsets[prefix + "bias"]
                b = d[o:o + k].view(shape)
            res.append((w, b))
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

    def _linear(self, c: torch.Tensor, callback: Callable[[int], None] | None
                ) -> tuple[np.ndarray, np.ndarray]:
        assert self.first is not None
        layer = self.net.get_submodule(self.first.name)
        losses = np.zeros(len(c))
        correct = np.zeros(len(c))
        batches = self._batches()
        chunk = max(1, int(self.config.chunk))
        current: list[torch.Tensor] = []
        cache = self._first_cache(batches)
        layer.forward = lambda *a, **k: current[0]  # our private copy only
        try:
            for start in range(0, len(c), chunk):
                cc = c[start:start + chunk]
                for bi, (xb, yb) in enumerate(batches):
                    if cache is not None:
                        base, stacked = cache[bi]
                    else:
                        base, outs = self._first_outputs(xb)
                        stacked = torch.stack(outs)  # (k, batch, ...)
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

    def _feature_major(self, base: torch.Tensor, stacked: torch.Tensor) -> torch.Tensor:
        """θ*'s and the directions' first-layer outputs as one ``(k+1, features, samples)``."""
        return torch.cat([base[None], stacked]).transpose(1, 2).contiguous()

    def _chain_path(self, c: torch.Tensor, callback: Callable[[int], None] | None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Chunks of points at once through a Linear chain (see :mod:`.chain`)."""
        assert self._chain is not None
        losses = np.zeros(len(c))
        correct = np.zeros(len(c))
        batches = self._batches()
        if self._chain_cache is None:
            cache = self._first_cache(batches)
            if cache is not None:
                self._chain_cache = [self._feature_major(b, s) for b, s in cache]
                self._cache = None  # the feature-major copy replaces it
        def firsts() -> Iterator[torch.Tensor]:
            if self._chain_cache is not None:
                yield from self._chain_cache
                return
            for xb, _ in batches:
                base, outs = self._first_outputs(xb)
                yield self._feature_major(base, torch.stack(outs))

        chunk = max(1, int(self.config.chunk))
        for start in range(0, len(c), chunk):
            cc = c[start:start + chunk]
            lo, co = self._chain.score(cc, firsts())
            losses[start:start + len(cc)] = lo.double().cpu().numpy()
            correct[start:start + len(cc)] = co.double().cpu().numpy()
            if callback:
                callback(len(cc))
        return losses, correct

    def _functional_scorer(self) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor],
                                             tuple[torch.Tensor, torch.Tensor]]:
        """``score(flat_params, x, y) -> (summed loss, correct)``: the net evaluated at one
        flat parameter vector with ``functional_call``, ready for ``torch.vmap``."""
        from torch.func import functional_call

        names = self._names
        shapes = [p.shape for p in self.net.parameters()]
        sizes = [p.numel() for p in self.net.parameters()]
        buffers = dict(self.net.named_buffers())
        classification, loss_sum = self.classification, self.loss_sum

        def score(flat: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
            params = {n: t.view(s)
                      for n, t, s in zip(names, flat.split(sizes), shapes, strict=True)}
            out = functional_call(self.net, (params, buffers), (xb,))
            if out.dtype in (torch.bfloat16, torch.float16):  # autocast: score in float32
                out = out.float()
            lo = loss_sum(out, yb)
            co = (out.argmax(dim=-1) == yb).sum() if classification else lo * 0
            return lo, co

        return score

    def _linear_vmap(self, c: torch.Tensor, callback: Callable[[int], None] | None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Linear trick for the first layer, then the rest of the net batched over the
        chunk's points with ``vmap`` (pays when the rest is small, e.g. an MLP's head)."""
        assert self.first is not None
        layer = self.net.get_submodule(self.first.name)
        losses = np.zeros(len(c))
        correct = np.zeros(len(c))
        batches = self._batches()
        cache = self._first_cache(batches)
        current: list[torch.Tensor] = []
        score = self._functional_scorer()

        def one(flat: torch.Tensor, combo: torch.Tensor, xb: torch.Tensor,
                yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            current[:] = [combo]
            return score(flat, xb, yb)

        batched = torch.vmap(one, in_dims=(0, 0, None, None))
        chunk = max(1, int(self.config.chunk))
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
                    if cache is not None:
                        base, stacked = cache[bi]
                    else:
                        base, outs = self._first_outputs(xb)
                        stacked = torch.stack(outs)
                    combos = base[None] + torch.tensordot(cc, stacked, dims=1)
                    lo, co = batched(flats, combos, xb, yb)
                    losses[start:start + len(cc)] += lo.double().cpu().numpy()
                    correct[start:start + len(cc)] += co.double().cpu().numpy()
                if callback:
                    callback(len(cc))
        finally:
            del layer.forward
        return losses, correct

    def _vmap(self, c: torch.Tensor, callback: Callable[[int], None] | None
              ) -> tuple[np.ndarray, np.ndarray]:
        losses = np.zeros(len(c))
        correct = np.zeros(len(c))
        batches = self._batches()
        batched = torch.vmap(self._functional_scorer(), in_dims=(0, None, None))
        chunk = max(1, int(self.config.chunk))
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


def chain_steps(net: nn.Module, first: _FirstLayer, loss: str, x: torch.Tensor,
                y: torch.Tensor) -> tuple[list | None, str]:
    """The chain path's steps for ``net`` (None and why when it does not apply)."""
    if first.kind != "linear":
        return None, f"the first layer {first.name!r} is a convolution"
    if loss in ("cross_entropy", "nll") and (y.ndim != 1 or y.is_floating_point()):
        return None, "the targets are not class indices"
    seen: list[int] = []
    handle = net.get_submodule(first.name).register_forward_pre_hook(
        lambda mod, args: seen.append(args[0].ndim))
    try:
        with torch.inference_mode():
            net(x[:1])
    finally:
        handle.remove()
    if seen != [2]:
        return None, "the first layer's input is not (samples, features)"
    return trace_chain(net, first.name, loss)


def validate_settings(*, path: str = "auto", bn: str = "eval", dtype: str = "float32",
                      precision: str = "exact", device: str | torch.device = "auto",
                      batch_size: int | None = None) -> torch.device:
    """Refuse engine settings that cannot work together, before any work (cheap: no model).

    Returns the resolved device. The same checks guard :class:`Evaluator`, so a setting
    refused here is refused there with the same message.
    """
    if path not in (*PATHS, "auto"):
        raise UsageError(f"unknown evaluation path {path!r}; choose one of "
                         f"{', '.join(PATHS)} or auto")
    if bn not in BN_POLICIES:
        raise UsageError(f"bn policy must be one of {', '.join(BN_POLICIES)}, got {bn!r}")
    if bn == "recompute" and path not in ("loop", "auto"):
        raise UsageError("bn='recompute' needs the loop path (BatchNorm statistics are "
                         "re-estimated per point); use path='loop'")
    _torch_dtype(dtype)
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
        raise UsageError(f"batch size must be at least 1, got {batch_size}")
    dev = resolve_device(device)
    _check_precision(precision, "loop" if path == "auto" else path, dev, dtype)
    return dev


def _check_precision(precision: str, path: str, device: torch.device, dtype: str) -> None:
    if precision not in PRECISIONS:
        raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "exact":
        return
    if path not in REDUCED_PRECISION_PATHS:
        raise UsageError(f"precision {precision!r} runs the model's own forward pass: use "
                         f"path 'loop' or 'vmap' (the {path} path is exact algebra)")
    if dtype != "float32":
        raise UsageError(f"precision {precision!r} starts from float32; drop --dtype {dtype}")
    if precision == "tf32" and device.type != "cuda":
        raise UsageError("precision 'tf32' needs a CUDA device (TensorFloat-32 is an NVIDIA "
                         "GPU format); on this device use 'bf16' or 'exact'")


@contextlib.contextmanager
def _precision(mode: str, device: torch.device) -> Iterator[None]:
    """Reduced-precision arithmetic for the block: bf16 autocast, or TF32 on CUDA."""
    if mode == "bf16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    elif mode == "tf32":
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    else:
        yield


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op threads (CPU), restoring the previous count afterwards."""
    if not n or n == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _vmap_chunk(device: torch.device, n_params: int, n_samples: int, batch: int,
                activation_floats: int) -> int:
    """Grid points per vmap chunk: what fits in a quarter of free GPU memory (8 on CPU)."""
    if device.type != "cuda":
        return 8
    free, _ = torch.cuda.mem_get_info(device)
    per_point = 4 * (n_params + activation_floats * min(batch, n_samples))
    return int(max(1, min(256, (free // 4) // max(per_point, 1))))


def _widest(net: nn.Module) -> int:
    return max((m.out_features for m in net.modules() if isinstance(m, nn.Linear)), default=1)


def _chain_chunk(device: torch.device, net: nn.Module, n_samples: int) -> int:
    """Grid points per chunk on the chain path: 8 on CPU (measured best with one thread),
    on CUDA what fits in a quarter of free memory."""
    if device.type != "cuda":
        return 8
    free, _ = torch.cuda.mem_get_info(device)
    per_point = 4 * 4 * _widest(net) * min(n_samples, 8192)  # a few activations per point
    return int(max(1, min(1024, (free // 4) // per_point)))


def _chain_block(device: torch.device, net: nn.Module, n_samples: int, chunk: int,
                 dtype: torch.dtype) -> int:
    """Samples per block on the chain path. On CPU the chunk's widest activation should
    stay in a core's L2 cache (~1 MiB: 256 samples for 8 points × 128 units in float32,
    measured 20 % faster than all 2,000 at once); on CUDA all samples (up to 8,192)."""
    if device.type == "cuda":
        return min(n_samples, 8192)
    block = (2**20) // max(1, chunk * _widest(net) * dtype.itemsize)
    return int(min(n_samples, max(64, block)))


def choose_engine(model: nn.Module, center: torch.Tensor, directions: torch.Tensor,
                  x: torch.Tensor, y: torch.Tensor, *, loss: str, classification: bool,
                  device: str | torch.device = "auto", dtype: str = "float32",
                  path: str = "auto", batch_size: int | None = None,
                  channels_last: bool | None = None, compile: bool | None = None,
                  bn: str = "eval", n_points: int = 0, threads: int | None = None,
                  probe_points: int = 2, precision: str = "exact") -> EngineConfig:
    """Pick the fastest exact way to evaluate this model here, by timing the candidates.

    First the forward pass alone is timed for a few batch sizes (and ``channels_last`` for
    image inputs); then each applicable path is timed on ``probe_points`` grid points with
    the best of those. ``compile=None`` (auto) also times ``torch.compile`` on the CPU loop
    path when the grid would take long enough for compiling to pay
    (:data:`COMPILE_WORTH_S`). Anything passed explicitly is used as given. The returned
    config carries the measurements (ms per point) and the reason for the choice.
    """
    dev = validate_settings(path=path, bn=bn, dtype=dtype, precision=precision,
                            device=device, batch_size=batch_size)
    dt = _torch_dtype(dtype)
    n = int(x.shape[0])
    threads_given = threads is not None
    meas: dict[str, float] = {}
    net = copy.deepcopy(model).to(dev, dt).eval()
    xd = x.to(dev, dt)
    small = n_points and n_points <= 4
    if batch_size is None or (channels_last is None and x.ndim == 4):
        cands_bs = [batch_size] if batch_size else sorted({min(n, b) for b in (128, 512, n)})
        cands_cl = [channels_last] if channels_last is not None else (
            [False, True] if x.ndim == 4 else [False])
        # a shared CPU can make every multi-threaded op wait for a descheduled thread:
        # measure one thread against the current count
        cands_th: list[int | None] = [threads]
        if not threads and dev.type == "cpu":
            cands_th = list(sorted({torch.get_num_threads(), 1}))
        if small:
            cands_bs, cands_cl, cands_th = [min(n, 256)], [False], [threads]
        best = (math.inf, cands_bs[0], cands_cl[0], threads)
        with torch.inference_mode():
            for th in cands_th:
                for cl in cands_cl:
                    netc = net.to(memory_format=torch.channels_last) if cl else net  # type: ignore[call-overload]
                    # time on at most 1,024 samples: the ranking is what matters
                    xs = xd[:min(n, 1024)]
                    xc = xs.contiguous(memory_format=torch.channels_last) if cl else xs
                    m = len(xc)
                    for bs in cands_bs:
                        with _threads(th):
                            t = _time(lambda netc=netc, xc=xc, bs=bs, m=m:  # type: ignore[misc]
                                      [netc(xc[i:i + bs]) for i in range(0, m, bs)])
                        meas[f"forward bs={bs}{' channels_last' if cl else ''} "
                             f"threads={th}"] = t * 1e3
                        if t < best[0]:
                            best = (t, bs, cl, th)
        batch_size, channels_last, threads = best[1], best[2], best[3]
    channels_last = bool(channels_last)
    bs = int(batch_size)
    candidates = [path] if path != "auto" else ["loop"]
    first, _ = find_first_layer(net, xd)
    if path == "auto" and bn == "eval" and precision != "exact":
        candidates += ["vmap"] if dev.type == "cuda" else []  # the forward-pass paths
    elif path == "auto" and bn == "eval":
        if first is not None:
            candidates.append("linear")
            if chain_steps(net, first, loss, xd, y)[0] is not None:
                candidates.append("chain")
        if dev.type == "cuda":
            # batched weights are grouped convolutions on CPU: measured slower there
            candidates += ["vmap"] + (["linear-vmap"] if first is not None else [])
    act = int(np.prod(y.shape[1:])) if y.ndim > 1 else 1
    chunk_for = {"loop": 1, "linear": 32, "linear-vmap": 32,
                 "chain": _chain_chunk(dev, net, n),
                 "vmap": _vmap_chunk(dev, center.numel(), n, bs, 64 * max(act, 1))}
    compile_args: dict[str, Any] = dict(model=model, center=center, directions=directions, x=x, y=y,
                        loss=loss, classification=classification, n_points=n_points,
                        probe_points=probe_points)
    if len(candidates) == 1 or small:
        config = EngineConfig(path=candidates[0], batch_size=bs, channels_last=channels_last,
                              compile=bool(compile), dtype=dtype, device=str(dev),
                              threads=threads, chunk=chunk_for[candidates[0]], bn=bn,
                              precision=precision, measurements=meas,
                              reason="given" if path != "auto" else "only applicable path")
        if compile is None and not small:
            config = _compile_if_it_pays(config, None, **compile_args)
        return _pin_threads(config)
    timings: dict[tuple[str, int, int | None], float] = {}
    for cand in candidates:
        # the chain path evaluates a chunk of points at once: time it on one full chunk
        n_probe = max(probe_points, chunk_for[cand]) if cand == "chain" else probe_points
        probe = _probe_points(n_probe, directions.shape[0])
        # the linear path does little per sample once its first-layer outputs are cached:
        # one batch of everything may pay (tried for a Linear first layer, whose cache is
        # small; a conv's outputs would not fit)
        first_is_linear = first is not None and first.kind == "linear"
        sizes = [bs, n] if cand in ("linear", "linear-vmap") and first_is_linear \
            and bs < n <= 8192 else [bs]
        thread_counts: list[int | None] = [threads]
        if cand == "chain":
            sizes = [_chain_block(dev, net, n, chunk_for[cand], dt)]
            # its small batched products can lose more to a second thread than they gain
            # (measured 0.44 vs 0.16 ms/point on our 2 cores), whatever the forward preferred
            if dev.type == "cpu" and not threads_given and threads != 1:
                thread_counts.append(1)
        for b in sizes:
            for th in thread_counts:
                cfg = EngineConfig(path=cand, batch_size=b, channels_last=channels_last,
                                   compile=bool(compile), dtype=dtype, device=str(dev),
                                   threads=th, chunk=min(chunk_for[cand], n_probe), bn=bn,
                                   precision=precision)
                ev = Evaluator(model, center, directions, x, y, loss=loss,
                               classification=classification, config=cfg)
                ev.evaluate(probe[:1])  # warm-up (and the linear path's cache)
                t = _time(lambda ev=ev, probe=probe: ev.evaluate(probe),  # type: ignore[misc]
                          repeat=2) / n_probe
                timings[(cand, b, th)] = t
                label = f" threads={th}" if len(thread_counts) > 1 else ""
                meas[f"path {cand} bs={b}{label} (ms/point)"] = t * 1e3
    winner, wbs, wth = min(timings, key=lambda k: timings[k])
    reason = "fastest measured: " + ", ".join(
        f"{k} (batch {b}{f', {th} threads' if th != threads else ''}) {v * 1e3:.1f} ms/point"
        for (k, b, th), v in sorted(timings.items(), key=lambda kv: str(kv[0])))
    config = EngineConfig(path=winner, batch_size=wbs, channels_last=channels_last,
                          compile=bool(compile), dtype=dtype, device=str(dev),
                          chunk=chunk_for[winner], threads=wth, bn=bn,
                          precision=precision, measurements=meas, reason=reason)
    if compile is None:
        config = _compile_if_it_pays(config, timings[(winner, wbs, wth)], **compile_args)
    return _pin_threads(config)


def _pin_threads(config: EngineConfig) -> EngineConfig:
    """A CPU config names the thread count it runs with (None would mean "whatever the
    process has", and a resume in another process could then sum in another order)."""
    if config.threads is None and torch.device(config.device).type == "cpu":
        return replace(config, threads=torch.get_num_threads())
    return config


COMPILE_WORTH_S = 60.0
"""Eager seconds a grid must be expected to take before ``torch.compile`` is tried (compiling
a small CNN took 4–8 s on our 2-core CPU and saved ~30 % per point)."""


def _compile_if_it_pays(config: EngineConfig, eager_s_per_point: float | None, *,
                        model: nn.Module, center: torch.Tensor, directions: torch.Tensor,
                        x: torch.Tensor, y: torch.Tensor, loss: str, classification: bool,
                        n_points: int, probe_points: int) -> EngineConfig:
    """``torch.compile`` is tried for the CPU loop path when the grid would take at least
    :data:`COMPILE_WORTH_S` eager seconds (the eager loop is timed here if it was not)."""
    if config.path != "loop" or config.compile or torch.device(config.device).type != "cpu" \
            or not n_points:
        return config
    probe = _probe_points(probe_points, directions.shape[0])
    if eager_s_per_point is None:
        ev = Evaluator(model, center, directions, x, y, loss=loss,
                       classification=classification, config=config)
        eager_s_per_point = _time(lambda: ev.evaluate(probe), repeat=1) / probe_points
    if eager_s_per_point * n_points < COMPILE_WORTH_S:
        return config
    return _try_compile(config, model, center, directions, x, y, loss=loss,
                        classification=classification, eager_s_per_point=eager_s_per_point,
                        probe_points=probe_points)


def _try_compile(config: EngineConfig, model: nn.Module, center: torch.Tensor,
                 directions: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *, loss: str,
                 classification: bool, eager_s_per_point: float,
                 probe_points: int) -> EngineConfig:
    """Time the loop path under ``torch.compile``; use it if it is faster per point.

    For image inputs both memory layouts are tried: compiled code can prefer another layout
    than eager (measured here at 2 threads: channels_last 84 ms vs 117 ms per 2,000 images
    compiled, while eager preferred NCHW). Compiling happens once per process and layout (a
    later copy of the same model reuses it), so warm-ups are recorded but not charged
    against the grid. A failure (no C++ compiler, an unsupported model) is recorded and the
    eager config kept.
    """
    meas = dict(config.measurements)
    probe = _probe_points(probe_points, directions.shape[0])
    layouts = [config.channels_last] + ([not config.channels_last] if x.ndim == 4 else [])
    best: tuple[float, bool] | None = None
    for channels_last in layouts:
        trial = replace(config, compile=True, channels_last=channels_last, measurements={})
        label = " channels_last" if channels_last else ""
        try:
            t0 = time.perf_counter()
            ev = Evaluator(model, center, directions, x, y, loss=loss,
                           classification=classification, config=trial)
            ev.evaluate(probe[:1])
            meas[f"torch.compile{label} warm-up (s)"] = time.perf_counter() - t0
            t = _time(lambda ev=ev: ev.evaluate(probe), repeat=2) / probe_points  # type: ignore[misc]
        except Exception as exc:  # compiling is an optimisation: never fatal here
            meas["torch.compile failed"] = math.nan
            return replace(config, measurements=meas,
                           reason=f"{config.reason}; torch.compile failed "
                                  f"({type(exc).__name__}), eager kept")
        meas[f"path loop + torch.compile{label} (ms/point)"] = t * 1e3
        if best is None or t < best[0]:
            best = (t, channels_last)
    assert best is not None
    t, channels_last = best
    note = (f"loop + torch.compile{' channels_last' if channels_last else ''} "
            f"{t * 1e3:.1f} ms/point")
    if t < eager_s_per_point:
        return replace(config, compile=True, channels_last=channels_last, measurements=meas,
                       reason=f"{config.reason}, {note} (chosen)")
    return replace(config, measurements=meas, reason=f"{config.reason}, {note} (not faster)")


def _probe_points(n: int, k: int) -> np.ndarray:
    """``n`` timing points with ``k`` coordinates spread over [-0.5, 0.5]."""
    return np.linspace(-0.5, 0.5, n * k).reshape(n, k)


def _time(fn: Callable[[], Any], repeat: int = 2) -> float:
    """Best wall time of ``repeat`` calls after one warm-up call (seconds)."""
    fn()
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
