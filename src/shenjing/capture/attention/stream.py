"""``capture_attention``: the patterns of every chosen layer for every sample, streamed.

The phases: probe the first two samples (:func:`~shenjing.capture.attention.find.probe`:
which layers, which shapes), choose the layers, report the :class:`AttentionPlan`, check
the bytes against the memory (or disk) allowed, allocate once (an array, or a
``.npy`` memory map under a temporary name), then run the batches, each pattern written
into its place as soon as the model computed it (at most one layer's pattern of one
batch exists beside the array), and finally rename the file into place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shenjing import _io
from shenjing.capture.activations import format_bytes
from shenjing.capture.attention.find import Found, no_attention, probe, select
from shenjing.capture.attention.observer import Observer, Seen
from shenjing.capture.attention.result import AttentionCapture, AttentionLayer, AttentionPlan
from shenjing.capture.batches import Batch, batches_of, to_device
from shenjing.capture.core import device_for
from shenjing.capture.dataset import memory_budget
from shenjing.errors import ResourceError, ShapeMismatchError, UsageError

_STORAGE: dict[str, np.dtype[Any]] = {"float32": np.dtype(np.float32),
                                       "float16": np.dtype(np.float16)}
#: the check's relative tolerance by the dtype the model computed attention in
_TOLERANCE = {torch.float64: 1e-5, torch.float32: 1e-5, torch.float16: 5e-3,
              torch.bfloat16: 3e-2}
#: bytes of float32 work per stored pattern value while one is recomputed (scores, the
#: pattern, the check's product), for the streaming memory check
_WORK_BYTES = 12


def capture_attention(
    model: nn.Module,
    x: Any,
    *,
    layers: Sequence[str] | None = None,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    dtype: str = "float32",
    out: str | os.PathLike[str] | None = None,
    on_plan: Callable[[AttentionPlan], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    max_memory: int | None = None,
    grad: bool = False,
) -> AttentionCapture:
    """Per-head attention patterns ``(samples, layers, heads, queries, keys)`` of ``x``.

    ``x``: a tensor of inputs, an ``(x, y)`` pair, a :class:`shenjing.data.Split` (labels
    kept) or a DataLoader with a dataset of known length. ``layers``: names from
    :func:`find_attention_layers` (default all; they must share one pattern shape).
    ``dtype``: ``"float32"`` or ``"float16"`` storage. ``out``: a ``.npy`` path to stream
    the patterns to (a temporary file renamed at the end; the result holds it as a
    read-only memory map) instead of memory. ``on_plan`` receives the
    :class:`AttentionPlan` (shape and bytes) before anything is allocated or refused;
    ``progress(done, total)`` is called after each batch; nothing is printed. Memory is
    checked first: more than ``max_memory`` (default half the available RAM) is refused
    with a :class:`~shenjing.errors.ResourceError` naming what reduces it.

    The model runs in eval mode (its flag restored), without gradients unless ``grad``
    (torch's transformer layers take their fused fast path without them; both paths are
    captured). Its outputs are bit-identical to a forward without the capture. Every
    pattern is checked: pattern @ V must reproduce the layer's real output (see
    :attr:`AttentionCapture.passed`).

    >>> from shenjing.models import build_model
    >>> model = build_model("vit", (1, 8, 8), 10, depth=2)
    >>> att = capture_attention(model, torch.rand(5, 1, 8, 8), batch_size=2)
    >>> att.patterns.shape, att.passed
    ((5, 2, 4, 17, 17), True)
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch_size must be a whole number ≥ 1, got {batch_size!r}")
    if dtype not in _STORAGE:
        raise UsageError(f"dtype {dtype!r} is not supported for attention patterns; use "
                         f"{' or '.join(map(repr, _STORAGE))}, e.g. dtype='float16'")
    out_path = _out_path(out)
    dev = device_for(model, device)
    if device is not None:
        model.to(dev)
    batches, n_total = batches_of(x, batch_size)
    if n_total is None:
        raise UsageError("the data has no length (an iterable dataset); pass a tensor, an "
                         "(x, y) pair or a Split, so the capture knows how many samples "
                         "to allocate")
    if n_total == 0:
        raise UsageError("the data holds no samples")

    was_training = model.training
    model.eval()
    store: _Store | None = None
    try:
        grad_mode = torch.enable_grad() if grad else torch.no_grad()
        with grad_mode:
            it = iter(batches)
            first = next(it)
            with Observer(model).observing() as observer:
                found = probe(observer, _head(to_device(first.x, dev, False), 2))
            if not found.layers:
                raise no_attention(model, first.x)
            chosen = select(model, found, layers)
            plan = _plan(found, chosen, n_total, _STORAGE[dtype], out_path)
            if on_plan is not None:
                on_plan(plan)
            _check_memory(plan, batch_size, max_memory)
            store = _Store(plan, found, chosen, first.y is not None)
            focus = {module for module, _ in found.sources}
            observer = Observer(model, store.write, store.wants, focus=focus)
            with observer.observing():
                for batch in chain([first], it):
                    if store.done >= n_total:
                        break
                    store.begin(batch)
                    observer.forward(to_device(batch.x, dev, False))
                    store.end()
                    if progress is not None:
                        progress(store.done, n_total)
            result = store.finish(found, chosen)
            store = None
            return result
    finally:
        if store is not None:
            store.abort()
        model.train(was_training)


def _out_path(out: str | os.PathLike[str] | None) -> Path | None:
    if out is None:
        return None
    path = Path(out)
    if path.suffix != ".npy":
        raise UsageError(f"out={str(out)!r}: the patterns stream into a .npy file; give a "
                         f"path ending in .npy, e.g. out={str(path.with_suffix('.npy'))!r}")
    if path.is_dir():
        raise UsageError(f"out={str(out)!r} is a folder; give the path of a .npy file in it, "
                         f"e.g. out={str(path / 'attention.npy')!r}")
    return path


def _head(x: Any, k: int) -> Any:
    """The first ``k`` samples of a model input (a tensor, or tensors in a tuple or dict)."""
    if isinstance(x, torch.Tensor):
        return x[:k]
    if isinstance(x, (tuple, list)):
        return type(x)(_head(v, k) for v in x)
    if isinstance(x, Mapping):
        return {key: _head(v, k) for key, v in x.items()}
    return x


def token_dim(layers: Sequence[AttentionLayer]) -> int | None:
    """The width of the token features when every layer has them, all of one width."""
    dims = {layer.dim for layer in layers}
    dim = dims.pop() if len(dims) == 1 else None
    return dim


def _plan(found: Found, chosen: list[int], n: int, storage: np.dtype[Any],
          out: Path | None) -> AttentionPlan:
    layers = [found.layers[i] for i in chosen]
    heads, queries, keys = layers[0].shape
    shape = (n, len(layers), heads, queries, keys)
    pattern_bytes = int(np.prod(shape)) * storage.itemsize
    dim = token_dim(layers)
    token_bytes = 2 * n * len(layers) * dim * storage.itemsize if dim is not None else 0
    return AttentionPlan(shape=shape, dtype=str(storage), nbytes=pattern_bytes + token_bytes,
                         pattern_bytes=pattern_bytes,
                         layers=tuple(layer.name for layer in layers), out=out)


def _check_memory(plan: AttentionPlan, batch_size: int, max_memory: int | None) -> None:
    """Refuse a capture whose arrays (in memory) or file (on disk) would not fit."""
    n, n_layers, heads, queries, keys = plan.shape
    per_sample = f"{n_layers} layers × {heads} heads × {queries}×{keys} {plan.dtype}"
    hints = []
    if plan.dtype == "float32":
        hints.append("dtype='float16' halves it")
    if n_layers > 1:
        hints.append("layers=[...] keeps fewer layers")
    hints.append("capture fewer samples")
    budget = memory_budget(max_memory)
    work = min(batch_size, n) * heads * queries * keys * _WORK_BYTES
    if plan.out is None:
        need = plan.nbytes + work
        if need > budget:
            raise ResourceError(
                f"capturing the attention of {n} samples needs {format_bytes(need)} ({need} "
                f"bytes: {per_sample} per sample, token features and one batch's work) but "
                f"only {format_bytes(budget)} of memory is allowed (half the available "
                "memory, or max_memory=); pass out='attention.npy' to stream the patterns "
                f"to a file, or reduce it: {'; '.join(hints)}")
        return
    ram = plan.nbytes - plan.pattern_bytes + work
    if ram > budget:
        fits = max(1, (budget - (plan.nbytes - plan.pattern_bytes))
                   // max(1, heads * queries * keys * _WORK_BYTES))
        raise ResourceError(
            f"streaming the attention of {n} samples needs {format_bytes(ram)} of memory "
            f"for the token features and one batch's work, but only {format_bytes(budget)} "
            f"is allowed; reduce batch_size, e.g. batch_size={fits}")
    existing = next((p for p in (plan.out, *plan.out.parents) if p.exists()), Path("."))
    free = shutil.disk_usage(existing if existing.is_dir() else existing.parent).free
    if plan.pattern_bytes > free:
        raise ResourceError(
            f"capturing the attention of {n} samples needs {format_bytes(plan.pattern_bytes)} "
            f"on disk ({per_sample} per sample) but {plan.out.parent} has "
            f"{format_bytes(free)} free; reduce it: {'; '.join(hints)}")


class _Store:
    """The arrays a capture fills: patterns (memory or memory map), token features,
    labels, and each layer's check; :meth:`write` is the observer's sink."""

    def __init__(self, plan: AttentionPlan, found: Found, chosen: list[int],
                 labelled: bool) -> None:
        self.plan = plan
        n, n_layers = plan.shape[:2]
        self.storage = np.dtype(plan.dtype)
        self.index = {found.sources[i]: j for j, i in enumerate(chosen)}
        self.names = [found.layers[i].name for i in chosen]
        self.tmp: Path | None = None
        if plan.out is None:
            self.patterns: np.ndarray = np.empty(plan.shape, dtype=self.storage)
        else:
            self.tmp = _io.make_temp(plan.out)
            with _io.translated_errors(plan.out):
                self.patterns = np.lib.format.open_memmap(
                    self.tmp, mode="w+", dtype=self.storage, shape=plan.shape)
        dim = token_dim([found.layers[i] for i in chosen])
        self.cls = np.empty((n, n_layers, dim), dtype=self.storage) if dim else None
        self.mean = np.empty((n, n_layers, dim), dtype=self.storage) if dim else None
        self.labels: np.ndarray | None = None
        self.labelled = labelled
        self.error = np.zeros(n_layers)
        self.scale = np.ones(n_layers)
        self.dtypes = [found.dtypes[i] for i in chosen]
        self.done = self.stop = 0
        self.seen = np.zeros(n_layers, dtype=np.int64)
        self._batch: Batch | None = None

    def wants(self, module: str, call: int) -> bool:
        return (module, call) in self.index

    def begin(self, batch: Batch) -> None:
        """A batch starts: its first samples fill the rows after those done."""
        self._batch = batch
        self.seen[:] = 0

    def write(self, seen: Seen) -> None:
        """Put one layer's pattern (and token features) of the running batch in place."""
        j = self.index[(seen.module, seen.call)]
        name = self.names[j]
        n, _, heads, queries, keys = self.plan.shape
        if tuple(seen.pattern.shape[1:]) != (heads, queries, keys):
            raise ShapeMismatchError(
                f"attention layer {name!r} gave patterns of (heads, queries, keys) "
                f"{tuple(seen.pattern.shape[1:])} in a later batch but "
                f"{(heads, queries, keys)} in the first; the capture needs one shape for "
                "all samples (pad the inputs to one length)")
        take = min(seen.pattern.shape[0], n - self.done)
        start, self.stop = self.done, self.done + take
        torch_storage = torch.float16 if self.storage == np.float16 else torch.float32
        self.patterns[start:self.stop, j] = _numpy(seen.pattern[:take], torch_storage)
        if self.cls is not None and self.mean is not None:
            if seen.tokens is None:
                raise ShapeMismatchError(
                    f"attention layer {name!r} had no (batch, tokens, dim) input in a later "
                    "batch, though it had in the first")
            states = seen.tokens[:take].detach()
            self.cls[start:self.stop, j] = _numpy(states[:, 0], torch_storage)
            rest = states[:, 1:] if states.shape[1] > 1 else states
            self.mean[start:self.stop, j] = _numpy(rest.float().mean(dim=1), torch_storage)
        self.error[j] = _worse(self.error[j], seen.error)
        self.scale[j] = max(self.scale[j], seen.scale)
        self.seen[j] += 1

    def end(self) -> None:
        """The batch finished: every chosen layer must have been seen exactly once."""
        for j, count in enumerate(self.seen):
            if count != 1:
                raise UsageError(
                    f"attention layer {self.names[j]!r} ran {count}× in a later batch but "
                    "once in the first; the capture needs the same attention calls in every "
                    "batch")
        batch, take = self._batch, self.stop - self.done
        if self.labelled and batch is not None and batch.y is not None:
            y = torch.as_tensor(batch.y)[:take].numpy()
            if self.labels is None:
                self.labels = np.empty((self.plan.shape[0], *y.shape[1:]), dtype=y.dtype)
            self.labels[self.done:self.stop] = y
        self.done = self.stop

    def finish(self, found: Found, chosen: list[int]) -> AttentionCapture:
        """The result; with a file, flushed and renamed into place first."""
        patterns = self.patterns
        path = self.plan.out
        if path is not None and self.tmp is not None:
            with _io.translated_errors(path):
                flush = getattr(patterns, "flush", None)
                if flush is not None:
                    flush()
                del patterns, self.patterns
                with open(self.tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
                os.replace(self.tmp, path)
            self.tmp = None
            patterns = np.load(path, mmap_mode="r")
        layers: tuple[AttentionLayer, ...] = tuple(found.layers[i] for i in chosen)
        tolerance = max(_TOLERANCE.get(d, 3e-2) for d in self.dtypes)
        return AttentionCapture(
            layers=layers, patterns=patterns, cls_tokens=self.cls, mean_tokens=self.mean,
            check_error={name: float(e) for name, e in zip(self.names, self.error,
                                                            strict=True)},
            tolerance=tolerance,
            check_scale={name: float(s) for name, s in zip(self.names, self.scale,
                                                            strict=True)},
            labels=self.labels, path=path)

    def abort(self) -> None:
        """Remove the temporary file of a capture that did not finish."""
        if self.tmp is not None:
            with contextlib.suppress(AttributeError):
                del self.patterns
            with contextlib.suppress(OSError):
                self.tmp.unlink()
            self.tmp = None


def _numpy(t: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    return t.detach().to(device="cpu", dtype=dtype).numpy()


def _worse(old: float, new: float) -> float:
    """The larger error, NaN winning (a NaN error is a failed check)."""
    if np.isnan(old) or np.isnan(new):
        return float("nan")
    return max(old, new)
